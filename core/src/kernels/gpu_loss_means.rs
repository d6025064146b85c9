//! The training losses' means as autodiff operations on the GPU backends (wgpu, CUDA): the
//! reconstruction loss `mean((rec − feature)²)` and a plain mean (each quantiser level's batch
//! mean of its commitments).
//!
//! burn's autodiff records a mean as a node whose backward fills a tensor of ones the shape of
//! its input, scales it and multiplies it with the incoming gradient (a mean over one axis also
//! sums that gradient over the axis, of size one): three or four launches per mean, some
//! eighteen for the reconstruction loss, whose mean is taken one axis at a time (the caller's
//! `mean`: a single f32 sum over all elements loses precision on some backends), and three per
//! quantiser level. Here the forward runs the same operations on the untracked tensors (the same
//! value, bit for bit) under one node. The squared error's backward is
//! `∂rec = (rec − feature) · 2∂ℓ/n` (and its negation for a tracked `feature`): the scale of the
//! one-element gradient and one broadcast product. The mean's is `∂ℓ/n` broadcast to the input's
//! shape as a view (stride 0): one launch; the commitment's backward reads it as it is.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;

use super::gpu::{cube, recorded, to_burn, tracked_f32_on_gpu, tracked_value};

/// `mean((rec − feature)²)` with `mean` (the caller's order of sums) under one autodiff node;
/// `None` unless `rec` is an f32 tensor tracked by autodiff on a GPU backend and `feature` one
/// of the same shape on it (tracked or a constant; a plain tensor is taken as a constant).
pub fn mean_squared_error(
    rec: &BurnTensor<4>,
    feature: &BurnTensor<4>,
    mean: impl Fn(BurnTensor<4>) -> BurnTensor<1>,
) -> Option<BurnTensor<1>> {
    let feature = match feature.is_autodiff() {
        true => feature.clone(),
        false => feature.clone().autodiff(),
    };
    if rec.dims() != feature.dims() || !tracked_f32_on_gpu(rec) || !tracked_f32_on_gpu(&feature) {
        return None;
    }
    // burn's operations below read any layout: no copies.
    let (r, r_node) = tracked_value(rec.clone())?;
    let (f, f_node) = tracked_value(feature)?;
    if r.device != f.device {
        return None;
    }
    let difference = to_burn::<4>(r) - to_burn::<4>(f);
    let loss = mean(difference.clone().powi_scalar(2));
    let saved = Saved {
        difference: cube(difference),
    };
    Some(recorded(
        SquaredErrorOp,
        [r_node, f_node],
        saved,
        cube(loss),
    ))
}

/// `mean(t)` under one autodiff node whose backward is `∂ℓ/n` broadcast as a view; `None`
/// unless `t` is an f32 tensor tracked by autodiff on a GPU backend.
pub fn mean(t: &BurnTensor<1>) -> Option<BurnTensor<1>> {
    if t.dims()[0] == 0 || !tracked_f32_on_gpu(t) {
        return None;
    }
    let (inner, node) = tracked_value(t.clone())?;
    let n = inner.meta.num_elements();
    let value = to_burn::<1>(inner).mean();
    Some(recorded(MeanOp { n }, [node], (), cube(value)))
}

/// A mean's node; its parent is the tensor of `n` elements.
#[derive(Debug)]
struct MeanOp {
    n: usize,
}

impl Backward<CubeBackend, 1> for MeanOp {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let d_mean = to_burn::<1>(grads.consume::<CubeBackend>(&ops.node));
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let d = d_mean.mul_scalar(1.0 / self.n as f64).expand([self.n]);
            grads.register::<CubeBackend>(node.id, cube(d));
        }
    }
}

/// The loss's node; parents: `rec`, `feature`.
#[derive(Debug)]
struct SquaredErrorOp;

/// What the backward needs.
#[derive(Clone, Debug)]
struct Saved {
    /// `rec − feature`.
    difference: CubeTensor,
}

impl Backward<CubeBackend, 2> for SquaredErrorOp {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let difference = to_burn::<4>(ops.state.difference);
        let d_loss = to_burn::<1>(grads.consume::<CubeBackend>(&ops.node));
        let n = difference.shape().num_elements();
        let scale = d_loss.mul_scalar(2.0 / n as f64).reshape([1, 1, 1, 1]);
        let d_rec = difference * scale;
        let [rec, feature] = ops.parents;
        if let Some(node) = feature {
            grads.register::<CubeBackend>(node.id, cube(d_rec.clone().neg()));
        }
        if let Some(node) = rec {
            grads.register::<CubeBackend>(node.id, cube(d_rec));
        }
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};

    use crate::device::kernel_profile::profile;
    use crate::kernels::gpu::{relative, values};

    /// The batch mean of a level's commitments: burn's value bit for bit, and `x`'s gradient
    /// through the straight-through operation (which reads the broadcast gradient in place)
    /// within a few roundings of the composed form's (burn's mean and the commitment composed);
    /// the backward two launches, the mean's scale and the commitment's gradient (burn's mean
    /// alone takes three), besides the root's gradient that `backward()` fills.
    #[test]
    fn a_mean_hands_its_gradient_to_the_commitment_as_a_view() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(3);
        for b in [1, 4] {
            let x = Tensor::<3>::random([b, 7, 9], Distribution::Normal(0.0, 1.0), &device);
            let q = Tensor::<3>::random([b, 7, 9], Distribution::Normal(0.0, 1.0), &device);
            let x_fused = x.clone().autodiff().require_grad();
            let (_, commitments) =
                crate::kernels::straight_through(&x_fused, &q.clone().autodiff()).unwrap();
            let m = mean(&commitments).expect("applies on wgpu");
            let want_value = values(commitments.clone().without_autodiff().mean());
            assert_eq!(
                values(m.clone().without_autodiff()),
                want_value,
                "batch {b}"
            );
            // backward() itself fills the root's gradient (one launch).
            let (grads, backward) = profile("backward", || m.backward());
            assert_eq!(backward.stages[0].launches, 3, "{backward:#?}");
            let got = values(x_fused.grad(&grads).unwrap());

            let x_composed = x.clone().autodiff().require_grad();
            let (_, c) =
                crate::kernels::composed_straight_through(x_composed.clone(), q.clone().autodiff());
            let grads = c.mean().backward();
            let want = values(x_composed.grad(&grads).unwrap());
            let gap = relative(got, want);
            assert!(gap <= 1e-6, "batch {b}: {gap}");
        }
    }

    fn nested(t: Tensor<4>) -> Tensor<1> {
        t.mean_dim(3).mean_dim(2).mean_dim(1).mean()
    }

    /// On wgpu, against burn's composed form under autodiff: the same loss bit for bit (the
    /// same operations), the gradients of `rec` and of a tracked `feature` within a few
    /// roundings (2/n against the composed product of the four means' reciprocals and the
    /// square's 2), with a constant and a plain `feature` too; and the backward takes two
    /// launches, three with a tracked `feature`, besides the root's gradient that `backward()`
    /// fills (burn's: some eighteen).
    #[test]
    fn one_node_gives_the_composed_loss_and_gradients() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(11);
        let shape = [3, 5, 7, 6];
        let rec = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let feature = Tensor::<4>::random(shape, Distribution::Normal(0.5, 2.0), &device);
        // feature: tracked, an autodiff constant, a plain tensor.
        for case in 0..3 {
            let run = |fused: bool| {
                let r = rec.clone().autodiff().require_grad();
                let f = match case {
                    0 => feature.clone().autodiff().require_grad(),
                    1 => feature.clone().autodiff(),
                    _ => feature.clone(),
                };
                let loss = if fused {
                    mean_squared_error(&r, &f, nested).expect("applies on wgpu")
                } else {
                    let f = if f.is_autodiff() {
                        f.clone()
                    } else {
                        f.clone().autodiff()
                    };
                    nested((r.clone() - f).powi_scalar(2))
                };
                let (grads, backward) = profile("backward", || loss.backward());
                let d_f = (case == 0).then(|| values(f.grad(&grads).unwrap()));
                let value = values(loss.without_autodiff());
                (value, values(r.grad(&grads).unwrap()), d_f, backward)
            };
            let (loss, d_rec, d_feature, backward) = run(true);
            let (want, want_rec, want_feature, composed) = run(false);
            assert_eq!(loss, want, "case {case}");
            let gap = relative(d_rec, want_rec);
            assert!(gap <= 1e-6, "case {case}: ∂rec {gap}");
            if let (Some(a), Some(b)) = (d_feature, want_feature) {
                let gap = relative(a, b);
                assert!(gap <= 1e-6, "∂feature {gap}");
            }
            // The root's gradient (backward() fills it), the scale, the product, and the
            // negation for a tracked feature.
            let launches = backward.stages[0].launches;
            let want_launches = if case == 0 { 4 } else { 3 };
            assert_eq!(launches, want_launches, "case {case}: {backward:#?}");
            assert!(composed.stages[0].launches > launches, "case {case}");
        }
    }
}
