//! The last-axis softmax as one autodiff operation on the CPU backend.
//!
//! burn's autodiff records a softmax as max, subtract, `exp`, sum and divide, each with its own
//! backward; over attention matrices (batch × heads × 196 × 196) those passes and the scalar
//! `exp` were the largest non-matmul cost of a training step. Here the forward is the vectorised
//! kernel of [`super::softmax_last_scaled`] and the backward is one pass per row,
//! `∂x = scale · y ⊙ (∂y − Σ ∂y ⊙ y)`, from the saved output `y`.
//!
//! Applies to f32 tensors tracked by autodiff on a flex device with burn's default (no)
//! gradient checkpointing ([`applies`]); the caller uses burn's own softmax otherwise.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::{AutodiffBackend, DispatchDevice, Flex, GradientCheckpointingStrategy};
use burn::tensor::{DType, Tensor};

/// The autodiff node: its state is the forward output.
#[derive(Debug)]
struct SoftmaxLast {
    row: usize,
    /// The logits' scale: the output is `softmax(scale · x)`.
    scale: f32,
}

impl Backward<Flex, 1> for SoftmaxLast {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y = ops.state;
        let (row, scale) = (self.row, self.scale);
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            softmax_backward(grad, &y, row, scale)
        });
    }
}

/// Whether [`softmax_last`] takes `x`: f32, autodiff without gradient checkpointing, on flex.
pub(super) fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    let device = x.device();
    x.dtype() == DType::F32
        && device.gradient_checkpointing_strategy() == Some(GradientCheckpointingStrategy::Disabled)
        && matches!(device.inner().as_dispatch(), DispatchDevice::Flex(_))
}

/// `softmax(scale · x)` over the last axis of `x` (for which [`applies`] holds) as one autodiff
/// operation.
pub(super) fn softmax_last<const D: usize>(x: Tensor<D>, scale: f32) -> Tensor<D> {
    let row = x.dims()[D - 1];
    let tracked = match x.try_into_primitive::<Autodiff<Flex, NoCheckpointing>>() {
        Ok(t) => t,
        // `applies` checked the device; a mismatch here is a bug in that check.
        Err(e) => panic!("kernels: tracked CPU tensor expected: {e:?}"),
    };
    // Take the node first so the buffer has one owner left: the backward needs only `y`, so
    // the kernel can overwrite the logits instead of copying them (if the caller still holds
    // them, the write copies first).
    let node = tracked.node();
    let inner = <Autodiff<Flex> as AutodiffBackend>::inner(tracked);
    let y = super::map_in_place_flex(inner, row, |part, row| {
        super::simd::softmax_rows(part, row, scale)
    });
    let op = SoftmaxLast { row, scale };
    let out = match op
        .prepare::<NoCheckpointing>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive::<Autodiff<Flex, NoCheckpointing>>(out)
}

/// `∂x = scale · y ⊙ (∂y − Σ_row ∂y ⊙ y)`, row by row, in the gradient's buffer.
fn softmax_backward(grad: FlexTensor, y: &FlexTensor, row: usize, scale: f32) -> FlexTensor {
    let mut grad = grad.to_contiguous();
    let y = y.to_contiguous();
    let yv = super::elements(&y);
    let gv = super::elements_mut(&mut grad);
    assert_eq!(
        yv.len(),
        gv.len(),
        "softmax backward: gradient and output sizes differ"
    );
    if row == 0 || gv.is_empty() {
        return grad;
    }
    super::for_each_chunk(gv, row, |offset, g, row| {
        rows_backward(g, &yv[offset..offset + g.len()], row, scale)
    });
    grad
}

pub(super) fn rows_backward(g: &mut [f32], y: &[f32], row: usize, scale: f32) {
    for (g, y) in g.chunks_exact_mut(row).zip(y.chunks_exact(row)) {
        // Eight partial sums so the dot product vectorises.
        let mut acc = [0.0f32; 8];
        let mut gc = g.chunks_exact(8);
        let mut yc = y.chunks_exact(8);
        for (a, b) in (&mut gc).zip(&mut yc) {
            for k in 0..8 {
                acc[k] += a[k] * b[k];
            }
        }
        let mut dot: f32 = gc
            .remainder()
            .iter()
            .zip(yc.remainder())
            .map(|(a, b)| a * b)
            .sum();
        dot += acc.iter().sum::<f32>();
        for (gi, yi) in g.iter_mut().zip(y) {
            *gi = *yi * (*gi - dot) * scale;
        }
    }
}
