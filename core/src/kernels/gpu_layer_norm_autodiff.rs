//! Layer norm over the last axis as one autodiff operation on the GPU backends (CubeCL: wgpu,
//! CUDA), for training.
//!
//! burn's autodiff records a tracked `layer_norm` as its decomposition: nine kernels forward and
//! some twenty backward (each step's gradient, the broadcasts' sums, the zero-filled buffers
//! they accumulate into), about thirty launches per norm and step; the official network's 21
//! norms were some 600 of a training step's 2,400 launches on a GPU (`hvq bench --kernels`).
//! Here the forward is one kernel that also keeps the normalised values x̂ and 1/σ per row, and
//! the backward two: one cube of threads per row (as the inference kernel, `gpu_layer_norm`:
//! one thread per row left a large GPU idle, ~16 ms of an H200's b8 step in these two) for
//!
//! `∂x = (g − mean(g) − x̂ · mean(g ⊙ x̂)) / σ` with `g = ∂y ⊙ γ`,
//!
//! and one thread per column and block of rows for the partial sums of `∂γ = Σ_rows ∂y ⊙ x̂`,
//! `∂β = Σ_rows ∂y`, whose blocks one kernel adds up (`gpu_column_sums::add_blocks`; f32
//! sums, as the CPU's form sums in f64: the formulas are the CPU operation's, `layer_norm.rs`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::{Shape, Tensor as BurnTensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::gpu::{
    COLUMN_SUM_ROWS, F32, ROW_THREADS, contiguous, cube, cube_sum, empty_like, grid, recorded,
    row_cubes, row_of_cube, to_burn, tracked_f32_on_gpu, tracked_parts,
};
use super::gpu_column_sums::add_blocks;
use super::gpu_layer_norm::row_statistics;

/// One cube per row, as the inference kernel (`gpu_layer_norm`): `(x − mean)/√(var + ε)·γ + β`,
/// keeping x̂ and 1/σ for the backward.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn forward_kernel<F: Float>(
    x: &Tensor<F>,
    gamma: &Tensor<F>,
    beta: &Tensor<F>,
    y: &mut Tensor<F>,
    xhat: &mut Tensor<F>,
    rstd: &mut Tensor<F>,
    rows: u32,
    row: u32,
    eps: f32,
    #[define(F)] _dtype: ElemType,
) {
    let thread = UNIT_POS_X as usize;
    let (r, n) = row_of_cube(rows, row);
    let base = r * row as usize;
    let mut partial = Shared::<[F]>::new_slice(ROW_THREADS);
    let (mean, denom) = row_statistics::<F>(x, &mut partial, thread, base, n, row, eps);
    if thread == 0 && n > 0 {
        rstd[r] = F::new(1.0) / denom;
    }
    let mut j = thread;
    while j < n {
        let h = (x[base + j] - mean) / denom;
        xhat[base + j] = h;
        y[base + j] = h * gamma[j] + beta[j];
        j += ROW_THREADS;
    }
}

/// One cube per row: the row's sums of `g = ∂y ⊙ γ` and `g ⊙ x̂` (each thread its every
/// `ROW_THREADS`-th column, then the cube's pairwise sums), then each thread's share of ∂x.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn input_gradient_kernel<F: Float>(
    dy: &Tensor<F>,
    xhat: &Tensor<F>,
    rstd: &Tensor<F>,
    gamma: &Tensor<F>,
    dx: &mut Tensor<F>,
    rows: u32,
    row: u32,
    #[define(F)] _dtype: ElemType,
) {
    let thread = UNIT_POS_X as usize;
    let (r, n) = row_of_cube(rows, row);
    let base = r * row as usize;
    let mut partial = Shared::<[F]>::new_slice(ROW_THREADS);
    let mut sum_g = F::new(0.0);
    let mut sum_gh = F::new(0.0);
    let mut j = thread;
    while j < n {
        let g = dy[base + j] * gamma[j];
        sum_g += g;
        sum_gh += g * xhat[base + j];
        j += ROW_THREADS;
    }
    let mean_g = cube_sum::<F>(&mut partial, thread, sum_g, ROW_THREADS) / F::cast_from(row);
    let mean_gh = cube_sum::<F>(&mut partial, thread, sum_gh, ROW_THREADS) / F::cast_from(row);
    let mut j = thread;
    while j < n {
        let inv = rstd[r];
        let g = dy[base + j] * gamma[j];
        dx[base + j] = (g - mean_g - xhat[base + j] * mean_gh) * inv;
        j += ROW_THREADS;
    }
}

#[cube(launch)]
fn parameter_gradient_kernel<F: Float>(
    dy: &Tensor<F>,
    xhat: &Tensor<F>,
    partial: &mut Tensor<F>,
    rows: u32,
    row: u32,
    #[define(F)] _dtype: ElemType,
) {
    let n = row as usize;
    // `partial [blocks, 2, row]`: ∂γ's partial sums, then ∂β's, for each block of rows.
    if ABSOLUTE_POS >= partial.len() / 2 {
        terminate!();
    }
    let block = ABSOLUTE_POS / n;
    let j = ABSOLUTE_POS % n;
    let start = block * COLUMN_SUM_ROWS;
    let mut sum_gamma = F::new(0.0);
    let mut sum_beta = F::new(0.0);
    #[unroll]
    for i in 0..COLUMN_SUM_ROWS {
        let r = start + i;
        if r < rows as usize {
            let d = dy[r * n + j];
            sum_gamma += d * xhat[r * n + j];
            sum_beta += d;
        }
    }
    partial[(block * 2) * n + j] = sum_gamma;
    partial[(block * 2 + 1) * n + j] = sum_beta;
}

/// `LayerNorm(x) = (x − mean)/√(var + ε)·γ + β` over the last axis (biased variance) as one
/// autodiff operation; `None` when `x` is not an f32 tensor tracked by autodiff on a GPU
/// backend, or `gamma`, `beta` are not of the last axis' length (the caller composes it).
pub fn layer_norm<const D: usize>(
    x: &BurnTensor<D>,
    gamma: &BurnTensor<1>,
    beta: &BurnTensor<1>,
    eps: f64,
) -> Option<BurnTensor<D>> {
    let row = x.dims()[D - 1];
    if row == 0 || gamma.dims() != [row] || beta.dims() != [row] || !tracked_f32_on_gpu(x) {
        return None;
    }
    let shape = x.shape();
    // γ and β enter at x's rank (as burn's own layer norm broadcasts them), so their gradients
    // flow back through the reshape to the parameters.
    let (x, x_node) = tracked_parts(x.clone())?;
    let (gamma, gamma_node) = tracked_parts(gamma.clone().unsqueeze::<D>())?;
    let (beta, beta_node) = tracked_parts(beta.clone().unsqueeze::<D>())?;
    let rows = x.meta.num_elements() / row;
    let y = empty_like(&x);
    let xhat = empty_like(&x);
    let rstd =
        empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), [rows].into(), x.dtype);
    let (cube_count, cube_dim) = row_cubes(&x, rows);
    let client = x.client.clone();
    forward_kernel::launch(
        &client,
        cube_count,
        cube_dim,
        x.into_tensor_arg(),
        gamma.clone().into_tensor_arg(),
        beta.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        xhat.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        rows as u32,
        row as u32,
        eps as f32,
        F32,
    );
    let op = LayerNormOp::<D> { row };
    let saved = Saved {
        xhat,
        rstd,
        gamma,
        shape,
    };
    Some(recorded(op, [x_node, gamma_node, beta_node], saved, y))
}

/// The autodiff node: parents x, γ, β (the last two at x's rank).
#[derive(Debug)]
struct LayerNormOp<const D: usize> {
    row: usize,
}

/// What the backward needs: x̂, 1/σ per row, γ, and x's shape.
#[derive(Clone, Debug)]
struct Saved {
    xhat: CubeTensor,
    rstd: CubeTensor,
    gamma: CubeTensor,
    shape: Shape,
}

impl<const D: usize> Backward<CubeBackend, 3> for LayerNormOp<D> {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let Saved {
            xhat,
            rstd,
            gamma,
            shape,
        } = ops.state;
        let row = self.row;
        let rows = shape.num_elements() / row;
        let dy = contiguous(grads.consume::<CubeBackend>(&ops.node));
        let [px, pg, pb] = ops.parents;
        let client = dy.client.clone();
        if let Some(node) = px {
            let dx = empty_like(&xhat);
            let (cube_count, cube_dim) = row_cubes(&dy, rows);
            input_gradient_kernel::launch(
                &client,
                cube_count,
                cube_dim,
                dy.clone().into_tensor_arg(),
                xhat.clone().into_tensor_arg(),
                rstd.into_tensor_arg(),
                gamma.clone().into_tensor_arg(),
                dx.clone().into_tensor_arg(),
                rows as u32,
                row as u32,
                F32,
            );
            grads.register::<CubeBackend>(node.id, dx);
        }
        if pg.is_some() || pb.is_some() {
            // γ's and β's gradients at their rank-D shape `[1, …, 1, row]`, as γ itself.
            let blocks = rows.div_ceil(COLUMN_SUM_ROWS);
            let partial = empty_device_contiguous_dtype(
                client.clone(),
                dy.device.clone(),
                [blocks, 2, row].into(),
                dy.dtype,
            );
            let (cube_count, cube_dim) = grid(&dy, blocks * row);
            parameter_gradient_kernel::launch(
                &client,
                cube_count,
                cube_dim,
                dy.into_tensor_arg(),
                xhat.into_tensor_arg(),
                partial.clone().into_tensor_arg(),
                rows as u32,
                row as u32,
                F32,
            );
            // The blocks added column by column: `[2·row]`, ∂γ's then ∂β's.
            let flat = cube(to_burn::<3>(partial).reshape([blocks, 2 * row]));
            let totals = to_burn::<1>(add_blocks(flat)).reshape([2, row]);
            let mut dims = [1; D];
            dims[D - 1] = row;
            let part = |i: usize| cube(totals.clone().narrow(0, i, 1).reshape(dims));
            if let Some(node) = pg {
                grads.register::<CubeBackend>(node.id, part(0));
            }
            if let Some(node) = pb {
                grads.register::<CubeBackend>(node.id, part(1));
            }
        }
    }
}
