//! The vector quantiser's step after its distance product, as one GPU kernel (CubeCL: wgpu,
//! CUDA), for inference: each token's nearest code, that code, the straight-through output and
//! the token's commitment.
//!
//! Composed from burn's operations a level takes about twenty launches (the tokens' squared
//! norms, the distances `‖x‖² − 2x·e + ‖e‖²` over a `[B, L, K]` tensor in three passes, the
//! arg-min, the codebook-row offsets, the row gather, `q − x`, `x + (q − x)`, the squared
//! difference and its mean); with five levels in the official model that was most of the VQ
//! stage's 108. Here one cube of 64 threads takes one token (one thread per token, before,
//! walked its row of products alone: 2.1 ms for the five levels at batch 8 on an H200,
//! 2026-12-04): it sums its `x²`, finds the first smallest distance over its row of dot
//! products (the same f32 operations in the same order as the composed form for each
//! distance: `(‖x‖² − 2·dot) + ‖e‖²`), copies the chosen code and writes `x + (q − x)` and the
//! mean of `(q − x)²` beside it. (A GPU compiler may simplify `x + (q − x)` to `q`, as lavapipe's
//! does: one rounding at the token's scale from the reference's value, within every tolerance.)

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::CubeBackend;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::NearestCodes;
use super::gpu::{
    F32, ROW_THREADS, cube_sum, index_type, int_dtype, plain_f32_contiguous, row_cubes,
    row_of_cube, to_burn,
};

/// One cube of `ROW_THREADS` per token: every thread sums the token's `x²` (the same sum in
/// the same order), each takes every `ROW_THREADS`-th code (neighbouring threads read
/// neighbouring dot products) and keeps its first smallest distance, the cube keeps the
/// smallest pairwise (the lower code on equal distances: the first smallest overall, as an
/// arg-min returns it), then the threads copy the code's values and sum the squared gaps.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn nearest_code_kernel<F: Float, I: Numeric>(
    x: &Tensor<F>,
    dots: &Tensor<F>,
    code_norms: &Tensor<F>,
    code_rows: &Tensor<F>,
    indices: &mut Tensor<I>,
    codes: &mut Tensor<F>,
    quantized: &mut Tensor<F>,
    commitment: &mut Tensor<F>,
    tokens: u32,
    tokens_per_sample: u32,
    dim: u32,
    code_count: u32,
    book_per_sample: u32,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let thread = UNIT_POS_X as usize;
    // `k` codes, or none (and no values) for a cube past the last token.
    let (token, k) = row_of_cube(tokens, code_count);
    let mut d = dim as usize;
    if k == 0 {
        d = 0;
    }
    // Sample b's codebook is the b-th (one per sample) or the only one.
    let book = (token / tokens_per_sample as usize) * book_per_sample as usize;
    let x_base = token * dim as usize;
    let x_sq = squared_norm(x, x_base, d);
    let dot_base = token * code_count as usize;
    let norm_base = book * code_count as usize;
    let two = F::new(2.0);
    // A thread without codes offers none: the index past them all (its distance unread; WGSL
    // has no infinity to start from).
    let none = code_count;
    let mut best = none;
    let mut best_distance = F::new(0.0);
    let mut j = thread;
    while j < k {
        let distance = (x_sq - dots[dot_base + j] * two) + code_norms[norm_base + j];
        // Strictly smaller, or the thread's first: its first of equal distances wins.
        if distance < best_distance || best == none {
            best_distance = distance;
            best = j as u32;
        }
        j += ROW_THREADS;
    }
    let mut distances = Shared::<[F]>::new_slice(ROW_THREADS);
    let mut candidates = Shared::<[u32]>::new_slice(ROW_THREADS);
    distances[thread] = best_distance;
    candidates[thread] = best;
    sync_cube();
    #[unroll]
    for level in 1..=ROW_THREADS.trailing_zeros() as usize {
        let width = ROW_THREADS >> level;
        if thread < width {
            let (d1, i1) = (distances[thread], candidates[thread]);
            let (d2, i2) = (distances[thread + width], candidates[thread + width]);
            if i2 != none && (i1 == none || d2 < d1 || (d2 == d1 && i2 < i1)) {
                distances[thread] = d2;
                candidates[thread] = i2;
            }
        }
        sync_cube();
    }
    let chosen = candidates[0] as usize;
    let row_base = (norm_base + chosen) * dim as usize;
    let mut squares = F::new(0.0);
    let mut i = thread;
    while i < d {
        let q = code_rows[row_base + i];
        let v = x[x_base + i];
        let gap = q - v;
        codes[x_base + i] = q;
        quantized[x_base + i] = v + gap;
        squares += gap * gap;
        i += ROW_THREADS;
    }
    let mut partial = Shared::<[F]>::new_slice(ROW_THREADS);
    let total = cube_sum::<F>(&mut partial, thread, squares, ROW_THREADS);
    if thread == 0 && k > 0 {
        indices[token] = I::cast_from(chosen as u32);
        commitment[token] = total / F::cast_from(dim);
    }
}

/// `Σ v²` over `x[base .. base + len]`, in order: a token's squared norm, as the composed
/// `powi(2)` then sum computes it (up to the sum's order).
#[cube]
pub(super) fn squared_norm<F: Float>(x: &Tensor<F>, base: usize, len: usize) -> F {
    let mut sum = F::new(0.0);
    for i in 0..len {
        let v = x[base + i];
        sum += v * v;
    }
    sum
}

/// What a kernel taking each token against its sample's codebook reads, checked and taken from
/// burn: the tokens `x [B, L, D]` and their dot products `dots [B, L, K]` (copied when not
/// contiguous) and a per-code value `per_code [G, K]` (contiguous; G = 1 for a codebook every
/// sample shares, G = B for one per sample).
pub(super) struct TokensAndCodes {
    pub x: CubeTensor,
    pub dots: CubeTensor,
    pub per_code: CubeTensor,
    /// `[B, L, D, K]`.
    pub dims: [usize; 4],
    /// G = B: sample b's codebook is the b-th.
    pub book_per_sample: bool,
}

/// [`TokensAndCodes`] from burn's tensors; `None` when one is not a plain f32 tensor of this
/// process's GPU backend, the shapes disagree or a size is zero.
pub(super) fn tokens_and_codes(
    x: &BurnTensor<3>,
    dots: &BurnTensor<3>,
    per_code: &BurnTensor<2>,
) -> Option<TokensAndCodes> {
    let [b, l, d] = x.dims();
    let [g, k] = per_code.dims();
    if dots.dims() != [b, l, k] || !(g == 1 || g == b) || b * l == 0 || d == 0 || k == 0 {
        return None;
    }
    Some(TokensAndCodes {
        x: plain_f32_contiguous(x.clone())?,
        dots: plain_f32_contiguous(dots.clone())?,
        per_code: plain_f32_contiguous(per_code.clone())?,
        dims: [b, l, d, k],
        book_per_sample: g > 1,
    })
}

/// [`super::nearest_codes`] on a GPU backend: the nearest code of each token of `x [B, L, D]`
/// given its dot products `dots [B, L, K]` with its sample's codes, the codes' squared norms
/// `code_norms [G, K]` and the codes as rows `code_rows [G·K, D]` (G = 1: one codebook for every
/// sample; G = B: sample b's at b). `None` when an input is not a plain f32 tensor of this
/// process's GPU backend (each is copied when it is not laid out contiguously), the shapes
/// disagree or the index type is not a 32- or 64-bit integer; the
/// caller composes it.
pub fn nearest_codes(
    x: &BurnTensor<3>,
    dots: &BurnTensor<3>,
    code_norms: &BurnTensor<2>,
    code_rows: &BurnTensor<2>,
) -> Option<NearestCodes> {
    let [g, _] = code_norms.dims();
    let TokensAndCodes {
        x: input,
        dots,
        per_code: code_norms,
        dims: [b, l, d, k],
        book_per_sample,
    } = tokens_and_codes(x, dots, code_norms)?;
    if code_rows.dims() != [g * k, d] {
        return None;
    }
    let code_rows = plain_f32_contiguous(code_rows.clone())?;
    let int_dtype = int_dtype(&x.device());
    let index_type = index_type(int_dtype)?;
    let new_of = |shape: Vec<usize>, dtype| {
        empty_device_contiguous_dtype(
            input.client.clone(),
            input.device.clone(),
            shape.into(),
            dtype,
        )
    };
    let new = |shape: Vec<usize>| new_of(shape, input.dtype);
    let indices = new_of(vec![b, l], int_dtype);
    let codes = new(vec![b, l, d]);
    let quantized = new(vec![b, l, d]);
    let commitment = new(vec![b, l]);
    let (cube_count, cube_dim) = row_cubes(&input, b * l);
    nearest_code_kernel::launch(
        &input.client,
        cube_count,
        cube_dim,
        input.clone().into_tensor_arg(),
        dots.into_tensor_arg(),
        code_norms.into_tensor_arg(),
        code_rows.into_tensor_arg(),
        indices.clone().into_tensor_arg(),
        codes.clone().into_tensor_arg(),
        quantized.clone().into_tensor_arg(),
        commitment.clone().into_tensor_arg(),
        (b * l) as u32,
        l as u32,
        d as u32,
        k as u32,
        u32::from(book_per_sample),
        [F32, index_type],
    );
    Some(NearestCodes {
        indices: BurnTensor::from_primitive::<CubeBackend>(indices),
        codes: to_burn(codes),
        quantized: to_burn(quantized),
        commitment: to_burn(commitment),
    })
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Int, Tensor};

    use crate::kernels::gpu::values;

    fn ints(t: BurnTensor<2, Int>) -> Vec<i64> {
        t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap()
    }

    /// On wgpu, one launch against the host: the distances in f64 from the same dot products,
    /// each token's code the first nearest (a token whose two best distances lie within the
    /// f32 rounding of its sums may take either), the code copied exactly, `x + (q − x)` as f32
    /// computes it, the commitment within a row's rounding of the f64 mean. A codebook shared by
    /// every sample and one per sample; ragged sizes, below and above the cube's 64 threads;
    /// duplicate codes tie to the first, also when another thread holds the duplicate.
    #[test]
    fn one_kernel_finds_each_tokens_nearest_code() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(5);
        // Fewer codes and values than a cube's 64 threads, and more (not a multiple of them).
        for (b, l, d, k, g) in [
            (3usize, 19usize, 40usize, 33usize, 1usize),
            (2, 7, 5, 9, 2),
            (2, 6, 70, 150, 1),
        ] {
            let x = Tensor::<3>::random([b, l, d], Distribution::Normal(0.0, 1.0), &device);
            let mut rows = values(Tensor::<2>::random(
                [g * k, d],
                Distribution::Normal(0.0, 1.0),
                &device,
            ));
            // Code 4 of every book repeats code 2 (another thread's), and code 66 (the same thread's next
            // code) where there is one: tokens nearest to it must get 2.
            for book in 0..g {
                for copy in [4, 66].into_iter().filter(|&c| c < k) {
                    let (from, to) = ((book * k + 2) * d, (book * k + copy) * d);
                    rows.copy_within(from..from + d, to);
                }
            }
            // Pull token 0 of each sample onto code 2 of its book so the tie is exercised.
            let mut xv = values(x.clone());
            for s in 0..b {
                let book = if g == 1 { 0 } else { s };
                let code = &rows[(book * k + 2) * d..(book * k + 3) * d].to_vec();
                xv[s * l * d..s * l * d + d].copy_from_slice(code);
            }
            let x = Tensor::<3>::from_data(
                burn::tensor::TensorData::new(xv.clone(), [b, l, d]),
                &device,
            );
            let code_rows = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(rows.clone(), [g * k, d]),
                &device,
            );
            let norms = code_rows.clone().powi_scalar(2).sum_dim(1).reshape([g, k]);
            let columns = code_rows.clone().reshape([g, k, d]).swap_dims(1, 2);
            let columns = if g == 1 {
                columns.expand([b, d, k])
            } else {
                columns
            };
            let dots = crate::kernels::products::matmul(x.clone(), columns);
            let _ = nearest_codes(&x, &dots, &norms, &code_rows).unwrap();
            let profiler = crate::device::kernel_profile::KernelProfiler::start("nearest");
            let got = nearest_codes(&x, &dots, &norms, &code_rows).unwrap();
            assert_eq!(profiler.finish().stages[0].launches, 1);
            let (dv, nv) = (values(dots), values(norms));
            let (indices, codes) = (ints(got.indices), values(got.codes));
            let (quantized, commitment) = (values(got.quantized), values(got.commitment));
            let eps = 2f64.powi(-23);
            for t in 0..b * l {
                let book = if g == 1 { 0 } else { t / l };
                let xs = &xv[t * d..(t + 1) * d];
                let x_sq: f64 = xs.iter().map(|&v| (v as f64).powi(2)).sum();
                let distance =
                    |j: usize| x_sq - 2.0 * dv[t * k + j] as f64 + nv[book * k + j] as f64;
                let scale =
                    |j: usize| x_sq + 2.0 * (dv[t * k + j] as f64).abs() + nv[book * k + j] as f64;
                let best = (0..k)
                    .min_by(|&i, &j| distance(i).total_cmp(&distance(j)))
                    .unwrap();
                let chosen = indices[t] as usize;
                let slack = (d as f64 + 4.0) * eps * (scale(best) + scale(chosen));
                assert!(
                    distance(chosen) <= distance(best) + slack,
                    "token {t}: code {chosen} at {} vs {best} at {}",
                    distance(chosen),
                    distance(best)
                );
                if t % l == 0 {
                    assert_eq!(chosen, 2, "token {t} equals codes 2 and 4: the first wins");
                }
                let row = &rows[(book * k + chosen) * d..(book * k + chosen + 1) * d];
                assert_eq!(&codes[t * d..(t + 1) * d], row, "token {t}'s code");
                let mut want = 0.0;
                for i in 0..d {
                    let gap = row[i] - xs[i];
                    // `x + (q − x)` as the reference computes it, or `q` where the GPU's
                    // compiler simplifies the expression (lavapipe's does): one rounding at x's
                    // scale apart.
                    let got = quantized[t * d + i];
                    assert!(
                        got == xs[i] + gap || got == row[i],
                        "token {t}[{i}]: {got}, neither {} nor {}",
                        xs[i] + gap,
                        row[i]
                    );
                    want += (gap as f64).powi(2);
                }
                let want = want / d as f64;
                let bound = (d as f64 + 2.0) * eps * want + 1e-30;
                assert!(
                    (commitment[t] as f64 - want).abs() <= bound,
                    "token {t}: commitment {} vs {want}",
                    commitment[t]
                );
            }
        }
    }

    /// Only plain f32 tensors of a GPU backend with agreeing shapes: the CPU or a tracked
    /// tensor is composed by the caller; a transposed view of the codes is copied first (one
    /// launch more, the same result).
    #[test]
    fn other_inputs_are_left_to_the_caller() {
        let _generator = crate::test_rng::lock();
        let gpu = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        let args = |device: &burn::tensor::Device| {
            (
                Tensor::<3>::ones([2, 3, 4], device),
                Tensor::<3>::ones([2, 3, 5], device),
                Tensor::<2>::ones([1, 5], device),
                Tensor::<2>::ones([5, 4], device),
            )
        };
        let (x, dots, norms, rows) = args(&gpu);
        assert!(nearest_codes(&x, &dots, &norms, &rows).is_some());
        assert!(nearest_codes(&x.clone().autodiff(), &dots, &norms, &rows).is_none());
        let codes = Tensor::<2>::random([4, 5], Distribution::Normal(0.0, 1.0), &gpu);
        let profiler = crate::device::kernel_profile::KernelProfiler::start("codes");
        let from_transposed = nearest_codes(&x, &dots, &norms, &codes.clone().transpose());
        let launches = profiler.finish().stages[0].launches;
        let copied = codes.transpose().reshape([20]).reshape([5, 4]);
        let profiler = crate::device::kernel_profile::KernelProfiler::start("codes");
        let from_contiguous = nearest_codes(&x, &dots, &norms, &copied);
        assert_eq!(launches, profiler.finish().stages[0].launches + 1);
        let (a, b) = (from_transposed.unwrap(), from_contiguous.unwrap());
        assert_eq!(values(a.codes), values(b.codes));
        let three_books = Tensor::<2>::ones([3, 5], &gpu);
        assert!(nearest_codes(&x, &dots, &three_books, &rows).is_none());
        let (x, dots, norms, rows) = args(&cpu);
        assert!(nearest_codes(&x, &dots, &norms, &rows).is_none());
    }
}
