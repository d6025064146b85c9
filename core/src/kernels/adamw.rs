//! One AdamW update of a parameter as a single pass on the CPU backend.
//!
//! Written out in tensor operations (clip, two moments, bias corrections, the step, the decay)
//! the update is fifteen passes over the parameter, each allocating a buffer of its size; the
//! official network has 18 M trainable values, so that was ~110 ms of a ~1.3 s training step on
//! a 2-core Xeon. Here every element is read once (parameter, gradient, both moments) and
//! written once, in place where the buffers are not shared, in the same floating-point operations
//! as the composed form (`train::adamw`), element by element.

use burn::backend::Flex;
use burn::tensor::Tensor;

/// The scalars of one AdamW step, in f32 as the composed form applies them.
#[derive(Clone, Copy, Debug)]
pub struct AdamWScalars {
    /// Gradient-clipping coefficient (1 without clipping).
    pub clip: f32,
    /// β₁.
    pub beta1: f32,
    /// 1 − β₁.
    pub one_minus_beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// 1 − β₂.
    pub one_minus_beta2: f32,
    /// √(1 − β₂ᵗ).
    pub sqrt_bias2: f32,
    /// ε.
    pub eps: f32,
    /// lr / (1 − β₁ᵗ).
    pub step_size: f32,
    /// 1 − lr · weight decay.
    pub decay: f32,
}

/// Whether [`adamw_update`] takes these tensors: f32 on the CPU backend, not tracked.
pub fn adamw_fuses(t: &Tensor<1>) -> bool {
    super::on_plain_cpu(t)
}

/// `(parameter, first moment, second moment)` after one AdamW step with gradient `grad`, all
/// flat and of one length, on the CPU backend ([`adamw_fuses`]):
///
/// ```text
/// g = grad · clip;  m = m·β₁ + g·(1 − β₁);  v = v·β₂ + g²·(1 − β₂)
/// p = p·decay − m / (√v / √(1 − β₂ᵗ) + ε) · step_size
/// ```
pub fn adamw_update(
    param: Tensor<1>,
    grad: Tensor<1>,
    m: Tensor<1>,
    v: Tensor<1>,
    s: AdamWScalars,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let n = param.dims()[0];
    assert!(
        grad.dims() == [n] && m.dims() == [n] && v.dims() == [n],
        "adamw_update: parameter {n}, gradient {:?}, moments {:?} {:?}",
        grad.dims(),
        m.dims(),
        v.dims()
    );
    let [param, grad, m, v] = [param, grad, m, v].map(|t| match t.try_into_primitive::<Flex>() {
        Ok(t) => t.to_contiguous(),
        // `adamw_fuses` checked the device; a mismatch here is a bug in that check.
        Err(e) => panic!("kernels: CPU tensor expected: {e:?}"),
    });
    let (mut param, mut m, mut v) = (param, m, v);
    {
        let g = super::elements(&grad);
        let p = super::elements_mut(&mut param);
        let m = super::elements_mut(&mut m);
        let v = super::elements_mut(&mut v);
        update(p, g, m, v, s);
    }
    let back = Tensor::from_primitive::<Flex>;
    (back(param), back(m), back(v))
}

/// Elements per parallel task.
#[cfg(feature = "parallel")]
const CHUNK: usize = 1 << 14;

fn update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamWScalars) {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        if p.len() >= 4 * CHUNK {
            p.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                .for_each(|((p, g), (m, v))| elements(p, g, m, v, s));
            return;
        }
    }
    elements(p, g, m, v, s)
}

/// The update, element by element, in the composed form's order of f32 operations.
fn elements(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamWScalars) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = g * s.clip;
        *m = *m * s.beta1 + g * s.one_minus_beta1;
        *v = *v * s.beta2 + g * g * s.one_minus_beta2;
        let denom = v.sqrt() / s.sqrt_bias2 + s.eps;
        *p = *p * s.decay - *m / denom * s.step_size;
    }
}
