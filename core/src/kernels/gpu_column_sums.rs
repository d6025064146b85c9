//! Column sums of a `[rows, columns]` tensor on the GPU (CubeCL: wgpu, CUDA), for the training
//! operations' bias and scale gradients (`∂b = Σ_rows ∂y`).
//!
//! burn's reduction, built without its autotuner as hvq is, gives each column one thread that
//! walks its 196·B rows alone: a few hundred threads, each waiting on one load after another.
//! The backward of an official training step ran 78 of them, 5.4 ms of an H200's kernel time at
//! batch 8 (2026-12-04 profile), on a few megabytes. Here one thread per column and block of
//! [`COLUMN_SUM_ROWS`] rows adds its block (the loads issued together: the loop is unrolled),
//! writing `[blocks, columns]` partial sums, and one thread per column adds its blocks in
//! order. Kernels that produce the partial sums themselves (the ReLU's mask, the layer norm's
//! scale gradient) hand them to [`add_blocks`]; the tiled product's split inner dimension is
//! added by the same kernel ([`add_grouped_blocks`]).

use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::zspace::metadata::Metadata;

use super::gpu::{COLUMN_SUM_ROWS, F32, contiguous, empty_shaped, grid};
use super::gpu_activations::{RowEpilogue, finished};

#[cube(launch)]
fn block_sums_kernel<F: Float>(
    x: &Tensor<F>,
    partial: &mut Tensor<F>,
    rows: u32,
    #[define(F)] _dtype: ElemType,
) {
    if ABSOLUTE_POS >= partial.len() {
        terminate!();
    }
    let columns = partial.shape(1);
    let block = ABSOLUTE_POS / columns;
    let column = ABSOLUTE_POS % columns;
    let start = block * COLUMN_SUM_ROWS;
    let mut sum = F::new(0.0);
    #[unroll]
    for i in 0..COLUMN_SUM_ROWS {
        let r = start + i;
        if r < rows as usize {
            sum += x[r * columns + column];
        }
    }
    partial[ABSOLUTE_POS] = sum;
}

/// `sums[g, c] = Σ_b partial[g, b, c]`, the blocks in order, then the epilogue (`finished`:
/// none for column sums; a layer's bias, activation and residual for a split product's output
/// `[m, n]`, whose column is the position modulo the bias's length).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn add_blocks_kernel<F: Float>(
    partial: &Tensor<F>,
    sums: &mut Tensor<F>,
    bias: &Tensor<F>,
    residual: &Tensor<F>,
    epilogue: u32,
    activation: u32,
    blocks: u32,
    columns: u32,
    #[define(F)] _dtype: ElemType,
) {
    if ABSOLUTE_POS >= sums.len() {
        terminate!();
    }
    let (blocks, columns) = (blocks as usize, columns as usize);
    let (group, column) = (ABSOLUTE_POS / columns, ABSOLUTE_POS % columns);
    let mut sum = F::new(0.0);
    for block in 0..blocks {
        sum += partial[(group * blocks + block) * columns + column];
    }
    let mut b = F::new(0.0);
    if epilogue > 0 {
        b = bias[ABSOLUTE_POS % bias.len()];
    }
    sums[ABSOLUTE_POS] = finished::<F>(sum, b, residual, ABSOLUTE_POS, epilogue, activation);
}

/// `Σ_rows t`, `[columns]`, of an f32 `t [rows, columns]` of a GPU backend (copied first when
/// not contiguous): each block of [`COLUMN_SUM_ROWS`] rows summed in row order, then the blocks
/// in order. One launch for at most that many rows, else two.
pub(super) fn column_sums(t: CubeTensor) -> CubeTensor {
    let t = contiguous(t);
    let (rows, columns) = (t.meta.shape()[0], t.meta.shape()[1]);
    let blocks = rows.div_ceil(COLUMN_SUM_ROWS).max(1);
    let partial = empty_shaped(&t, vec![blocks, columns]);
    let (cube_count, cube_dim) = grid(&partial, blocks * columns);
    block_sums_kernel::launch(
        &t.client,
        cube_count,
        cube_dim,
        t.clone().into_tensor_arg(),
        partial.clone().into_tensor_arg(),
        rows as u32,
        F32,
    );
    add_blocks(partial)
}

/// `Σ_blocks partial`, `[columns]`, of contiguous f32 partial sums `[blocks, columns]`, the
/// blocks added in order (one block: its row, no launch).
pub(super) fn add_blocks(partial: CubeTensor) -> CubeTensor {
    let (blocks, columns) = (partial.meta.shape()[0], partial.meta.shape()[1]);
    let mut sums = add_grouped_blocks(partial, [1, blocks, columns], None);
    sums.meta = Box::new(Metadata::new([columns], [1]));
    sums
}

/// `Σ_blocks partial`, `[groups, columns]`, of contiguous f32 partial sums laid out
/// `[groups, blocks, columns]` (whatever the tensor's shape says), each group's blocks added in
/// order (one block and no epilogue: the buffer itself, no launch), then the epilogue `then`
/// applied to each sum, if any. The tiled product's splits of the inner dimension are added by
/// it too, with the layer's epilogue (one group, `columns` the output's `m·n` values).
pub(super) fn add_grouped_blocks(
    partial: CubeTensor,
    [groups, blocks, columns]: [usize; 3],
    then: Option<&RowEpilogue>,
) -> CubeTensor {
    if blocks == 1 && then.is_none() {
        let mut sums = partial;
        sums.meta = Box::new(Metadata::new([groups, columns], [columns, 1]));
        return sums;
    }
    let sums = empty_shaped(&partial, vec![groups, columns]);
    add_grouped_blocks_into(partial, [groups, blocks, columns], then, sums.clone());
    sums
}

/// [`add_grouped_blocks`] written into `sums`, a contiguous buffer of `groups · columns` values
/// (a view into a larger one: the rows of a packed weight's gradient), in one launch.
pub(super) fn add_grouped_blocks_into(
    partial: CubeTensor,
    [groups, blocks, columns]: [usize; 3],
    then: Option<&RowEpilogue>,
    sums: CubeTensor,
) {
    let (cube_count, cube_dim) = grid(&sums, groups * columns);
    let (bias, residual, epilogue, activation) = RowEpilogue::arguments(then, &partial);
    add_blocks_kernel::launch(
        &sums.client,
        cube_count,
        cube_dim,
        partial.into_tensor_arg(),
        sums.clone().into_tensor_arg(),
        bias.into_tensor_arg(),
        residual.into_tensor_arg(),
        epilogue,
        activation,
        blocks as u32,
        columns as u32,
        F32,
    );
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};

    use crate::kernels::gpu::{plain_f32, to_burn, values};

    /// On wgpu, against the f64 sums on the host: row counts below, at and past one block, and
    /// ragged (the last block short), a column count that is no multiple of a cube; a strided
    /// (transposed) input is summed as its values. Each sum within `(block + blocks)·2⁻²⁴` of
    /// the sum of its terms' magnitudes (the additions' roundings), and the launches: one block
    /// one launch, more two.
    #[test]
    fn column_sums_give_the_f64_sums() {
        let _generator = crate::test_rng::lock();
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        for (rows, columns, transposed) in [
            (1, 5, false),
            (COLUMN_SUM_ROWS, 300, false),
            (COLUMN_SUM_ROWS + 1, 7, false),
            (1568, 257, false),
            (75, 33, true),
        ] {
            let shape = if transposed {
                [columns, rows]
            } else {
                [rows, columns]
            };
            let t = Tensor::<2>::random(shape, Distribution::Normal(0.5, 2.0), &device);
            let t = if transposed { t.transpose() } else { t };
            // Logical order, [rows, columns], whatever the layout.
            let host = values(t.clone());
            let inner = plain_f32(t).unwrap();
            let profiler = crate::device::kernel_profile::KernelProfiler::start("sums");
            let got = values(to_burn::<1>(column_sums(inner)));
            let launches = profiler.finish().stages[0].launches;
            let blocks = rows.div_ceil(COLUMN_SUM_ROWS);
            assert_eq!(
                launches,
                if blocks == 1 { 1 } else { 2 } + transposed as usize
            );
            let additions = (COLUMN_SUM_ROWS + blocks) as f64;
            for c in 0..columns {
                let column = (0..rows).map(|r| host[r * columns + c] as f64);
                let want: f64 = column.clone().sum();
                let magnitude: f64 = column.map(f64::abs).sum();
                let bound = additions * 2f64.powi(-24) * magnitude;
                let g = got[c] as f64;
                assert!(
                    (g - want).abs() <= bound,
                    "{rows}x{columns} [{c}]: {g} vs {want}"
                );
            }
        }
    }
}
