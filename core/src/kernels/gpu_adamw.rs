//! One AdamW update over a flat buffer as one GPU kernel (CubeCL: wgpu, CUDA).
//!
//! Written out in burn's operations (`train::adamw`) the update is some twenty launches over the
//! optimiser's flat buffers (the clip, two moments, the bias corrections, the step, the decay),
//! each reading and writing the whole of the official network's 18 M values. Here one thread
//! updates one element: it reads the parameter, the gradient and both moments once and writes
//! the three new values, in the composed form's f32 operations and order. The clipping
//! coefficient stays on the device (read from its `[1]` tensor), so the step is queued without
//! waiting for the gradient norm.

use burn::tensor::Tensor as BurnTensor;
use cubecl::prelude::*;

use super::AdamWScalars;
use super::gpu::{F32, binds, contiguous_f32, empty_like, grid, to_burn};

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn adamw_kernel<F: Float>(
    param: &Tensor<F>,
    grad: &Tensor<F>,
    m: &Tensor<F>,
    v: &Tensor<F>,
    clip: &Tensor<F>,
    new_param: &mut Tensor<F>,
    new_m: &mut Tensor<F>,
    new_v: &mut Tensor<F>,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    sqrt_bias2: f32,
    eps: f32,
    step_size: f32,
    decay: f32,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= param.len() {
        terminate!();
    }
    let g = grad[i] * clip[0];
    let m1 = m[i] * F::cast_from(beta1) + g * F::cast_from(one_minus_beta1);
    let v1 = v[i] * F::cast_from(beta2) + (g * g) * F::cast_from(one_minus_beta2);
    let denom = F::sqrt(v1) / F::cast_from(sqrt_bias2) + F::cast_from(eps);
    let update = m1 / denom * F::cast_from(step_size);
    new_param[i] = param[i] * F::cast_from(decay) - update;
    new_m[i] = m1;
    new_v[i] = v1;
}

/// Buffers one launch binds: four inputs, the clip, three outputs and the launch's metadata.
const BINDINGS: u32 = 9;

/// [`super::adamw_update_on_gpu`]: `(parameter, first moment, second moment)` after one AdamW
/// step, the gradient multiplied by `clip` (`[1]`, on the device). `None` when a tensor is not a
/// plain contiguous f32 tensor of this process's GPU backend, the lengths or devices differ, or
/// the device binds fewer buffers than the kernel needs; the caller composes it.
pub fn update(
    param: &BurnTensor<1>,
    grad: &BurnTensor<1>,
    m: &BurnTensor<1>,
    v: &BurnTensor<1>,
    clip: &BurnTensor<1>,
    s: AdamWScalars,
) -> Option<(BurnTensor<1>, BurnTensor<1>, BurnTensor<1>)> {
    let take = |t: &BurnTensor<1>| contiguous_f32(t.clone());
    let (param, grad, m, v, clip) = (take(param)?, take(grad)?, take(m)?, take(v)?, take(clip)?);
    let n = param.meta.shape()[0];
    let same = [&grad, &m, &v]
        .iter()
        .all(|t| t.meta.shape()[0] == n && t.device == param.device);
    if !same || clip.meta.shape()[0] != 1 || clip.device != param.device {
        return None;
    }
    if !binds(&param, BINDINGS) {
        return None;
    }
    let (new_param, new_m, new_v) = (empty_like(&param), empty_like(&param), empty_like(&param));
    let (cube_count, cube_dim) = grid(&param, n);
    adamw_kernel::launch(
        &param.client,
        cube_count,
        cube_dim,
        param.clone().into_tensor_arg(),
        grad.into_tensor_arg(),
        m.into_tensor_arg(),
        v.into_tensor_arg(),
        clip.into_tensor_arg(),
        new_param.clone().into_tensor_arg(),
        new_m.clone().into_tensor_arg(),
        new_v.clone().into_tensor_arg(),
        s.beta1,
        s.one_minus_beta1,
        s.beta2,
        s.one_minus_beta2,
        s.sqrt_bias2,
        s.eps,
        s.step_size,
        s.decay,
        F32,
    );
    Some((to_burn(new_param), to_burn(new_m), to_burn(new_v)))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor, TensorData};

    use crate::kernels::gpu::values;

    /// On wgpu, one launch against AdamW computed in f64 on the host from the same f32 inputs,
    /// each value within a few f32 roundings of the terms it is made of: products and sums
    /// rounded once each (or fused: a GPU compiler may fuse a multiply and an add), Vulkan's
    /// square root (from its inverse square root, 2 ulp, then a reciprocal) and divisions
    /// (2.5 ulp) within their precision requirements. Gradients span 1e-6 to 10
    /// around a zero, with an active clip and with none (coefficient 1).
    #[test]
    fn one_kernel_updates_as_adamw_in_f64() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(21);
        let n = 5000;
        let random = |lo, hi| Tensor::<1>::random([n], Distribution::Uniform(lo, hi), &device);
        let scale = random(-6.0, 1.0).exp();
        let grad = random(-1.0, 1.0) * scale;
        let (param, m) = (random(-2.0, 2.0), random(-0.1, 0.1));
        let v = random(0.0, 1.0).powi_scalar(4).mul_scalar(0.01);
        let (beta1, beta2, eps, lr, wd, step) = (0.9f64, 0.999f64, 1e-8f64, 1e-3, 0.01, 3);
        let s = AdamWScalars {
            clip: 1.0,
            beta1: beta1 as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            sqrt_bias2: (1.0 - beta2.powi(step)).sqrt() as f32,
            eps: eps as f32,
            step_size: (lr / (1.0 - beta1.powi(step))) as f32,
            decay: (1.0 - lr * wd) as f32,
        };
        for clip in [0.37f32, 1.0] {
            let clip_t = Tensor::<1>::from_data(TensorData::new(vec![clip], [1]), &device);
            let _ = update(&param, &grad, &m, &v, &clip_t, s).unwrap();
            let profiler = crate::device::kernel_profile::KernelProfiler::start("adamw");
            let (p1, m1, v1) = update(&param, &grad, &m, &v, &clip_t, s).unwrap();
            assert_eq!(profiler.finish().stages[0].launches, 1);
            let (p1, m1, v1) = (values(p1), values(m1), values(v1));
            let (p0, g0, m0, v0) = (
                values(param.clone()),
                values(grad.clone()),
                values(m.clone()),
                values(v.clone()),
            );
            let u = 2f64.powi(-24);
            for i in 0..n {
                let f = |x: f32| x as f64;
                let g = f(g0[i]) * f(clip);
                let m_terms = (f(m0[i]) * f(s.beta1)).abs() + (g * f(s.one_minus_beta1)).abs();
                let m_want = f(m0[i]) * f(s.beta1) + g * f(s.one_minus_beta1);
                assert!(
                    (f(m1[i]) - m_want).abs() <= 4.0 * u * m_terms,
                    "m[{i}]: {} vs {m_want}",
                    m1[i]
                );
                let v_want = f(v0[i]) * f(s.beta2) + g * g * f(s.one_minus_beta2);
                assert!(
                    (f(v1[i]) - v_want).abs() <= 6.0 * u * v_want,
                    "v[{i}]: {} vs {v_want}",
                    v1[i]
                );
                // From the kernel's own moments: the step's operations alone.
                let denom = f(v1[i]).sqrt() / f(s.sqrt_bias2) + f(s.eps);
                let step = f(m1[i]) / denom * f(s.step_size);
                let decayed = f(p0[i]) * f(s.decay);
                let p_want = decayed - step;
                let bound = 3.0 * u * decayed.abs() + 26.0 * u * step.abs();
                assert!(
                    (f(p1[i]) - p_want).abs() <= bound,
                    "param[{i}]: {} vs {p_want}",
                    p1[i]
                );
            }
            // The update moved the parameters by more than rounding.
            assert!(p1.iter().zip(&p0).filter(|(a, b)| a != b).count() > n / 2);
        }
    }
}
