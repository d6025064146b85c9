//! A batched f32 matrix product as hvq's own tiled GPU kernel (CubeCL: wgpu, CUDA): the
//! `HVQ_GPU_MATMUL=tiled` routine (`device::gpu_matmul`), and the five candidates
//! ([`BlockSize::ALL`]) the `auto` routine times against cubek's `SimpleUnit` for each kind of
//! product (`product_choice`).
//!
//! Why: at batch 8 on an H200 (2026-12-04 profile, wgpu) the training step's 115 backward
//! products took 51.5 ms of kernel time, PyTorch's about 2.4 ms: some 1.2 TFLOP/s of the
//! GPU's ~60 at f32. The transformer's products are small and skinny (1,568 token rows at batch
//! 8, 256 to 1,024 columns, and the weight gradients' sums over those 1,568 rows): a routine
//! with large stages launches a few dozen cubes for a GPU of 132 multiprocessors, each walking
//! the whole inner dimension. Here:
//!
//! - a cube of 16×16 threads computes a 64×64 block of the output, each thread 4×4 values
//!   (rows `ty + 16i`, columns `tx + 16j`: neighbouring threads read neighbouring shared
//!   values and write neighbouring outputs), or a 32×32 block, each thread 2×2 values
//!   ([`BlockSize`]: four times the cubes for a small output, as inference's 196 token rows at
//!   batch 1 by 256 columns: 16 blocks of 64, 56 of 32), or a 128×128 block, each thread 8×8
//!   values (twice the arithmetic per shared value read, for large outputs), over steps of 16
//!   of the inner dimension staged in shared memory (8, 4 or 16 KiB, rows padded against bank
//!   conflicts), the next stage fetched into registers while the current one is multiplied (its
//!   loads' latency hidden by the arithmetic);
//! - or ([`BlockSize::Quads64`], [`BlockSize::Quads128`]: [`quad_matmul_kernel`]) a thread's
//!   outputs come in 4×4 quads (rows `64g + 4ty + i`) and the stages are held as quads of four
//!   neighbouring values, so that a thread reads four of them with one shared-memory load: a
//!   quarter of the loads per multiply-add of the layout above (which one of them a GPU's
//!   compiler and memory run faster is what `auto` times);
//! - the operands are read at their strides (a transposed view costs no copy), each stage
//!   loaded with neighbouring threads on the operand's contiguous axis (the layout a comptime
//!   choice), so the loads coalesce whichever way round an operand lies;
//! - batch axes broadcast as burn's `matmul` does (an axis of size 1 repeats);
//! - when the blocks are fewer than [`MIN_CUBES`], the inner dimension is split across cubes
//!   (each at least [`MIN_SPLIT_DEPTH`] deep) whose partial products one more kernel adds up,
//!   in split order.
//!
//! Every output is a sum of its products in the inner dimension's order (per split, then the
//! splits in order): f32 rounding of a `k`-term sum, as any routine.

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::gpu::{F32, empty_shaped, plain_f32, to_burn};
use super::gpu_activations::{RowEpilogue, finished};
use super::gpu_column_sums::{add_grouped_blocks, add_grouped_blocks_into};

/// Threads along each side of a cube.
const SIDE: usize = 16;
/// Inner-dimension values a stage holds. Equal to [`SIDE`], so each thread loads as many
/// values of a stage, per operand, as it computes along a side (`per`).
const DEPTH: usize = SIDE;

/// The output block a cube computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockSize {
    /// 64×64, each thread 4×4 values.
    Of64,
    /// 32×32, each thread 2×2 values.
    Of32,
    /// 128×128, each thread 8×8 values: two multiply-adds per shared value read where 4×4
    /// does one (a GPU's shared-memory loads, not its arithmetic, bound a 4×4 thread), for a
    /// quarter of the blocks.
    Of128,
    /// 64×64, each thread 4×4 values read from the stages four at a time
    /// ([`quad_matmul_kernel`]): a quarter of the shared-memory loads of [`BlockSize::Of64`].
    Quads64,
    /// 128×128, each thread 8×8 values (2×2 quads) read four at a time.
    Quads128,
}

impl BlockSize {
    /// Every size, in the order the `auto` routine times them.
    pub const ALL: [BlockSize; 5] = [
        BlockSize::Of64,
        BlockSize::Of32,
        BlockSize::Of128,
        BlockSize::Quads64,
        BlockSize::Quads128,
    ];

    /// Outputs along each side of a thread's block.
    fn per(self) -> usize {
        match self {
            BlockSize::Of64 | BlockSize::Quads64 => 4,
            BlockSize::Of32 => 2,
            BlockSize::Of128 | BlockSize::Quads128 => 8,
        }
    }

    /// Quads along each side of a thread's block when its stages are read as quads.
    fn quads(self) -> Option<usize> {
        match self {
            BlockSize::Quads64 => Some(1),
            BlockSize::Quads128 => Some(2),
            _ => None,
        }
    }

    /// Outputs along each side of a cube's block.
    pub fn side(self) -> usize {
        SIDE * self.per()
    }
}

/// Below this many output blocks the inner dimension is split across cubes: about two cubes per
/// multiprocessor of a large GPU (an H200 has 132).
const MIN_CUBES: usize = 256;
/// The least inner-dimension depth of one split (16 stages), so the partial sums' extra pass
/// stays small next to the product.
const MIN_SPLIT_DEPTH: usize = 256;

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn tiled_matmul_kernel<F: Float>(
    a: &Tensor<F>,
    b: &Tensor<F>,
    out: &mut Tensor<F>,
    bias: &Tensor<F>,
    residual: &Tensor<F>,
    epilogue: u32,
    activation: u32,
    m: u32,
    n: u32,
    k: u32,
    split_depth: u32,
    splits: u32,
    #[comptime] per: usize,
    #[comptime] a_along_inner: bool,
    #[comptime] b_along_inner: bool,
    #[define(F)] _dtype: ElemType,
) {
    let (m, n, k) = (m as usize, n as usize, k as usize);
    let (tx, ty) = (UNIT_POS_X as usize, UNIT_POS_Y as usize);
    let thread = ty * SIDE + tx;
    // The block's side; shared values between one inner index's row of a stage and the next:
    // one more than a block, so that threads storing down a column (an operand read along its
    // inner dimension, whose 16 neighbouring values land a block apart) hit 16 different memory
    // banks instead of one.
    let block = comptime!(SIDE * per);
    let stride = comptime!(SIDE * per + 1);
    let work = cube_work(a, b, m, n, k, split_depth, splits, block);

    let mut a_stage = Shared::<[F]>::new_slice(comptime!(stride * DEPTH));
    let mut b_stage = Shared::<[F]>::new_slice(comptime!(stride * DEPTH));
    let mut acc = Array::<F>::new(comptime!(per * per));
    #[unroll]
    for i in 0..comptime!(per * per) {
        acc[i] = F::new(0.0);
    }
    let mut a_reg = Array::<F>::new(per);
    let mut b_reg = Array::<F>::new(per);

    let (start, end) = (work.start, work.end);
    // The next stage's values, fetched into registers before the current stage is multiplied,
    // so that their global loads' latency overlaps the arithmetic.
    let mut a_next = Array::<F>::new(per);
    let mut b_next = Array::<F>::new(per);
    #[unroll]
    for l in 0..per {
        let e = thread + l * SIDE * SIDE;
        a_next[l] = fetch::<F>(
            a,
            &work.a,
            e,
            start,
            end,
            block,
            a_along_inner,
            1usize,
            0usize,
        );
        b_next[l] = fetch::<F>(
            b,
            &work.b,
            e,
            start,
            end,
            block,
            b_along_inner,
            1usize,
            0usize,
        );
    }
    let mut k0 = start;
    while k0 < end {
        // Stage `a [m0.., k0..]` as `a_stage[kk · stride + mm]` and `b [k0.., n0..]` as
        // `b_stage[kk · stride + nn]`.
        #[unroll]
        for l in 0..per {
            let e = thread + l * SIDE * SIDE;
            a_stage[stage_slot(e, block, a_along_inner)] = a_next[l];
            b_stage[stage_slot(e, block, b_along_inner)] = b_next[l];
        }
        sync_cube();
        let k1 = k0 + DEPTH;
        if k1 < end {
            #[unroll]
            for l in 0..per {
                let e = thread + l * SIDE * SIDE;
                a_next[l] =
                    fetch::<F>(a, &work.a, e, k1, end, block, a_along_inner, 1usize, 0usize);
                b_next[l] =
                    fetch::<F>(b, &work.b, e, k1, end, block, b_along_inner, 1usize, 0usize);
            }
        }
        #[unroll]
        for kk in 0..DEPTH {
            #[unroll]
            for i in 0..per {
                a_reg[i] = a_stage[kk * stride + ty + SIDE * i];
                b_reg[i] = b_stage[kk * stride + tx + SIDE * i];
            }
            #[unroll]
            for i in 0..per {
                #[unroll]
                for j in 0..per {
                    acc[i * per + j] += a_reg[i] * b_reg[j];
                }
            }
        }
        sync_cube();
        k0 = k1;
    }

    write_block::<F>(
        out, &acc, bias, residual, epilogue, activation, &work, ty, tx, m, n, per, false,
    );
}

/// Four values side by side: a thread's outputs come in quads along each side, read from the
/// stages four at a time.
type Quad<F> = Vector<F, Const<4>>;
/// Values in a [`Quad`].
const QUAD: usize = 4;

/// The tiled product with the stages held as quads ([`BlockSize::Quads64`],
/// [`BlockSize::Quads128`]): a thread computes `quads × quads` blocks of 4×4 values (rows
/// `64g + 4ty + i`, columns `64h + 4tx + j`) and reads each stage's values for them four at a
/// time, so one shared-memory load brings four values where [`tiled_matmul_kernel`]'s brings
/// one (a warp's 16 neighbouring threads read 16 neighbouring quads of `b`, 256 bytes in two
/// transactions; `a`'s quads are the same for 16 threads, one broadcast). Each thread stores
/// whole quads into the stages: four outer indices at one inner index, fetched as four values
/// (neighbouring threads on the operand's contiguous axis, as the other kernel does). Same sums
/// in the same order as the other kernel.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn quad_matmul_kernel<F: Float>(
    a: &Tensor<F>,
    b: &Tensor<F>,
    out: &mut Tensor<F>,
    bias: &Tensor<F>,
    residual: &Tensor<F>,
    epilogue: u32,
    activation: u32,
    m: u32,
    n: u32,
    k: u32,
    split_depth: u32,
    splits: u32,
    #[comptime] quads: usize,
    #[comptime] a_along_inner: bool,
    #[comptime] b_along_inner: bool,
    #[define(F)] _dtype: ElemType,
) {
    let (m, n, k) = (m as usize, n as usize, k as usize);
    let (tx, ty) = (UNIT_POS_X as usize, UNIT_POS_Y as usize);
    let thread = ty * SIDE + tx;
    let per = comptime!(QUAD * quads);
    let block = comptime!(SIDE * QUAD * quads);
    // Quads along a stage's row (one inner index), and between one row and the next: one more
    // (`stage_slot`), so that threads storing down a column (an operand read along its inner
    // dimension) spread over the memory banks.
    let row_quads = comptime!(SIDE * quads);
    let stride = comptime!(row_quads + 1);
    let work = cube_work(a, b, m, n, k, split_depth, splits, block);

    let mut a_stage = Shared::<[Quad<F>]>::new_slice(comptime!(stride * DEPTH));
    let mut b_stage = Shared::<[Quad<F>]>::new_slice(comptime!(stride * DEPTH));
    let mut acc = Array::<F>::new(comptime!(per * per));
    #[unroll]
    for i in 0..comptime!(per * per) {
        acc[i] = F::new(0.0);
    }
    let mut a_reg = Array::<F>::new(per);
    let mut b_reg = Array::<F>::new(per);

    let (start, end) = (work.start, work.end);
    // Each thread stores `quads` quads of each operand a stage (a stage holds `DEPTH` rows of
    // `row_quads`, 256 threads), fetched into registers a stage ahead.
    let mut a_next = Array::<F>::new(per);
    let mut b_next = Array::<F>::new(per);
    #[unroll]
    for l in 0..quads {
        let e = thread + l * SIDE * SIDE;
        #[unroll]
        for q in 0..QUAD {
            a_next[l * QUAD + q] =
                fetch::<F>(a, &work.a, e, start, end, row_quads, a_along_inner, QUAD, q);
            b_next[l * QUAD + q] =
                fetch::<F>(b, &work.b, e, start, end, row_quads, b_along_inner, QUAD, q);
        }
    }
    let mut k0 = start;
    while k0 < end {
        #[unroll]
        for l in 0..quads {
            let e = thread + l * SIDE * SIDE;
            let mut a_quad = Quad::<F>::empty();
            let mut b_quad = Quad::<F>::empty();
            #[unroll]
            for q in 0..QUAD {
                a_quad.insert(q, a_next[l * QUAD + q]);
                b_quad.insert(q, b_next[l * QUAD + q]);
            }
            a_stage[stage_slot(e, row_quads, a_along_inner)] = a_quad;
            b_stage[stage_slot(e, row_quads, b_along_inner)] = b_quad;
        }
        sync_cube();
        let k1 = k0 + DEPTH;
        if k1 < end {
            #[unroll]
            for l in 0..quads {
                let e = thread + l * SIDE * SIDE;
                #[unroll]
                for q in 0..QUAD {
                    a_next[l * QUAD + q] =
                        fetch::<F>(a, &work.a, e, k1, end, row_quads, a_along_inner, QUAD, q);
                    b_next[l * QUAD + q] =
                        fetch::<F>(b, &work.b, e, k1, end, row_quads, b_along_inner, QUAD, q);
                }
            }
        }
        #[unroll]
        for kk in 0..DEPTH {
            #[unroll]
            for g in 0..quads {
                let a_quad = a_stage[kk * stride + g * SIDE + ty];
                let b_quad = b_stage[kk * stride + g * SIDE + tx];
                #[unroll]
                for q in 0..QUAD {
                    a_reg[g * QUAD + q] = a_quad.extract(q);
                    b_reg[g * QUAD + q] = b_quad.extract(q);
                }
            }
            #[unroll]
            for i in 0..per {
                #[unroll]
                for j in 0..per {
                    acc[i * per + j] += a_reg[i] * b_reg[j];
                }
            }
        }
        sync_cube();
        k0 = k1;
    }

    write_block::<F>(
        out, &acc, bias, residual, epilogue, activation, &work, ty, tx, m, n, per, true,
    );
}

/// Where a thread's value `i` along one side lies in its cube's block, for the thread's index
/// `t` along that side: `t + 16i` ([`tiled_matmul_kernel`]), or with `quads` value `i % 4` of
/// the thread's quad `i / 4`, `64·(i / 4) + 4t + i % 4` ([`quad_matmul_kernel`]).
#[cube]
fn place(t: usize, i: usize, #[comptime] quads: bool) -> usize {
    let mut at = t + SIDE * i;
    if quads {
        at = (i / QUAD) * SIDE * QUAD + t * QUAD + i % QUAD;
    }
    at
}

/// Writes a thread's `per × per` values `acc` (row-major) into `out`: value `(i, j)` at row
/// `m0 + place(ty, i)` and column `n0 + place(tx, j)` of the cube's `work` (its block's first row
/// and column) in the `m × n` product of its batch and split, those inside the product only, each
/// finished by the epilogue ([`finished`]: none for a plain product) with the bias read once per
/// column.
#[cube]
#[allow(clippy::too_many_arguments)]
fn write_block<F: Float>(
    out: &mut Tensor<F>,
    acc: &Array<F>,
    bias: &Tensor<F>,
    residual: &Tensor<F>,
    epilogue: u32,
    activation: u32,
    work: &Work,
    ty: usize,
    tx: usize,
    m: usize,
    n: usize,
    #[comptime] per: usize,
    #[comptime] quads: bool,
) {
    let (m0, n0, at) = (work.m0, work.n0, work.z * m * n);
    let mut column_bias = Array::<F>::new(per);
    #[unroll]
    for j in 0..per {
        let col = n0 + place(tx, j, quads);
        let mut b = F::new(0.0);
        if epilogue > 0 && col < n {
            b = bias[col];
        }
        column_bias[j] = b;
    }
    #[unroll]
    for i in 0..per {
        let row = m0 + place(ty, i, quads);
        #[unroll]
        for j in 0..per {
            let col = n0 + place(tx, j, quads);
            if row < m && col < n {
                let o = at + row * n + col;
                out[o] = finished::<F>(
                    acc[i * per + j],
                    column_bias[j],
                    residual,
                    o,
                    epilogue,
                    activation,
                );
            }
        }
    }
}

/// What one cube of either kernel works on.
#[derive(CubeType)]
struct Work {
    /// The operands' parts of its block.
    a: Span,
    b: Span,
    /// Its block's first row and column.
    m0: usize,
    n0: usize,
    /// Its part of the inner dimension, `start..end`.
    start: usize,
    end: usize,
    /// Its partial product among the output's (`CUBE_POS_Z`: the batch index times the splits
    /// plus the split).
    z: usize,
}

/// This cube's [`Work`] for an output in blocks of `block`, the inner dimension `k` split in
/// `splits` parts of `split_depth`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn cube_work<F: Float>(
    a: &Tensor<F>,
    b: &Tensor<F>,
    m: usize,
    n: usize,
    k: usize,
    split_depth: u32,
    splits: u32,
    #[comptime] block: usize,
) -> Work {
    let (m0, n0) = (CUBE_POS_Y as usize * block, CUBE_POS_X as usize * block);
    let z = CUBE_POS_Z as usize;
    let split = z % splits as usize;
    let (a_span, b_span) = operand_spans(a, b, z / splits as usize, m0, n0, m, n);
    let start = split * split_depth as usize;
    let mut end = start + split_depth as usize;
    if end > k {
        end = k;
    }
    Work {
        a: a_span,
        b: b_span,
        m0,
        n0,
        start,
        end,
        z,
    }
}

/// Where the two operands' parts of the cube's block lie for batch index `batch` (batch axes
/// broadcast as burn's `matmul` does), the block's first row `m0` and column `n0`.
#[cube]
fn operand_spans<F: Float>(
    a: &Tensor<F>,
    b: &Tensor<F>,
    batch: usize,
    m0: usize,
    n0: usize,
    m: usize,
    n: usize,
) -> (Span, Span) {
    let rank = a.rank();
    let mut rest = batch;
    let mut a_at = 0;
    let mut b_at = 0;
    let mut axis = rank - 2;
    while axis > 0 {
        axis -= 1;
        let (a_size, b_size) = (a.shape(axis), b.shape(axis));
        let mut size = a_size;
        if b_size > size {
            size = b_size;
        }
        let coordinate = rest % size;
        rest /= size;
        if a_size > 1 {
            a_at += coordinate * a.stride(axis);
        }
        if b_size > 1 {
            b_at += coordinate * b.stride(axis);
        }
    }
    // Where each operand's block lies: `a`'s rows are its outer axis, `b`'s columns.
    let a_block = Span {
        at: a_at,
        outer_stride: a.stride(rank - 2),
        inner_stride: a.stride(rank - 1),
        outer0: m0,
        outer_len: m,
    };
    let b_block = Span {
        at: b_at,
        outer_stride: b.stride(rank - 1),
        inner_stride: b.stride(rank - 2),
        outer0: n0,
        outer_len: n,
    };

    (a_block, b_block)
}

/// Stage entry `e`'s outer and inner index (`row` entries along the outer axis by `DEPTH`
/// inner indices; an entry is a value, or a quad in [`quad_matmul_kernel`]): with `along_inner`
/// neighbouring threads take neighbouring inner indices (an operand contiguous along them),
/// else neighbouring outer ones, so the loads coalesce either way round.
#[cube]
fn stage_position(
    e: usize,
    #[comptime] row: usize,
    #[comptime] along_inner: bool,
) -> (usize, usize) {
    let (mut o, mut kk) = (e / DEPTH, e % DEPTH);
    if !along_inner {
        o = e % row;
        kk = e / row;
    }
    (o, kk)
}

/// Where stage entry `e` lies in shared memory: `kk · (row + 1) + o` (rows padded by one entry
/// against bank conflicts).
#[cube]
fn stage_slot(e: usize, #[comptime] row: usize, #[comptime] along_inner: bool) -> usize {
    let (o, kk) = stage_position(e, row, along_inner);
    kk * comptime!(row + 1) + o
}

/// Where one operand's part of a cube's block lies: `at` (the batch's offset) and the outer and
/// inner strides place a value (`a`'s rows or `b`'s columns are its outer axis), `outer0` is the
/// block's first outer index, `outer_len` the operand's outer size.
#[derive(CubeType)]
struct Span {
    at: usize,
    outer_stride: usize,
    inner_stride: usize,
    outer0: usize,
    outer_len: usize,
}

/// Value `lane` of stage entry `e` (entries of `width` values: 1, or [`QUAD`]) of an operand
/// (`t`, its block's `span`) for the stage starting at inner index `k0`: outer index
/// `width · o + lane` of the block, zero past the edges (`end`: the split's end).
#[cube]
#[allow(clippy::too_many_arguments)]
fn fetch<F: Float>(
    t: &Tensor<F>,
    span: &Span,
    e: usize,
    k0: usize,
    end: usize,
    #[comptime] row: usize,
    #[comptime] along_inner: bool,
    #[comptime] width: usize,
    #[comptime] lane: usize,
) -> F {
    let (o, kk) = stage_position(e, row, along_inner);
    let (outer, inner) = (span.outer0 + o * width + lane, k0 + kk);
    let mut value = F::new(0.0);
    if outer < span.outer_len && inner < end {
        value = t[span.at + outer * span.outer_stride + inner * span.inner_stride];
    }
    value
}

/// How the inner dimension `k` is split for `blocks` output blocks: (splits, depth of each, a
/// multiple of the stage's).
fn split_inner(blocks: usize, k: usize) -> (usize, usize) {
    let wanted = MIN_CUBES.div_ceil(blocks.max(1));
    let most = (k / MIN_SPLIT_DEPTH).max(1);
    let splits = wanted.min(most);
    let depth = k.div_ceil(splits).div_ceil(DEPTH) * DEPTH;
    (k.div_ceil(depth).max(1), depth)
}

/// Whether the operand's last two axes have `axis` (0: rows, 1: columns) of stride 1.
fn unit_stride(t: &CubeTensor, axis: usize) -> bool {
    let strides = t.meta.strides();
    strides[strides.len() - 2 + axis] == 1
}

/// A product this kernel takes: its operands and how the grid covers the output.
struct Plan<const D: usize> {
    lhs: CubeTensor,
    rhs: CubeTensor,
    /// The output's shape (batch axes broadcast).
    shape: [usize; D],
    /// The batch axes' product.
    batch: usize,
    /// Output blocks along the rows and the columns.
    blocks: (usize, usize),
    /// Cubes along the inner dimension and the depth each sums ([`split_inner`]).
    splits: usize,
    depth: usize,
}

/// The plan for `a · b` in blocks of `size`, or `None` when [`matmul_in`] refuses the operands.
fn plan<const D: usize>(a: &BurnTensor<D>, b: &BurnTensor<D>, size: BlockSize) -> Option<Plan<D>> {
    if D < 2 {
        return None;
    }
    let (ad, bd) = (a.dims(), b.dims());
    let (m, k, n) = (ad[D - 2], ad[D - 1], bd[D - 1]);
    if bd[D - 2] != k || m == 0 || k == 0 || n == 0 {
        return None;
    }
    let mut shape = [0; D];
    for axis in 0..D - 2 {
        let (x, y) = (ad[axis], bd[axis]);
        if x != y && x != 1 && y != 1 {
            return None;
        }
        shape[axis] = x.max(y);
    }
    (shape[D - 2], shape[D - 1]) = (m, n);
    let batch: usize = shape[..D - 2].iter().product();
    let lhs = plain_f32(a.clone())?;
    let rhs = plain_f32(b.clone())?;
    let (rows, cols) = (m.div_ceil(size.side()), n.div_ceil(size.side()));
    let (splits, depth) = split_inner(rows * cols * batch, k);
    let limit = u16::MAX as usize;
    if rows > limit || cols > limit || batch * splits > limit {
        return None;
    }
    Some(Plan {
        lhs,
        rhs,
        shape,
        batch,
        blocks: (rows, cols),
        splits,
        depth,
    })
}

/// The strides of `a` and `b` as [`matmul_in`] reads them, when it takes `a · b` (in blocks of
/// 64); `None` when it refuses them. Checks only; launches nothing.
pub fn taken_strides<const D: usize>(
    a: &BurnTensor<D>,
    b: &BurnTensor<D>,
) -> Option<[Vec<usize>; 2]> {
    let plan = plan(a, b, BlockSize::Of64)?;
    Some([
        plan.lhs.meta.strides().to_vec(),
        plan.rhs.meta.strides().to_vec(),
    ])
}

/// `a · b` for `a [..., m, k]`, `b [..., k, n]` (batch axes equal or 1, as burn's `matmul`
/// broadcasts them) in blocks of `size`, the result contiguous; `None` when an operand is not
/// a plain f32 tensor of this process's GPU backend, the shapes disagree, an axis is empty, or
/// the grid would exceed 65,535 cubes along an axis (the caller runs burn's product).
pub fn matmul_in<const D: usize>(
    a: &BurnTensor<D>,
    b: &BurnTensor<D>,
    size: BlockSize,
) -> Option<BurnTensor<D>> {
    matmul_then(a, b, size, None)
}

/// [`matmul_in`] with an epilogue applied to each value as it is written (`then`, for an
/// output `[m, n]`: the bias, activation and residual of a layer): by the product's kernel, or
/// when the inner dimension is split by the kernel that adds the splits, so one launch or two
/// as without it. The same values as [`matmul_in`] followed by the epilogue's own kernel
/// (`RowEpilogue::after`); `None` also for an epilogue of another shape or a batched product.
pub(super) fn matmul_then<const D: usize>(
    a: &BurnTensor<D>,
    b: &BurnTensor<D>,
    size: BlockSize,
    then: Option<&RowEpilogue>,
) -> Option<BurnTensor<D>> {
    let (out, shape) = product_to(a, b, size, then, None)?;
    Some(to_burn::<2>(out).reshape(shape))
}

/// [`matmul_in`] of `a [m, k]` and `b [k, n]` written into `out`, a contiguous `[m, n]` tensor
/// of the same device (rows of a larger buffer: the training attention's packed weight gradient,
/// one block's rows per product, so that no concatenation copies the blocks together); the
/// same launches and values. `None`, writing nothing, where [`matmul_in`] refuses the operands
/// or `out` is not such a tensor.
pub(super) fn matmul_into(
    a: &BurnTensor<2>,
    b: &BurnTensor<2>,
    size: BlockSize,
    out: &CubeTensor,
) -> Option<()> {
    product_to(a, b, size, None, Some(out)).map(|_| ())
}

/// The product as [`matmul_then`] computes it, into `into` when given (checked: one batch, its
/// shape `[m, n]`, contiguous, on the operands' device), else into a new contiguous buffer;
/// with the output's shape.
fn product_to<const D: usize>(
    a: &BurnTensor<D>,
    b: &BurnTensor<D>,
    size: BlockSize,
    then: Option<&RowEpilogue>,
    into: Option<&CubeTensor>,
) -> Option<(CubeTensor, [usize; D])> {
    let Plan {
        lhs,
        rhs,
        shape,
        batch,
        blocks: (rows, cols),
        splits,
        depth,
    } = plan(a, b, size)?;
    let (m, k, n) = (shape[D - 2], a.dims()[D - 1], shape[D - 1]);
    if then.is_some_and(|t| batch != 1 || t.shape != [m, n]) {
        return None;
    }
    if let Some(into) = into
        && (batch != 1
            || into.meta.shape().to_vec() != [m, n]
            || !into.is_contiguous()
            || into.dtype != lhs.dtype
            || into.device != lhs.device)
    {
        return None;
    }
    // Not split, the product's kernel writes the output itself.
    let product = match into {
        Some(into) if splits == 1 => into.clone(),
        _ => empty_shaped(&lhs, vec![batch * splits, m, n]),
    };
    // Split, the partial products are written as they are and the kernel adding them applies
    // the epilogue.
    let (in_product, in_sums) = if splits == 1 {
        (then, None)
    } else {
        (None, then)
    };
    let (bias, residual, epilogue, activation) = RowEpilogue::arguments(in_product, &lhs);
    // Each stage read along the operand's unit stride: `a`'s inner axis (k, its columns) or else
    // its rows; `b`'s columns (its outer axis) or else its inner rows.
    let (a_along_inner, b_along_inner) = (unit_stride(&lhs, 1), !unit_stride(&rhs, 1));
    let (count, dim) = (
        CubeCount::Static(cols as u32, rows as u32, (batch * splits) as u32),
        CubeDim::new_2d(SIDE as u32, SIDE as u32),
    );
    match size.quads() {
        Some(quads) => quad_matmul_kernel::launch(
            &product.client,
            count,
            dim,
            lhs.into_tensor_arg(),
            rhs.into_tensor_arg(),
            product.clone().into_tensor_arg(),
            bias.into_tensor_arg(),
            residual.into_tensor_arg(),
            epilogue,
            activation,
            m as u32,
            n as u32,
            k as u32,
            depth as u32,
            splits as u32,
            quads,
            a_along_inner,
            b_along_inner,
            F32,
        ),
        None => tiled_matmul_kernel::launch(
            &product.client,
            count,
            dim,
            lhs.into_tensor_arg(),
            rhs.into_tensor_arg(),
            product.clone().into_tensor_arg(),
            bias.into_tensor_arg(),
            residual.into_tensor_arg(),
            epilogue,
            activation,
            m as u32,
            n as u32,
            k as u32,
            depth as u32,
            splits as u32,
            size.per(),
            a_along_inner,
            b_along_inner,
            F32,
        ),
    }
    // The splits' partial products added in order (one split: the product itself).
    let out = match into {
        Some(into) if splits > 1 => {
            add_grouped_blocks_into(product, [batch, splits, m * n], in_sums, into.clone());
            into.clone()
        }
        Some(_) => product,
        None => add_grouped_blocks(product, [batch, splits, m * n], in_sums),
    };
    Some((out, shape))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};

    use crate::kernels::gpu::{stored_as, values};

    /// The f64 product of `a [batch_a, m, k]` and `b [batch_b, k, n]` (host values, batch axes
    /// broadcast) and each value's bound: f32 rounding of a `k`-term sum in any order plus the
    /// splits' additions, `(k + splits)·2⁻²⁴·Σ|terms|`.
    fn host(
        a: &[f32],
        b: &[f32],
        [batch_a, batch_b, m, k, n]: [usize; 5],
        splits: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let batch = batch_a.max(batch_b);
        let (mut want, mut bound) = (Vec::new(), Vec::new());
        for s in 0..batch {
            let (sa, sb) = (s % batch_a, s % batch_b);
            for i in 0..m {
                for j in 0..n {
                    let terms = (0..k)
                        .map(|l| a[(sa * m + i) * k + l] as f64 * b[(sb * k + l) * n + j] as f64);
                    want.push(terms.clone().sum::<f64>());
                    bound.push(
                        (k + splits) as f64 * 2f64.powi(-24) * terms.map(f64::abs).sum::<f64>(),
                    );
                }
            }
        }
        (want, bound)
    }

    /// On wgpu, against the f64 product, in every block size (64, 32, 128; 64 and 128 as
    /// quads): shapes not multiples of a
    /// block or a stage, smaller than one, a weight gradient's (few blocks, a deep inner
    /// dimension: split, two launches), both operands in either layout (transposed views read
    /// at their strides), batch axes equal and broadcast either way; one launch when not split.
    #[test]
    fn tiled_product_is_the_f64_product_within_rounding() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(17);
        // (batch of a, batch of b, m, k, n)
        for dims in [
            [1, 1, 70, 96, 50],
            [1, 1, 3, 5, 2],
            [1, 1, 130, 40, 65],
            [1, 1, 96, 1568, 80],
            [3, 3, 33, 20, 70],
            [4, 1, 20, 31, 17],
            [1, 2, 17, 9, 66],
        ] {
            let [batch_a, batch_b, m, k, n] = dims;
            let a = Tensor::<3>::random([batch_a, m, k], Distribution::Normal(0.0, 1.0), &device);
            let b = Tensor::<3>::random([batch_b, k, n], Distribution::Normal(0.0, 1.0), &device);
            let batch = batch_a.max(batch_b);
            for size in BlockSize::ALL {
                let blocks = m.div_ceil(size.side()) * n.div_ceil(size.side()) * batch;
                let splits = split_inner(blocks, k).0;
                let (want, bound) = host(&values(a.clone()), &values(b.clone()), dims, splits);
                // Each operand stored row-major and column-major.
                let flip = |t: &Tensor<3>| stored_as(t.clone(), [0, 2, 1]);
                for (la, lb) in [(false, false), (true, false), (false, true), (true, true)] {
                    let a = if la { flip(&a) } else { a.clone() };
                    let b = if lb { flip(&b) } else { b.clone() };
                    let _ = values(matmul_in(&a, &b, size).unwrap());
                    let profiler = crate::device::kernel_profile::KernelProfiler::start("tiled");
                    let got = matmul_in(&a, &b, size).unwrap();
                    let launches = profiler.finish().stages[0].launches;
                    assert_eq!(got.dims(), [batch, m, n]);
                    assert_eq!(launches, if splits > 1 { 2 } else { 1 }, "{dims:?}");
                    for (i, g) in values(got).iter().enumerate() {
                        assert!(
                            (*g as f64 - want[i]).abs() <= bound[i],
                            "{dims:?} {size:?} ({la}, {lb}) [{i}]: {g} vs {}",
                            want[i]
                        );
                    }
                }
            }
        }
        assert!(
            split_inner(2 * 16, 1568).0 > 1,
            "a weight gradient is split"
        );
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        let on_cpu = Tensor::<2>::ones([4, 4], &cpu);
        assert!(matmul_in(&on_cpu, &on_cpu, BlockSize::Of64).is_none());
        let (a, b) = (
            Tensor::<2>::ones([4, 3], &device),
            Tensor::<2>::ones([4, 3], &device),
        );
        assert!(
            matmul_in(&a, &b, BlockSize::Of64).is_none(),
            "inner sizes disagree"
        );
        let (a, b) = (
            Tensor::<3>::ones([2, 4, 3], &device),
            Tensor::<3>::ones([3, 3, 4], &device),
        );
        assert!(
            matmul_in(&a, &b, BlockSize::Of64).is_none(),
            "batch axes disagree"
        );
    }

    /// On wgpu, a product written into rows of a larger buffer (a view: the packed weight
    /// gradient's block), in every block size, split (a weight gradient's deep inner dimension)
    /// and not, an operand transposed: bit for bit [`matmul_in`], in as many launches, the
    /// buffer's other rows untouched (NaN before and after). A destination of another shape, or
    /// not contiguous, is refused without a launch.
    #[test]
    fn a_product_written_into_rows_of_a_buffer_is_the_product() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(23);
        // (m, k, n, rows of the buffer before the destination's, after)
        for (m, k, n, before, after) in [(64, 96, 64, 64, 64), (64, 1568, 64, 0, 128)] {
            let a =
                Tensor::<2>::random([k, m], Distribution::Normal(0.0, 1.0), &device).transpose();
            let b = Tensor::<2>::random([k, n], Distribution::Normal(0.0, 1.0), &device);
            for size in BlockSize::ALL {
                let want = values(matmul_in(&a, &b, size).unwrap());
                let profiler = crate::device::kernel_profile::KernelProfiler::start("plain");
                let _ = values(matmul_in(&a, &b, size).unwrap());
                let plain = profiler.finish().stages[0].launches;
                let buffer = Tensor::<2>::full([before + m + after, n], f32::NAN, &device);
                let rows = crate::kernels::gpu::cube(buffer.clone().narrow(0, before, m));
                let profiler = crate::device::kernel_profile::KernelProfiler::start("into");
                assert!(matmul_into(&a, &b, size, &rows).is_some(), "{size:?}");
                let all = values(buffer);
                assert_eq!(profiler.finish().stages[0].launches, plain, "{size:?}");
                let (head, rest) = all.split_at(before * n);
                let (got, tail) = rest.split_at(m * n);
                let differ = got.iter().zip(&want).filter(|(g, w)| g != w).count();
                assert_eq!(differ, 0, "{size:?} ({m}, {k}, {n}): values differ");
                assert!(head.iter().chain(tail).all(|v| v.is_nan()), "{size:?}");
            }
            let wrong = crate::kernels::gpu::cube(Tensor::<2>::zeros([m, n + 1], &device));
            let transposed =
                crate::kernels::gpu::cube(Tensor::<2>::zeros([n, m], &device).transpose());
            for out in [wrong, transposed] {
                let profiler = crate::device::kernel_profile::KernelProfiler::start("refused");
                assert!(matmul_into(&a, &b, BlockSize::Of64, &out).is_none());
                assert_eq!(
                    profiler.finish().stages.first().map_or(0, |s| s.launches),
                    0
                );
            }
        }
    }

    /// On wgpu, a layer's epilogue applied as the product is written, in every block size, each
    /// activation with and without a residual, the weight stored either way round: bit for bit the
    /// product followed by the epilogue's own kernel (`RowEpilogue::after`), in one launch where
    /// the product is one (the epilogue in the product's kernel) and in two where the inner
    /// dimension is split (in the kernel adding the splits), one fewer than without it. A bias or
    /// residual of another shape, or a batched product, is refused.
    #[test]
    fn the_epilogue_in_the_product_gives_the_product_then_the_epilogue() {
        use crate::kernels::Activation;
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(29);
        let count = |run: &dyn Fn() -> BurnTensor<2>| {
            let _ = values(run());
            let profiler = crate::device::kernel_profile::KernelProfiler::start("epilogue");
            let got = run();
            (values(got), profiler.finish().stages[0].launches)
        };
        // (rows, inner, columns): one split, then a deep inner dimension (split).
        for [m, k, n] in [[70, 40, 36], [40, 600, 24]] {
            let x = BurnTensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
            let w = BurnTensor::<2>::random([k, n], Distribution::Normal(0.0, 0.3), &device);
            let bias = BurnTensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &device);
            let residual = BurnTensor::<2>::random([m, n], Distribution::Normal(0.0, 1.0), &device);
            for w in [w.clone(), stored_as(w, [1, 0])] {
                for size in BlockSize::ALL {
                    let splits =
                        split_inner(m.div_ceil(size.side()) * n.div_ceil(size.side()), k).0;
                    assert_eq!(splits > 1, k == 600, "{size:?}");
                    for activation in Activation::ALL {
                        for r in [None, Some(&residual)] {
                            let then = RowEpilogue::new(&bias, r, activation, [m, n]).unwrap();
                            let (got, fused) =
                                count(&|| matmul_then(&x, &w, size, Some(&then)).unwrap());
                            let (want, apart) = count(&|| {
                                let product = matmul_in(&x, &w, size).unwrap();
                                then.after(product).unwrap()
                            });
                            let what =
                                format!("{m}×{k}×{n} {size:?} {activation:?} {}", r.is_some());
                            assert_eq!(got, want, "{what}");
                            assert_eq!(fused, splits.min(2), "{what}");
                            assert_eq!(apart, fused + 1, "{what}");
                        }
                    }
                }
            }
            let wrong_bias = BurnTensor::<1>::zeros([n + 1], &device);
            assert!(RowEpilogue::new(&wrong_bias, None, Activation::Relu, [m, n]).is_none());
            let small = BurnTensor::<2>::zeros([m - 1, n], &device);
            assert!(RowEpilogue::new(&bias, Some(&small), Activation::Relu, [m, n]).is_none());
            let then = RowEpilogue::new(&bias, None, Activation::Relu, [m, n]).unwrap();
            let batched = BurnTensor::<3>::zeros([2, m, k], &device);
            let weights = BurnTensor::<3>::zeros([2, k, n], &device);
            assert!(matmul_then(&batched, &weights, BlockSize::Of64, Some(&then)).is_none());
        }
    }
}
