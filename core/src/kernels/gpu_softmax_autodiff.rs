//! Softmax over the last axis as one autodiff operation on the GPU backends (CubeCL: wgpu,
//! CUDA), for training.
//!
//! burn's autodiff records a tracked softmax as its decomposition (maximum, subtract, `exp`,
//! sum, divide, each with its backward), and attention's scale as one more; the transformer's
//! attention takes one per layer and step. Here the forward is the inference kernel
//! (`gpu_softmax`: one thread per row, the scale inside) and the backward one kernel, one
//! thread per row: `∂x = scale · y ⊙ (∂y − Σ_row ∂y ⊙ y)`, the CPU operation's formula
//! (`softmax_autodiff.rs`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::gpu::{F32, Tracked, empty_like, grid, recorded, rows, tracked_f32_on_gpu};

/// `dy`'s rows lie `pitch` values apart (CUDA pads burn's rows), `y`'s and `dx`'s `row` apart.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn backward_kernel<F: Float>(
    dy: &Tensor<F>,
    y: &Tensor<F>,
    dx: &mut Tensor<F>,
    rows: u32,
    row: u32,
    pitch: u32,
    scale: f32,
    #[define(F)] _dtype: ElemType,
) {
    let r = ABSOLUTE_POS;
    if r >= rows as usize {
        terminate!();
    }
    let n = row as usize;
    let (base, from) = (r * n, r * pitch as usize);
    let mut dot = F::new(0.0);
    for j in 0..n {
        dot += dy[from + j] * y[base + j];
    }
    let s = F::cast_from(scale);
    for j in 0..n {
        dx[base + j] = y[base + j] * (dy[from + j] - dot) * s;
    }
}

/// `softmax(scale · x)` over the last axis (`scale > 0`) as one autodiff operation; `None` when
/// `x` is not an f32 tensor tracked by autodiff on a GPU backend without gradient checkpointing
/// (or its rows are empty), and the caller composes it.
pub fn softmax<const D: usize>(x: &BurnTensor<D>, scale: f32) -> Option<BurnTensor<D>> {
    let row = x.dims()[D - 1];
    let applies = row > 0 && tracked_f32_on_gpu(x);
    if !applies {
        return None;
    }
    let (inner, node) = x.clone().try_into_primitive::<Tracked>().ok()?.into_parts();
    let y = super::gpu_softmax::launch(inner, row, scale);
    let op = SoftmaxOp { row, scale };
    Some(recorded(op, [node], y.clone(), y))
}

/// The autodiff node; its state is the output `y`.
#[derive(Debug)]
struct SoftmaxOp {
    row: usize,
    scale: f32,
}

impl Backward<CubeBackend, 1> for SoftmaxOp {
    type State = CubeTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y = ops.state;
        let (dy, pitch) = rows(grads.consume::<CubeBackend>(&ops.node));
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let rows = y.meta.num_elements() / self.row;
            let dx = empty_like(&y);
            let (cube_count, cube_dim) = grid(&y, rows);
            backward_kernel::launch(
                &y.client.clone(),
                cube_count,
                cube_dim,
                dy.into_tensor_arg(),
                y.into_tensor_arg(),
                dx.clone().into_tensor_arg(),
                rows as u32,
                self.row as u32,
                pitch as u32,
                self.scale,
                F32,
            );
            grads.register::<CubeBackend>(node.id, dx);
        }
    }
}
