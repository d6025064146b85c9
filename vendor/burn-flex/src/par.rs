//! hvq patch: element-wise loops on the thread pool.
//!
//! burn-flex ran its element-wise operations (binary, scalar, unary, broadcast) on one thread
//! below 4 M elements; a transformer's activations (`[8, 196, 512]`, 0.8 M) stayed single
//! threaded while PyTorch splits anything above 32 K elements across its threads (measured on a
//! 2-core VM: 0.22 ms against 0.11 ms for an 0.8 M-element add). These helpers split such loops
//! in chunks of whole elements across rayon's pool from [`MIN`] elements on; below that, or
//! without the `rayon` feature, they are the sequential loops they replace. Element order and
//! each element's arithmetic are unchanged, so results are identical.

/// Elements from which a loop is split across the thread pool.
#[cfg(feature = "rayon")]
pub(crate) const MIN: usize = 1 << 16;

/// Elements per task.
#[cfg(feature = "rayon")]
pub(crate) const CHUNK: usize = 1 << 14;

/// Whether a loop over `n` elements is split.
#[cfg(feature = "rayon")]
#[inline]
pub(crate) fn split(n: usize) -> bool {
    n >= MIN && rayon::current_num_threads() > 1
}

/// `x = f(x)` for every element.
#[inline]
pub(crate) fn map_inplace<E, F>(data: &mut [E], f: F)
where
    E: Copy + Send,
    F: Fn(E) -> E + Sync,
{
    #[cfg(feature = "rayon")]
    if split(data.len()) {
        use rayon::prelude::*;
        data.par_chunks_mut(CHUNK).for_each(|chunk| {
            for x in chunk.iter_mut() {
                *x = f(*x);
            }
        });
        return;
    }
    for x in data.iter_mut() {
        *x = f(*x);
    }
}

/// `d = f(d, s)` for every pair of elements (equal lengths).
#[inline]
pub(crate) fn zip_inplace<D, S, F>(dst: &mut [D], src: &[S], f: F)
where
    D: Copy + Send,
    S: Copy + Sync,
    F: Fn(D, S) -> D + Sync,
{
    debug_assert_eq!(dst.len(), src.len());
    #[cfg(feature = "rayon")]
    if split(dst.len()) {
        use rayon::prelude::*;
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| {
                for (d, &s) in d.iter_mut().zip(s) {
                    *d = f(*d, s);
                }
            });
        return;
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f(*d, s);
    }
}

/// `f(x)` of every element, collected.
#[inline]
pub(crate) fn map_collect<S, E, F>(src: &[S], f: F) -> Vec<E>
where
    S: Copy + Sync,
    E: Send,
    F: Fn(S) -> E + Sync,
{
    #[cfg(feature = "rayon")]
    if split(src.len()) {
        use rayon::prelude::*;
        return src.par_iter().with_min_len(CHUNK).map(|&x| f(x)).collect();
    }
    src.iter().map(|&x| f(x)).collect()
}

/// `f(a, b)` of every pair of elements (equal lengths), collected.
#[inline]
pub(crate) fn zip_collect<A, B, E, F>(a: &[A], b: &[B], f: F) -> Vec<E>
where
    A: Copy + Sync,
    B: Copy + Sync,
    E: Send,
    F: Fn(A, B) -> E + Sync,
{
    debug_assert_eq!(a.len(), b.len());
    #[cfg(feature = "rayon")]
    if split(a.len()) {
        use rayon::prelude::*;
        return a
            .par_iter()
            .zip(b.par_iter())
            .with_min_len(CHUNK)
            .map(|(&x, &y)| f(x, y))
            .collect();
    }
    a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
}
