//! Inference BatchNorm folded into the convolution before it, as one GPU kernel (CubeCL: wgpu,
//! CUDA).
//!
//! The fold (`s = γ/√(σ² + ε)`, kernel `w·s`, bias `β − μ·s` plus the convolution's own bias
//! times `s`) is six small operations in burn's tensor API, six kernel launches per convolution
//! at every forward: some 600 of the B4 backbone's launches at any batch size, each costing the
//! host more than the GPU. Here it is one launch, in the same f32 operations in the same order.
//!
//! The folded kernel is written in the layout its convolution reads best: for the ones
//! `gpu_conv` computes (a few inputs per group: the depthwise convolutions and the stem),
//! outputs innermost ([`super::gpu_conv::weight_layout`]); for the rest, as the weight was.

use burn::tensor::Tensor as BurnTensor;
use cubecl::prelude::*;

use super::gpu::{
    F32, cube, empty_like, empty_shaped, grid, inverse, plain_f32_contiguous, to_burn,
};

#[cube(launch)]
// `%` rather than `is_multiple_of`: the kernel is CubeCL's language, which has the operator.
#[allow(clippy::too_many_arguments, clippy::manual_is_multiple_of)]
fn fold_kernel<F: Float>(
    weight: &Tensor<F>,
    gamma: &Tensor<F>,
    beta: &Tensor<F>,
    mean: &Tensor<F>,
    var: &Tensor<F>,
    conv_bias: &Tensor<F>,
    folded: &mut Tensor<F>,
    bias: &mut Tensor<F>,
    eps: f32,
    per_out: u32,
    #[comptime] has_bias: bool,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= folded.len() {
        terminate!();
    }
    let per_out = per_out as usize;
    let o = i / per_out;
    let scale = gamma[o] / F::sqrt(var[o] + F::cast_from(eps));
    // `weight` is contiguous `[out, in, kh, kw]`; `folded` has that shape in any layout.
    let (kh, kw) = (weight.shape(2), weight.shape(3));
    let kx = i % kw;
    let ky = (i / kw) % kh;
    let c = (i % per_out) / (kh * kw);
    let at =
        o * folded.stride(0) + c * folded.stride(1) + ky * folded.stride(2) + kx * folded.stride(3);
    folded[at] = weight[i] * scale;
    if i % per_out == 0 {
        let mut b = beta[o] - mean[o] * scale;
        if has_bias {
            b += conv_bias[o] * scale;
        }
        bias[o] = b;
    }
}

/// The folded kernel and bias in one launch, the kernel in the layout its convolution reads
/// best (see the module's doc); `None` when the tensors are not plain f32 tensors of this
/// process's GPU backend (the caller composes the fold then). Inputs in another layout are
/// copied first: CUDA pads the rows of a loaded `[out, in, k, k]` kernel (3 values to 4), and
/// the composed fold would leave a padded kernel that hvq's convolution does not take, so every
/// depthwise convolution would run as burn's; the fold runs once per convolution
/// ([`crate::backbone`] keeps it), so the copies cost nothing per image.
pub fn fold(input: &super::BatchNormFold, eps: f32) -> Option<(BurnTensor<4>, BurnTensor<1>)> {
    let [out, per_group, kh, kw] = input.weight.dims();
    let weight = plain_f32_contiguous(input.weight.clone())?;
    let gamma = plain_f32_contiguous(input.gamma.clone())?;
    let beta = plain_f32_contiguous(input.beta.clone())?;
    let mean = plain_f32_contiguous(input.mean.clone())?;
    let var = plain_f32_contiguous(input.var.clone())?;
    let conv_bias = match &input.conv_bias {
        Some(b) => Some(plain_f32_contiguous(b.clone())?),
        None => None,
    };
    let folded = match super::gpu_conv::weight_layout([out, per_group, kh, kw]) {
        Some(axes) => {
            let dims = [out, per_group, kh, kw];
            let stored = empty_shaped(&weight, axes.iter().map(|&a| dims[a]).collect());
            cube(to_burn::<4>(stored).permute(inverse(axes)))
        }
        None => empty_like(&weight),
    };
    // `[out]`, like γ.
    let bias = empty_like(&gamma);
    let (cube_count, cube_dim) = grid(&weight, out * per_group * kh * kw);
    let has_bias = conv_bias.is_some();
    // Without a bias of its own, any `[out]` tensor stands in (the kernel does not read it).
    let conv_bias = conv_bias.unwrap_or_else(|| gamma.clone());
    fold_kernel::launch(
        &folded.client,
        cube_count,
        cube_dim,
        weight.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        mean.into_tensor_arg(),
        var.into_tensor_arg(),
        conv_bias.into_tensor_arg(),
        folded.clone().into_tensor_arg(),
        bias.clone().into_tensor_arg(),
        eps,
        (per_group * kh * kw) as u32,
        has_bias,
        F32,
    );
    Some((to_burn(folded), to_burn(bias)))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use crate::kernels::{BatchNormFold, composed_fold};
    use burn::tensor::Distribution;

    use crate::kernels::gpu::values;

    /// On wgpu, one launch against burn's six operations on the same device, with and without
    /// a bias of the convolution's own, for a depthwise kernel (one input channel per group) and
    /// a full one: the same values to one rounding of each product (a GPU compiler may fuse a
    /// multiply and an add that the composed form rounds apart), relative to the terms' size;
    /// the depthwise kernel stored outputs innermost. Off a GPU backend, `None`.
    #[test]
    fn one_kernel_folds_as_the_composed_operations() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let random = |shape: Vec<usize>, lo: f64, hi: f64| {
            BurnTensor::<1>::random(
                [shape.iter().product::<usize>()],
                Distribution::Uniform(lo, hi),
                &device,
            )
        };
        for (out, per_group, k) in [(24, 1, 3), (16, 8, 1)] {
            for with_bias in [false, true] {
                let input = || BatchNormFold {
                    weight: random(vec![out, per_group, k, k], -1.0, 1.0)
                        .reshape([out, per_group, k, k]),
                    conv_bias: with_bias.then(|| random(vec![out], -1.0, 1.0)),
                    gamma: random(vec![out], 0.5, 2.0),
                    beta: random(vec![out], -1.0, 1.0),
                    mean: random(vec![out], -1.0, 1.0),
                    var: random(vec![out], 0.01, 3.0),
                };
                let _generator = crate::test_rng::lock();
                let fold_input = input();
                let same = BatchNormFold {
                    weight: fold_input.weight.clone(),
                    conv_bias: fold_input.conv_bias.clone(),
                    gamma: fold_input.gamma.clone(),
                    beta: fold_input.beta.clone(),
                    mean: fold_input.mean.clone(),
                    var: fold_input.var.clone(),
                };
                let _ = fold(&fold_input, 1e-3).unwrap();
                let profiler = crate::device::kernel_profile::KernelProfiler::start("fold");
                let (w, b) = fold(&fold_input, 1e-3).unwrap();
                let profile = profiler.finish();
                assert_eq!(profile.stages[0].launches, 1, "{profile:#?}");
                let (w_want, b_want) = composed_fold(same, 1e-3);
                assert_eq!(w.dims(), w_want.dims());
                // A depthwise kernel stored outputs innermost, as `gpu_conv` reads it best;
                // a 1×1 one as it was, a matrix product's operand.
                let stored = match per_group {
                    1 => w.clone().permute([2, 3, 1, 0]),
                    _ => w.clone(),
                };
                assert!(
                    cube(stored).is_contiguous(),
                    "({out}, {per_group}, {k}) layout"
                );
                let ulp = 2f32.powi(-23);
                for (g, e) in values(w).iter().zip(values(w_want)) {
                    assert!((g - e).abs() <= ulp * e.abs(), "kernel {g} vs {e}");
                }
                // β − μ·s (+ b·s): each product may be rounded or not before its sum.
                let (beta, mean, gamma, var) = (
                    values(fold_input.beta.clone()),
                    values(fold_input.mean.clone()),
                    values(fold_input.gamma.clone()),
                    values(fold_input.var.clone()),
                );
                let own = fold_input.conv_bias.clone().map(values);
                for (o, (g, e)) in values(b).iter().zip(values(b_want)).enumerate() {
                    let s = gamma[o] / (var[o] + 1e-3).sqrt();
                    let terms = beta[o].abs()
                        + (mean[o] * s).abs()
                        + own.as_ref().map_or(0.0, |b| (b[o] * s).abs());
                    assert!((g - e).abs() <= 3.0 * ulp * terms, "bias {o}: {g} vs {e}");
                }
            }
        }
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        let one = |n: usize| BurnTensor::<1>::ones([n], &cpu);
        let on_cpu = BatchNormFold {
            weight: BurnTensor::<4>::ones([2, 1, 3, 3], &cpu),
            conv_bias: None,
            gamma: one(2),
            beta: one(2),
            mean: one(2),
            var: one(2),
        };
        assert!(fold(&on_cpu, 1e-3).is_none());
    }
}
