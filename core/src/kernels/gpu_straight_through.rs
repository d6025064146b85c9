//! A vector quantiser's straight-through output and commitment in training, as autodiff
//! operations on the GPU backends (CubeCL: wgpu, CUDA).
//!
//! For tracked tokens `x [B, L, D]` and their chosen codes `q` (constants), the quantiser returns
//! `x + sg(q − x)` (the value of `q`, the gradient of `x`) and each sample's commitment
//! `mean((q − x)²)`. burn records that as two subtractions, a square, two means and an addition
//! forward, and their backward steps (the means' broadcasts, the square's products, a negation),
//! some fifteen launches per level and step. Here one kernel, one cube per sample, writes the
//! straight-through values `x + (q − x)` (the composed form's f32 operations) and sums the
//! squared differences in shared memory; the backward is one element-wise kernel,
//! `∂x = ∂c · 2(x − q)/(L·D)` from the commitment, while the straight-through output hands its
//! gradient to `x` as it is.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::gpu::{
    CUBE_THREADS as THREADS, F32, contiguous, cube_sum, empty_like, empty_shaped, grid,
    plain_f32_contiguous, recorded, tracked_f32_on_gpu, tracked_parts,
};

#[cube(launch)]
fn forward_kernel<F: Float>(
    x: &Tensor<F>,
    q: &Tensor<F>,
    quantized: &mut Tensor<F>,
    commitment: &mut Tensor<F>,
    #[define(F)] _dtype: ElemType,
) {
    let sample = CUBE_POS_X as usize;
    let thread = UNIT_POS_X as usize;
    let per_sample = x.len() / commitment.len();
    let first = sample * per_sample;
    let mut partial = Shared::<[F]>::new_slice(THREADS);
    let mut sum = F::new(0.0);
    let mut e = thread;
    while e < per_sample {
        let at = first + e;
        let difference = q[at] - x[at];
        quantized[at] = x[at] + difference;
        sum += difference * difference;
        e += THREADS;
    }
    let total = cube_sum::<F>(&mut partial, thread, sum, THREADS);
    if thread == 0 {
        commitment[sample] = total / F::cast_from(per_sample);
    }
}

/// `∂x` from the commitments' gradient, sample `b`'s at `d_commitment[b·stride]` (stride 0: one
/// value for all, as the batch mean's backward hands it over).
#[cube(launch)]
fn commitment_gradient_kernel<F: Float>(
    d_commitment: &Tensor<F>,
    x: &Tensor<F>,
    q: &Tensor<F>,
    dx: &mut Tensor<F>,
    samples: u32,
    stride: u32,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= dx.len() {
        terminate!();
    }
    let per_sample = dx.len() / samples as usize;
    let scale = F::new(2.0) / F::cast_from(per_sample);
    dx[i] = d_commitment[(i / per_sample) * stride as usize] * scale * (x[i] - q[i]);
}

/// `(x + sg(q − x), mean over each sample of (q − x)²)` for tokens `x [B, L, D]` tracked by
/// autodiff and their codes `q` (constants, tracked or not), as two autodiff operations on `x`;
/// `None` when `x` is not an f32 tensor tracked by autodiff on a GPU backend or `q` not an f32
/// tensor of the same shape there (the caller composes it).
pub fn straight_through(
    x: &BurnTensor<3>,
    q: &BurnTensor<3>,
) -> Option<(BurnTensor<3>, BurnTensor<1>)> {
    let [b, l, d] = x.dims();
    if b * l * d == 0 || q.dims() != [b, l, d] || !tracked_f32_on_gpu(x) {
        return None;
    }
    let codes = match q.is_autodiff() {
        true => tracked_parts(q.clone().detach()).map(|(inner, _)| inner),
        false => plain_f32_contiguous(q.clone()),
    }?;
    // Each operation holds its own guard of x's node.
    let (tokens, for_quantized) = tracked_parts(x.clone())?;
    let (_, for_commitment) = tracked_parts(x.clone())?;
    let quantized = empty_like(&tokens);
    let commitment = empty_shaped(&tokens, vec![b]);
    forward_kernel::launch(
        &tokens.client,
        CubeCount::Static(b as u32, 1, 1),
        CubeDim::new_1d(THREADS as u32),
        tokens.clone().into_tensor_arg(),
        codes.clone().into_tensor_arg(),
        quantized.clone().into_tensor_arg(),
        commitment.clone().into_tensor_arg(),
        F32,
    );
    let quantized = recorded(PassGradient, [for_quantized], (), quantized);
    let saved = Saved { tokens, codes };
    let commitment = recorded(CommitmentOp, [for_commitment], saved, commitment);
    Some((quantized, commitment))
}

/// The straight-through output's node: its gradient is `x`'s.
#[derive(Debug)]
struct PassGradient;

impl Backward<CubeBackend, 1> for PassGradient {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let gradient = grads.consume::<CubeBackend>(&ops.node);
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<CubeBackend>(node.id, gradient);
        }
    }
}

/// The commitment's node.
#[derive(Debug)]
struct CommitmentOp;

/// What the commitment's backward needs: the tokens and the codes.
#[derive(Clone, Debug)]
struct Saved {
    tokens: CubeTensor,
    codes: CubeTensor,
}

impl Backward<CubeBackend, 1> for CommitmentOp {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let Saved { tokens, codes } = ops.state;
        let d_commitment = grads.consume::<CubeBackend>(&ops.node);
        // One value broadcast (a batch mean's gradient) is read in place; else row-major.
        let (d_commitment, stride) = match d_commitment.meta.strides()[0] {
            0 => (d_commitment, 0),
            _ => (contiguous(d_commitment), 1),
        };
        let samples = d_commitment.meta.shape()[0] as u32;
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let dx = empty_like(&tokens);
            let (cube_count, cube_dim) = grid(&tokens, tokens.meta.num_elements());
            commitment_gradient_kernel::launch(
                &tokens.client,
                cube_count,
                cube_dim,
                d_commitment.into_tensor_arg(),
                tokens.clone().into_tensor_arg(),
                codes.into_tensor_arg(),
                dx.clone().into_tensor_arg(),
                samples,
                stride,
                F32,
            );
            grads.register::<CubeBackend>(node.id, dx);
        }
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};

    use crate::kernels::gpu::values;

    /// On wgpu, against burn's composed form (`kernels::composed_straight_through`)
    /// under autodiff, for one and three samples whose sizes are below and above a cube's
    /// threads: the straight-through values within one rounding of `x + (q − x)` at the
    /// operands' scale (the same f32 operations, which lavapipe's compiler may fold to `q`), the
    /// commitments within the rounding of their sums (another order: L·D terms of at most the
    /// largest, 2⁻²³ each), and `x`'s gradient through a loss that weighs both outputs within
    /// a few roundings of its largest value; one launch forward.
    #[test]
    fn one_kernel_gives_the_composed_values_and_gradient() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(5);
        for [b, l, d] in [[1, 3, 5], [3, 49, 24]] {
            let x = Tensor::<3>::random([b, l, d], Distribution::Normal(0.0, 1.0), &device);
            let q = Tensor::<3>::random([b, l, d], Distribution::Normal(0.0, 1.0), &device);
            let weights = Tensor::<3>::random([b, l, d], Distribution::Normal(0.0, 1.0), &device);
            let per_sample = Tensor::<1>::random([b], Distribution::Normal(0.0, 1.0), &device);
            let run = |fused: bool| {
                let x = x.clone().autodiff().require_grad();
                let q = q.clone().autodiff();
                let (quantized, commitment) = if fused {
                    let _ = straight_through(&x, &q).unwrap();
                    let profiler = crate::device::kernel_profile::KernelProfiler::start("st");
                    let pair = straight_through(&x, &q).unwrap();
                    assert_eq!(profiler.finish().stages[0].launches, 1);
                    pair
                } else {
                    crate::kernels::composed_straight_through(x.clone(), q)
                };
                let loss = (quantized.clone() * weights.clone().autodiff()).sum()
                    + (commitment.clone() * per_sample.clone().autodiff()).sum();
                let grads = loss.backward();
                let gradient = x.grad(&grads).unwrap();
                (
                    values(quantized.without_autodiff()),
                    values(commitment.without_autodiff()),
                    values(gradient),
                )
            };
            let (quantized, commitment, gradient) = run(true);
            let (want_quantized, want_commitment, want_gradient) = run(false);
            let (xs, qs) = (values(x.clone()), values(q.clone()));
            for (i, (got, want)) in quantized.iter().zip(&want_quantized).enumerate() {
                let bound = 2f32.powi(-23) * (xs[i].abs() + qs[i].abs());
                assert!(
                    (got - want).abs() <= bound,
                    "[{b}, {l}, {d}] {got} vs {want}"
                );
            }
            for (got, want) in commitment.iter().zip(&want_commitment) {
                let bound = (l * d) as f32 * 2f32.powi(-23) * want.abs() + f32::MIN_POSITIVE;
                assert!(
                    (got - want).abs() <= bound,
                    "[{b}, {l}, {d}] {got} vs {want}"
                );
            }
            let gap = crate::kernels::relative(gradient, want_gradient);
            assert!(
                gap <= 4.0 * 2f32.powi(-23),
                "[{b}, {l}, {d}] gradient {gap:e}"
            );
        }
    }

    /// What the operation does not take comes back as `None`: untracked tokens, codes of
    /// another shape, tensors on the CPU backend.
    #[test]
    fn other_inputs_are_left_to_the_composed_form() {
        let wgpu = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        let x = Tensor::<3>::ones([2, 3, 4], &wgpu);
        let q = Tensor::<3>::zeros([2, 3, 4], &wgpu);
        assert!(straight_through(&x.clone().autodiff(), &q).is_some());
        assert!(straight_through(&x, &q).is_none());
        let other = Tensor::<3>::zeros([2, 3, 5], &wgpu);
        assert!(straight_through(&x.autodiff(), &other).is_none());
        let on_cpu = Tensor::<3>::ones([2, 3, 4], &cpu).autodiff();
        assert!(straight_through(&on_cpu, &Tensor::zeros([2, 3, 4], &cpu)).is_none());
    }
}
