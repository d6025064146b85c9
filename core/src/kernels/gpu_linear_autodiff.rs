//! A linear layer with its bias, activation and residual as one autodiff operation on the GPU
//! backends (CubeCL: wgpu, CUDA), for training.
//!
//! Recorded by burn's autodiff, `r + act(x·Wᵀ + b)` with `W` stored `(out, in)` as PyTorch
//! does is the product, the bias addition, the activation (two launches for a ReLU), the
//! residual addition forward; backward the bias's broadcast summed in two reductions, the
//! ReLU's mask in two launches, the two products, and `W`'s gradient comes out as the
//! transposed view of `xᵀ·∂y` (`[in, out]`), which the optimiser copies to flatten it. With the
//! official network's 28 such layers that was some 160 launches of a training step. Here the
//! forward is the product and one kernel for the bias, activation and residual, or one launch
//! where hvq's tiled kernel takes the product and applies them as it writes (the inference
//! form, `products::linear_activated`); the backward is, for a ReLU, one kernel that masks
//! `∂y` and sums it over blocks of rows, then one kernel adds the blocks for `∂b` (for the
//! identity both are [`gpu_column_sums`](super::gpu_column_sums)'); `∂W = ∂yᵀ·x` straight
//! into `W`'s own `(out, in)` layout and `∂x = ∂y·W`, one product each; the residual's gradient
//! is `∂y` itself.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::CubeBackend;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::gpu::{
    COLUMN_SUM_ROWS, F32, contiguous, cube, grid, node_array, recorded, to_burn,
    tracked_f32_on_gpu, tracked_parts,
};
use super::gpu_column_sums::{add_blocks, column_sums};
use super::{Activation, products};

#[cube(launch)]
fn relu_bias_gradient_kernel<F: Float>(
    dy: &Tensor<F>,
    y: &Tensor<F>,
    masked: &mut Tensor<F>,
    partial: &mut Tensor<F>,
    rows: u32,
    columns: u32,
    #[define(F)] _dtype: ElemType,
) {
    let n = columns as usize;
    if ABSOLUTE_POS >= partial.len() {
        terminate!();
    }
    let block = ABSOLUTE_POS / n;
    let column = ABSOLUTE_POS % n;
    let start = block * COLUMN_SUM_ROWS;
    let mut sum = F::new(0.0);
    #[unroll]
    for i in 0..COLUMN_SUM_ROWS {
        let r = start + i;
        if r < rows as usize {
            let at = r * n + column;
            // ReLU's gradient: ∂y where the output is positive, else zero (burn's `y ≤ 0` mask).
            let mut g = F::new(0.0);
            if y[at] > F::new(0.0) {
                g = dy[at];
            }
            masked[at] = g;
            sum += g;
        }
    }
    partial[ABSOLUTE_POS] = sum;
}

/// `activation(x·Wᵀ + b) + residual` over the last axis of `x` (`weight (out, in)`, the residual
/// optional) as one autodiff operation. `None` when a tensor is not an f32 tensor tracked by
/// autodiff on a GPU backend without gradient checkpointing, the products run at a half
/// precision, the shapes disagree, or the activation is not the identity or a ReLU: the
/// caller composes it.
pub fn linear<const D: usize>(
    x: &BurnTensor<D>,
    weight: &BurnTensor<2>,
    bias: &BurnTensor<1>,
    activation: Activation,
    residual: Option<&BurnTensor<D>>,
) -> Option<BurnTensor<D>> {
    let dims = x.dims();
    let [out, input] = weight.dims();
    let mut out_dims = dims;
    out_dims[D - 1] = out;
    let rows = dims[..D - 1].iter().product::<usize>();
    // ReLU's mask is read from the output, which must not hold the residual: a ReLU takes none
    // here (no layer of the network has both).
    let fits = match activation {
        Activation::Identity => true,
        Activation::Relu => residual.is_none(),
        _ => false,
    } && products::half_dtype().is_none()
        && dims[D - 1] == input
        && bias.dims() == [out]
        && rows * input * out > 0
        && residual.is_none_or(|r| r.dims() == out_dims && tracked_f32_on_gpu(r))
        && tracked_f32_on_gpu(x)
        && tracked_f32_on_gpu(weight)
        && tracked_f32_on_gpu(bias);
    if !fits {
        return None;
    }
    let (x, x_node) = tracked_parts(x.clone())?;
    let (w, w_node) = tracked_parts(weight.clone())?;
    let (b, b_node) = tracked_parts(bias.clone())?;
    let mut nodes = vec![x_node, w_node, b_node];
    let residual = match residual {
        Some(r) => {
            let (r, node) = tracked_parts(r.clone())?;
            nodes.push(node);
            Some(to_burn::<D>(r).reshape([rows, out]))
        }
        None => None,
    };
    let x_rows = to_burn::<D>(x).reshape([rows, input]);
    let y = products::linear_activated(
        &x_rows,
        &to_burn::<2>(w.clone()).transpose(),
        &to_burn::<1>(b),
        residual.as_ref(),
        activation,
    )?;
    let y = cube(y.reshape(out_dims));
    let op = LinearOp {
        x_dims: dims,
        out_dims,
    };
    let saved = Saved {
        x: cube(x_rows),
        weight: w,
        output: (activation == Activation::Relu).then(|| y.clone()),
    };
    Some(match nodes.len() {
        3 => recorded(op, node_array::<3>(nodes), saved, y),
        _ => recorded(op, node_array::<4>(nodes), saved, y),
    })
}

/// The autodiff node; parents: x, the weight, the bias, then the residual if any.
#[derive(Debug)]
struct LinearOp<const D: usize> {
    x_dims: [usize; D],
    out_dims: [usize; D],
}

/// What the backward needs.
#[derive(Clone, Debug)]
struct Saved {
    /// The input as rows `[rows, in]`, contiguous.
    x: CubeTensor,
    /// `W (out, in)`.
    weight: CubeTensor,
    /// The ReLU's output (no residual in it); none for the identity.
    output: Option<CubeTensor>,
}

impl<const N: usize, const D: usize> Backward<CubeBackend, N> for LinearOp<D> {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let Saved { x, weight, output } = ops.state;
        let [rows, input] = [x.meta.shape()[0], x.meta.shape()[1]];
        let out = weight.meta.shape()[0];
        let d_out = contiguous(grads.consume::<CubeBackend>(&ops.node));
        let dy = to_burn::<2>(d_out.clone()).reshape([rows, out]);
        // The gradient at the product (through the ReLU) and its column sums, ∂b.
        let (g, d_bias) = match output {
            Some(y) => {
                let masked = empty_device_contiguous_dtype(
                    d_out.client.clone(),
                    d_out.device.clone(),
                    [rows, out].into(),
                    d_out.dtype,
                );
                let partial = empty_device_contiguous_dtype(
                    d_out.client.clone(),
                    d_out.device.clone(),
                    [rows.div_ceil(COLUMN_SUM_ROWS), out].into(),
                    d_out.dtype,
                );
                let (cube_count, cube_dim) = grid(&partial, partial.meta.num_elements());
                relu_bias_gradient_kernel::launch(
                    &d_out.client,
                    cube_count,
                    cube_dim,
                    cube(dy).into_tensor_arg(),
                    y.into_tensor_arg(),
                    masked.clone().into_tensor_arg(),
                    partial.clone().into_tensor_arg(),
                    rows as u32,
                    out as u32,
                    F32,
                );
                (to_burn::<2>(masked), add_blocks(partial))
            }
            None => (dy.clone(), column_sums(cube(dy))),
        };
        let [px, pw, pb] = [&ops.parents[0], &ops.parents[1], &ops.parents[2]];
        if let Some(node) = pw {
            // ∂W = ∂yᵀ·x, in W's own (out, in) layout.
            let d_weight = products::matmul(g.clone().transpose(), to_burn::<2>(x));
            grads.register::<CubeBackend>(node.id, cube(d_weight));
        }
        if let Some(node) = pb {
            grads.register::<CubeBackend>(node.id, d_bias);
        }
        if let Some(node) = px {
            let dx = products::matmul(g, to_burn::<2>(weight));
            debug_assert_eq!(dx.dims(), [rows, input]);
            grads.register::<CubeBackend>(node.id, cube(dx.reshape(self.x_dims)));
        }
        if N == 4
            && let Some(node) = &ops.parents[N - 1]
        {
            // The residual's gradient is ∂y.
            let d_residual = to_burn::<D>(d_out).reshape(self.out_dims);
            grads.register::<CubeBackend>(node.id, cube(d_residual));
        }
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    use crate::kernels::gpu::{relative, values};

    /// On wgpu, the operation's output and the gradients of x, W, b (and the residual) against
    /// burn's composed `r + act(linear(x, Wᵀ, b))` under autodiff, for the identity with a
    /// residual and a ReLU without: 74 rows (not a multiple of the rows one thread sums), 19 in,
    /// 23 out. The sums run in other orders (the products' tiles, the row blocks): within
    /// 2e-6 of the largest value (a few f32 roundings of sums of 74 terms). W's gradient comes
    /// out contiguous in W's layout (the optimiser flattens it as a view), and the ReLU's mask
    /// is exercised (about half the outputs are zero).
    #[test]
    fn one_operation_matches_the_composed_linear_and_its_gradients() {
        let device: Device = crate::device::create(crate::device::DeviceChoice::Wgpu)
            .unwrap()
            .autodiff();
        let _generator = crate::test_rng::lock();
        device.seed(17);
        let (b, l, input, out) = (2usize, 37usize, 19usize, 23usize);
        for (activation, with_residual) in [(Activation::Identity, true), (Activation::Relu, false)]
        {
            let random = |shape: Vec<usize>| {
                BurnTensor::<3>::random(
                    [shape[0], shape[1], shape[2]],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                )
                .inner()
            };
            let x0 = random(vec![b, l, input]);
            let w0 = random(vec![1, out, input]).reshape([out, input]);
            let b0 = random(vec![1, 1, out]).reshape([out]);
            let r0 = random(vec![b, l, out]);
            let upstream = random(vec![b, l, out]);
            let run = |fused: bool| {
                let x = x0.clone().autodiff().require_grad();
                let w = w0.clone().autodiff().require_grad();
                let bias = b0.clone().autodiff().require_grad();
                let r = r0.clone().autodiff().require_grad();
                let residual = with_residual.then(|| r.clone());
                let y = if fused {
                    linear(&x, &w, &bias, activation, residual.as_ref()).expect("the operation")
                } else {
                    let y = activation.apply(burn::tensor::module::linear(
                        x.clone(),
                        w.clone().transpose(),
                        Some(bias.clone()),
                    ));
                    match residual {
                        Some(r) => r + y,
                        None => y,
                    }
                };
                let grads = (y.clone() * upstream.clone().autodiff()).sum().backward();
                let dw = w.grad(&grads).unwrap();
                if fused {
                    let prim = dw.clone().try_into_primitive::<CubeBackend>().ok().unwrap();
                    assert!(prim.is_contiguous(), "W's gradient in W's layout");
                }
                let mut got = vec![
                    ("y", values(y.inner())),
                    ("x", values(x.grad(&grads).unwrap())),
                    ("W", values(dw)),
                    ("b", values(bias.grad(&grads).unwrap())),
                ];
                if with_residual {
                    got.push(("r", values(r.grad(&grads).unwrap())));
                }
                got
            };
            let (fused, composed) = (run(true), run(false));
            if activation == Activation::Relu {
                let zeros = fused[0].1.iter().filter(|v| **v == 0.0).count();
                assert!(zeros > b * l * out / 4, "{zeros} zeros");
            }
            for ((name, got), (_, want)) in fused.into_iter().zip(composed) {
                let gap = relative(got, want);
                assert!(gap < 2e-6, "{activation:?} {name}: {gap}");
            }
        }
    }
}
