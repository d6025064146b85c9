//! Multi-head attention `softmax(q·kᵀ/√d)·v` as one GPU kernel (CubeCL: wgpu, CUDA) in which
//! each query's keys are shared out among several threads: inference's attention and training's
//! forward (`gpu_attention_autodiff`, which also keeps the probabilities and applies dropout).
//!
//! Why: one thread per (batch, head, query) is 12,544 threads for the official network at batch
//! 8, each walking 196 keys alone, while an H200 holds 270,000 resident threads; burn's
//! flash-attention "unit" kernel did no better (2026-12-04, wgpu: 6.2 ms for the decoder's eight
//! attentions at batch 8 where PyTorch's took 0.31 ms; training's forward kernel 3.7 ms for
//! twelve). Here:
//!
//! - a cube holds [`QUERIES`] queries of one (batch, head) pair along x and [`SPLIT`] threads per
//!   query along y; thread `s` of a query takes keys `s·R .. s·R + R` of every stage of `R·SPLIT`
//!   keys, so the grid is `SPLIT` times as many threads, each doing a `SPLIT`-th of the work;
//! - a stage's keys and values are loaded once into shared memory by the whole cube (neighbouring
//!   threads read neighbouring head columns) and read by all its queries;
//! - each thread keeps an online softmax over its keys (running maximum, sum of exponentials, and
//!   weighted values rescaled when the maximum grows); the cube then combines a query's `SPLIT`
//!   partial results in shared memory: the row's maximum, the sum rescaled to it, and each head
//!   column summed by one thread, in slot order (so results do not depend on timing);
//! - training keeps the raw dot products on the way and rewrites them as probabilities
//!   `e^{s(x − max)}/Σ` once the row's maximum and sum are known.
//!
//! Shared memory stays under WebGPU's guaranteed 16 KiB: a stage holds at most [`STAGE_VALUES`]
//! values of keys and as many of values.

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::gpu::{F32, plain_f32, to_burn, unread_slot};

/// Queries per cube, one per thread along x (neighbouring threads: neighbouring queries, so the
/// probabilities' key-major writes coalesce).
pub(super) const QUERIES: usize = 16;
/// Threads per query along y, each taking a share of every stage's keys.
pub(super) const SPLIT: usize = 8;
/// The most key (and as many value) elements a stage holds: with the rows' padding ([`PAD`]),
/// at most 10 KiB for both (heads 16 wide), and with the forward's other shared values at most
/// 15.25 KiB in all.
const STAGE_VALUES: usize = 1024;
/// Floats a staged row holds past its `head_dim` columns (its stride in shared memory is
/// `head_dim + PAD`). Four keeps each row's start on a 16-byte boundary when the head's width is
/// a multiple of four, so a GPU reads four columns with one load instruction (with a pad of one
/// the key gradient's loop read one float at a time on an H100/H200: `scripts/sass_mix.py`), while
/// the rows the threads of a warp read together still start in different banks of shared memory's
/// 32 (a query's or key's shares read neighbouring rows, which start 4 banks apart for widths
/// that are multiples of 32).
pub(super) const PAD: usize = 4;
/// The most keys a stage holds (narrow heads would otherwise stage hundreds).
const MAX_STAGE_KEYS: usize = 64;

/// Where one of q, k, v lies in a `[B, L, ·]` buffer: its row stride and first column.
#[derive(CubeType, CubeLaunch, Clone, Copy, Debug)]
pub(super) struct Operand {
    pub(super) row: u32,
    pub(super) offset: u32,
}

/// The shapes and the dropout of one call, as the kernels take them.
#[derive(CubeType, CubeLaunch, Clone, Copy, Debug)]
pub(super) struct Dims {
    pub(super) heads: u32,
    pub(super) lq: u32,
    pub(super) lk: u32,
    /// The logits' scale, `1/√head_dim`.
    pub(super) scale: f32,
    /// A kept weight's factor, `1/(1 − p)`.
    pub(super) keep_scale: f32,
    /// Kept when the hash's top 24 bits fall below this: `round((1 − p)·2²⁴)`.
    pub(super) threshold: u32,
}

/// The first element of head column `column` in row `row` (`b·L + position`) of an operand.
#[cube]
pub(super) fn element(o: &Operand, row: usize, column: usize) -> usize {
    row * o.row as usize + o.offset as usize + column
}

/// lowbias32 (C. Wellons): a bijective 32-bit mix with good avalanche.
#[cube]
pub(super) fn mix(x: u32) -> u32 {
    let mut z = x;
    z ^= z >> 16u32;
    z *= 0x7feb_352du32;
    z ^= z >> 15u32;
    z *= 0x846c_a68bu32;
    z ^ (z >> 16u32)
}

/// `w` through dropout (when `dropping`): element `(bh, i, j)` of the mask of `seed` is
/// `keep_scale` if the hash of its counter (row-major `[B, H, Lq, Lk]`) keeps it, else zero.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn dropped<F: Float, I: Numeric>(
    w: F,
    seed: &Tensor<I>,
    bh: usize,
    i: usize,
    j: usize,
    shape: &Dims,
    #[comptime] dropping: bool,
) -> F {
    let mut out = w;
    if dropping {
        let counter = u32::cast_from((bh * shape.lq as usize + i) * shape.lk as usize + j);
        let h = mix(mix(counter ^ u32::cast_from(seed[0])) ^ u32::cast_from(seed[1]));
        let mut mask = F::new(0.0);
        if (h >> 8u32) < shape.threshold {
            mask = F::cast_from(shape.keep_scale);
        }
        out = w * mask;
    }
    out
}

/// Element `(b, h, i, j)`'s index in the kept probabilities: key-major, `[B, H, Lk, Lq]`, so
/// threads of consecutive queries touch consecutive elements.
#[cube]
pub(super) fn at(bh: usize, i: usize, j: usize, shape: &Dims) -> usize {
    (bh * shape.lk as usize + j) * shape.lq as usize + i
}

/// The keys of one stage for heads `head_dim` wide: [`STAGE_VALUES`] elements, a multiple of
/// [`SPLIT`] (every thread of a query the same number), at most [`MAX_STAGE_KEYS`].
pub(super) fn stage_keys(head_dim: usize) -> usize {
    (STAGE_VALUES / head_dim.max(1) / SPLIT).clamp(1, MAX_STAGE_KEYS / SPLIT) * SPLIT
}

/// Threads of a cube: [`QUERIES`] owners (queries, or keys in the key gradient) by [`SPLIT`]
/// shares.
pub(super) const CUBE: usize = QUERIES * SPLIT;
/// Shared values [`write_share_sums`] takes: a round of `SPLIT` columns for every owner and
/// share, owners padded by one against bank conflicts.
pub(super) const PARTIAL: usize = SPLIT * SPLIT * (QUERIES + 1);

/// Rows `t0 .. t0 + stage` of an operand (`len` rows from `first`, `row` apart, `head_dim`
/// columns each) into `smem[r · (head_dim + PAD) + c]`, zeros past the end; the cube's threads
/// (`thread` of [`CUBE`]) take neighbouring columns.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn load_stage<F: Float>(
    t: &Tensor<F>,
    first: usize,
    row: usize,
    t0: usize,
    len: usize,
    smem: &mut Shared<[F]>,
    thread: usize,
    #[comptime] head_dim: usize,
    #[comptime] stage: usize,
) {
    let width = comptime!(head_dim + PAD);
    #[unroll]
    for l in 0..comptime!((stage * head_dim).div_ceil(CUBE)) {
        let e = thread + l * CUBE;
        let (r, c) = (e / head_dim, e % head_dim);
        if r < stage {
            let mut value = F::new(0.0);
            if t0 + r < len {
                value = t[first + (t0 + r) * row + c];
            }
            smem[r * width + c] = value;
        }
    }
}

/// `head_dim` values of `t` from `at` on in registers, zeros for a thread past the end
/// (`valid` false).
#[cube]
pub(super) fn load_row<F: Float>(
    t: &Tensor<F>,
    at: usize,
    valid: bool,
    #[comptime] head_dim: usize,
) -> Array<F> {
    let mut row = Array::<F>::new(head_dim);
    #[unroll]
    for c in 0..head_dim {
        let mut value = F::new(0.0);
        if valid {
            value = t[at + c];
        }
        row[c] = value;
    }
    row
}

/// Zeros for a thread's sums, `head_dim` rounded up to whole rounds of [`write_share_sums`].
#[cube]
pub(super) fn share_sums<F: Float>(#[comptime] head_dim: usize) -> Array<F> {
    let padded = comptime!(head_dim.div_ceil(SPLIT) * SPLIT);
    let mut sums = Array::<F>::new(padded);
    #[unroll]
    for c in 0..padded {
        sums[c] = F::new(0.0);
    }
    sums
}

/// Each of an owner's `head_dim` sums (a query's or a key's), held in parts by its [`SPLIT`]
/// threads (`share`; `acc`, scaled by `factor`), added up in share order by one of them and
/// written at `out[at + c]` when `write`: `SPLIT` columns a round through `partial`
/// ([`PARTIAL`] values), `owner` of the cube's [`QUERIES`]. Every thread of the cube calls it
/// (barriers).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn write_share_sums<F: Float>(
    acc: &Array<F>,
    factor: F,
    partial: &mut Shared<[F]>,
    owner: usize,
    share: usize,
    write: bool,
    out: &mut Tensor<F>,
    at: usize,
    #[comptime] head_dim: usize,
) {
    let stride = QUERIES + 1;
    #[unroll]
    for round in 0..comptime!(head_dim.div_ceil(SPLIT)) {
        #[unroll]
        for cc in 0..SPLIT {
            partial[(cc * SPLIT + share) * stride + owner] = acc[round * SPLIT + cc] * factor;
        }
        sync_cube();
        let c = round * SPLIT + share;
        if write && c < head_dim {
            let mut sum = F::new(0.0);
            #[unroll]
            for t in 0..SPLIT {
                sum += partial[(share * SPLIT + t) * stride + owner];
            }
            out[at + c] = sum;
        }
        sync_cube();
    }
}

/// The (batch, head) pair of this cube ([`pair_grid`]: along y, then z); past the last pair when
/// the grid's z axis rounds up, which a kernel checks before anything else.
#[cube]
pub(super) fn pair_of_cube() -> usize {
    (CUBE_POS_Y + CUBE_POS_Z * CUBE_COUNT_Y) as usize
}

/// Where a thread of the split kernels works, in pair `bh` of a `heads`-head attention.
#[derive(CubeType)]
pub(super) struct Place {
    pub(super) batch: usize,
    /// The head's first column.
    pub(super) column: usize,
    /// The owner (query, or key) among the cube's [`QUERIES`].
    pub(super) owner: usize,
    /// Which of its owner's [`SPLIT`] threads this is.
    pub(super) share: usize,
    /// The thread's index in the cube (its loads' share of a stage).
    pub(super) thread: usize,
    /// The owner's query or key index.
    pub(super) index: usize,
    /// Whether the owner is one of the `len` (a thread past the end computes on zeros and writes
    /// nothing: its cube's barriers need it).
    pub(super) valid: bool,
}

/// The [`Place`] of this thread: owners along x and shares along y, or the other way round
/// with `shares_along_x` (as [`pair_grid`] launched it), `len` queries or keys.
#[cube]
pub(super) fn place(
    bh: usize,
    heads: usize,
    len: usize,
    #[comptime] head_dim: usize,
    #[comptime] shares_along_x: bool,
) -> Place {
    let mut owner = UNIT_POS_X as usize;
    let mut share = UNIT_POS_Y as usize;
    if shares_along_x {
        owner = UNIT_POS_Y as usize;
        share = UNIT_POS_X as usize;
    }
    let index = CUBE_POS_X as usize * QUERIES + owner;
    Place {
        batch: bh / heads,
        column: (bh % heads) * head_dim,
        owner,
        share,
        thread: UNIT_POS as usize,
        index,
        valid: index < len,
    }
}

/// The most cubes along a grid's y and z axes (WebGPU's guaranteed limit).
const MAX_CUBES: usize = u16::MAX as usize;

/// The grid of the split kernels: `rows` owners (queries or keys) in cubes of [`QUERIES`] along
/// x, the `pairs` (batch, head) pairs along y and, past [`MAX_CUBES`], z; in a cube the owners
/// lie along x and the shares along y, or the other way round with `shares_along_x`.
pub(super) fn pair_grid(rows: usize, pairs: usize, shares_along_x: bool) -> (CubeCount, CubeDim) {
    let along_y = pairs.clamp(1, MAX_CUBES);
    (
        CubeCount::Static(
            rows.div_ceil(QUERIES) as u32,
            along_y as u32,
            pairs.div_ceil(along_y) as u32,
        ),
        if shares_along_x {
            CubeDim::new_2d(SPLIT as u32, QUERIES as u32)
        } else {
            CubeDim::new_2d(QUERIES as u32, SPLIT as u32)
        },
    )
}

/// One cube per [`QUERIES`] queries of a (batch, head) pair (`CUBE_POS_X` the query block,
/// `CUBE_POS_Y + CUBE_POS_Z·CUBE_COUNT_Y` the pair), [`SPLIT`] threads per query. Writes the
/// merged heads' output `out [B, Lq, E]` and, with `keep_probs`, the probabilities `probs` (at
/// [`at`]); with `dropping` the weighted values go through the mask of `seed`.
#[cube(launch)]
// `if keep_probs { if valid {` keeps the comptime choice apart from the runtime test.
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
fn split_attention_kernel<F: Float, I: Numeric>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    seed: &Tensor<I>,
    probs: &mut Tensor<F>,
    out: &mut Tensor<F>,
    qo: Operand,
    ko: Operand,
    vo: Operand,
    shape: Dims,
    pairs: u32,
    #[comptime] head_dim: usize,
    #[comptime] stage: usize,
    #[comptime] keep_probs: bool,
    #[comptime] dropping: bool,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let bh = pair_of_cube();
    if bh >= pairs as usize {
        // The whole cube: no thread of it reaches a barrier.
        terminate!();
    }
    let (lq, lk, heads) = (shape.lq as usize, shape.lk as usize, shape.heads as usize);
    let p = place(bh, heads, lq, head_dim, false);
    let (x, slot, thread, i, batch, column, valid) = (
        p.owner, p.share, p.thread, p.index, p.batch, p.column, p.valid,
    );
    let width = comptime!(head_dim + PAD);
    let per_slot = comptime!(stage / SPLIT);
    let query = load_row(q, element(&qo, batch * lq + i, column), valid, head_dim);
    let mut acc = share_sums::<F>(head_dim);
    // Below any real logit: its weight vanishes at the first key.
    let mut max = F::new(-3.0e38);
    let mut sum = F::new(0.0);
    let s = F::cast_from(shape.scale);
    let k_first = element(&ko, batch * lk, column);
    let v_first = element(&vo, batch * lk, column);
    let mut k_stage = Shared::<[F]>::new_slice(comptime!(stage * (head_dim + PAD)));
    let mut v_stage = Shared::<[F]>::new_slice(comptime!(stage * (head_dim + PAD)));

    let mut t0 = 0;
    while t0 < lk {
        load_stage(
            k,
            k_first,
            ko.row as usize,
            t0,
            lk,
            &mut k_stage,
            thread,
            head_dim,
            stage,
        );
        load_stage(
            v,
            v_first,
            vo.row as usize,
            t0,
            lk,
            &mut v_stage,
            thread,
            head_dim,
            stage,
        );
        sync_cube();
        #[unroll]
        for r in 0..per_slot {
            let key = slot * per_slot + r;
            let j = t0 + key;
            if j < lk {
                let mut dot = F::new(0.0);
                #[unroll]
                for c in 0..head_dim {
                    dot += query[c] * k_stage[key * width + c];
                }
                if keep_probs {
                    if valid {
                        probs[at(bh, i, j, &shape)] = dot;
                    }
                }
                if dot > max {
                    let f = F::exp((max - dot) * s);
                    sum *= f;
                    // (The padding past `head_dim` stays zero.)
                    #[unroll]
                    for c in 0..head_dim {
                        acc[c] *= f;
                    }
                    max = dot;
                }
                let e = F::exp((dot - max) * s);
                sum += e;
                let w = dropped::<F, I>(e, seed, bh, i, j, &shape, dropping);
                #[unroll]
                for c in 0..head_dim {
                    acc[c] += w * v_stage[key * width + c];
                }
            }
        }
        sync_cube();
        t0 += stage;
    }

    // The query's row maximum and sum over its threads, in slot order.
    let mut maxima = Shared::<[F]>::new_slice(CUBE);
    let mut sums = Shared::<[F]>::new_slice(CUBE);
    maxima[thread] = max;
    sums[thread] = sum;
    sync_cube();
    let mut row_max = maxima[x];
    #[unroll]
    for t in 1..SPLIT {
        row_max = F::max(row_max, maxima[t * QUERIES + x]);
    }
    let mut total = F::new(0.0);
    #[unroll]
    for t in 0..SPLIT {
        total += sums[t * QUERIES + x] * F::exp((maxima[t * QUERIES + x] - row_max) * s);
    }
    let factor = F::exp((max - row_max) * s) / total;

    // Each head column summed over the query's threads by one of them.
    let mut partial = Shared::<[F]>::new_slice(PARTIAL);
    let out_at = (batch * lq + i) * heads * head_dim + column;
    write_share_sums(
        &acc,
        factor,
        &mut partial,
        x,
        slot,
        valid,
        out,
        out_at,
        head_dim,
    );

    // The kept dot products of this thread's keys as probabilities.
    if keep_probs {
        if valid {
            let mut t0 = 0;
            while t0 < lk {
                #[unroll]
                for r in 0..per_slot {
                    let j = t0 + slot * per_slot + r;
                    if j < lk {
                        let a = at(bh, i, j, &shape);
                        probs[a] = F::exp((probs[a] - row_max) * s) / total;
                    }
                }
                t0 += stage;
            }
        }
    }
}

/// One call of the kernel: operands with their places, the shapes, and what it keeps.
pub(super) struct SplitAttention {
    pub q: (CubeTensor, OperandLaunch),
    pub k: (CubeTensor, OperandLaunch),
    pub v: (CubeTensor, OperandLaunch),
    /// The dropout mask's seed and its element type (unread without dropout).
    pub seed: (CubeTensor, ElemType),
    /// `[B·H·Lq·Lk]` for the probabilities (training), or `None`.
    pub probs: Option<CubeTensor>,
    pub dims: DimsLaunch,
    pub batch: usize,
    pub heads: usize,
    pub lq: usize,
    pub head_dim: usize,
    pub dropping: bool,
}

impl SplitAttention {
    /// Launch it, writing `out [B, Lq, H·head_dim]` (contiguous).
    pub(super) fn launch(self, out: &CubeTensor) {
        let pairs = self.batch * self.heads;
        let (count, dim) = pair_grid(self.lq, pairs, false);
        let keep_probs = self.probs.is_some();
        let probs = self.probs.unwrap_or_else(|| unread_slot(out));
        split_attention_kernel::launch(
            &out.client,
            count,
            dim,
            self.q.0.into_tensor_arg(),
            self.k.0.into_tensor_arg(),
            self.v.0.into_tensor_arg(),
            self.seed.0.into_tensor_arg(),
            probs.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            self.q.1,
            self.k.1,
            self.v.1,
            self.dims,
            pairs as u32,
            self.head_dim,
            stage_keys(self.head_dim),
            keep_probs,
            self.dropping,
            [F32, self.seed.1],
        );
    }
}

/// The widest head the kernel holds in registers (a query and its weighted values' sums).
pub(super) const MAX_HEAD_DIM: usize = 128;

/// `t [B, L, E]` as the kernel reads an operand: its row stride, when its columns are
/// unit-stride and its batches follow each other at `L` rows (a contiguous tensor, or a column
/// block of a packed projection); `None` otherwise.
fn operand(t: &CubeTensor) -> Option<OperandLaunch> {
    let shape = t.meta.shape();
    let strides = t.meta.strides();
    if shape.rank() != 3 || strides[2] != 1 {
        return None;
    }
    let rows_follow = shape[0] == 1 || strides[0] == shape[1] * strides[1];
    rows_follow.then(|| OperandLaunch::new(strides[1] as u32, 0))
}

/// Inference's multi-head attention on the projections: `q [B, Lq, E]`, `k`, `v [B, Lk, E]`
/// (each may be a column block of a packed projection) split into `heads` heads,
/// `softmax(q·kᵀ/√d)·v` per head, the heads merged `[B, Lq, E]`, in one launch. `None` when an
/// input is not a plain f32 tensor of this process's GPU backend, the shapes disagree, a head
/// is wider than [`MAX_HEAD_DIM`], an axis is empty or the layout is not one the kernel reads;
/// the caller composes it.
pub fn attention(
    q: &BurnTensor<3>,
    k: &BurnTensor<3>,
    v: &BurnTensor<3>,
    heads: usize,
) -> Option<BurnTensor<3>> {
    let (q, k, v) = (
        plain_f32(q.clone())?,
        plain_f32(k.clone())?,
        plain_f32(v.clone())?,
    );
    let [b, lq, e] = [q.meta.shape()[0], q.meta.shape()[1], q.meta.shape()[2]];
    let [kb, lk, ke] = [k.meta.shape()[0], k.meta.shape()[1], k.meta.shape()[2]];
    let fits = k.device == q.device
        && v.device == q.device
        && kb == b
        && ke == e
        && (0..3).map(|a| v.meta.shape()[a]).eq([b, lk, e])
        && heads > 0
        && e.is_multiple_of(heads)
        && (1..=MAX_HEAD_DIM).contains(&(e / heads))
        && b * lq * lk > 0
        && b * heads * lq * lk < u32::MAX as usize;
    if !fits {
        return None;
    }
    let (qo, ko, vo) = (operand(&q)?, operand(&k)?, operand(&v)?);
    let head_dim = e / heads;
    let out = empty_device_contiguous_dtype(
        q.client.clone(),
        q.device.clone(),
        [b, lq, e].into(),
        q.dtype,
    );
    let seed = unread_slot(&q);
    SplitAttention {
        q: (q, qo),
        k: (k, ko),
        v: (v, vo),
        seed: (seed, F32),
        probs: None,
        dims: DimsLaunch::new(
            heads as u32,
            lq as u32,
            lk as u32,
            1.0 / (head_dim as f32).sqrt(),
            1.0,
            0,
        ),
        batch: b,
        heads,
        lq,
        head_dim,
        dropping: false,
    }
    .launch(&out);
    Some(to_burn(out))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    use crate::kernels::gpu::values;

    /// The f64 attention of `q [B, Lq, E]`, `k`, `v [B, Lk, E]` (host values, contiguous) with
    /// `heads` heads, merged `[B, Lq, E]`, and each output's bound: f32 rounding of the dot
    /// products (`d` terms), the exponentials and the online rescaling (a few ulps each, up to
    /// `Lk` of them), the sums of `Lk` weights, relative to the output's terms' magnitudes.
    fn host(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        [b, lq, lk, e]: [usize; 4],
        heads: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let d = e / heads;
        let scale = 1.0 / (d as f64).sqrt();
        let (mut want, mut bound) = (vec![0.0; b * lq * e], vec![0.0; b * lq * e]);
        for n in 0..b {
            for h in 0..heads {
                for i in 0..lq {
                    let row = &q[(n * lq + i) * e + h * d..][..d];
                    let scores: Vec<f64> = (0..lk)
                        .map(|j| {
                            let key = &k[(n * lk + j) * e + h * d..][..d];
                            scale
                                * row
                                    .iter()
                                    .zip(key)
                                    .map(|(a, b)| *a as f64 * *b as f64)
                                    .sum::<f64>()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let worst = scores.iter().map(|s| (s - max).abs()).fold(0.0, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    for c in 0..d {
                        let (mut sum, mut magnitude) = (0.0, 0.0);
                        for j in 0..lk {
                            let term = weights[j] / total * v[(n * lk + j) * e + h * d + c] as f64;
                            sum += term;
                            magnitude += term.abs();
                        }
                        let at = (n * lq + i) * e + h * d + c;
                        want[at] = sum;
                        bound[at] = (lk as f64 + d as f64 + 16.0 + 2.0 * worst)
                            * 2f64.powi(-23)
                            * magnitude
                            + 1e-6;
                    }
                }
            }
        }
        (want, bound)
    }

    /// On wgpu, one launch against the f64 attention: the official network's heads (8 of width
    /// 32 over 196 positions, a packed projection's column blocks), a cross attention over fewer
    /// keys than a stage, heads neither a multiple of the threads per query nor of a stage
    /// (width 12, 37 keys, 5 queries: less than a cube's), wide heads (128) and narrow ones (2),
    /// and more (batch, head) pairs than one grid axis holds; the layouts it cannot read and CPU
    /// tensors are refused.
    #[test]
    fn split_attention_gives_the_f64_attention() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(23);
        // (batch, queries, keys, width, heads, packed)
        for (b, lq, lk, e, heads, packed) in [
            (2, 196, 196, 256, 8, true),
            (1, 40, 7, 64, 2, false),
            (2, 5, 37, 36, 3, false),
            (1, 70, 70, 256, 2, true),
            (1, 18, 100, 4, 2, false),
        ] {
            let random = |l: usize, w: usize| {
                BurnTensor::<3>::random([b, l, w], Distribution::Normal(0.0, 1.5), &device)
            };
            let (q, k, v) = if packed {
                let p = random(lq, 3 * e);
                (
                    p.clone().narrow(2, 0, e),
                    p.clone().narrow(2, e, e),
                    p.narrow(2, 2 * e, e),
                )
            } else {
                (random(lq, e), random(lk, e), random(lk, e))
            };
            let _ = values(attention(&q, &k, &v, heads).unwrap());
            let profiler = crate::device::kernel_profile::KernelProfiler::start("attention");
            let got = attention(&q, &k, &v, heads).unwrap();
            assert_eq!(profiler.finish().stages[0].launches, 1);
            assert_eq!(got.dims(), [b, lq, e]);
            let [q, k, v] = [q, k, v].map(values);
            let (want, bound) = host(&q, &k, &v, [b, lq, lk, e], heads);
            for (n, g) in values(got).iter().enumerate() {
                let g = *g as f64;
                assert!(
                    (g - want[n]).abs() <= bound[n],
                    "({b}, {lq}, {lk}, {e}, {heads}) [{n}]: {g} vs {}",
                    want[n]
                );
            }
        }
        // More (batch, head) pairs than one grid axis holds (65,535): the rest on z.
        let (b, l, e, heads) = (8_200, 2, 16, 8);
        let random = || BurnTensor::<3>::random([b, l, e], Distribution::Normal(0.0, 1.0), &device);
        let (q, k, v) = (random(), random(), random());
        let got = values(attention(&q, &k, &v, heads).unwrap());
        let (want, bound) = host(&values(q), &values(k), &values(v), [b, l, l, e], heads);
        for (n, g) in got.iter().enumerate() {
            assert!(
                (*g as f64 - want[n]).abs() <= bound[n],
                "pairs past one axis [{n}]: {g} vs {}",
                want[n]
            );
        }
        let t = BurnTensor::<3>::ones([2, 4, 8], &device);
        assert!(attention(&t, &t, &t, 3).is_none(), "heads do not divide 8");
        let across = BurnTensor::<3>::ones([4, 2, 8], &device).swap_dims(0, 1);
        assert!(
            attention(&across, &across, &across, 2).is_none(),
            "batches not in order"
        );
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        let on_cpu = BurnTensor::<3>::ones([1, 4, 8], &cpu);
        assert!(attention(&on_cpu, &on_cpu, &on_cpu, 2).is_none());
    }
}
