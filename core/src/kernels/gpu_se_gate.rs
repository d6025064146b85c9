//! A squeeze-and-excitation gate applied, `x · sigmoid(p + b)`, as one GPU kernel after the
//! gate's matrix product (CubeCL: wgpu, CUDA).
//!
//! The gate is per sample and channel (`p [n, c]`, the expand convolution's product without its
//! bias `b`); composed, it is the bias and sigmoid in one launch and the broadcast product with
//! the block's activations in another, 22 pairs in the official B4 backbone. Here one thread
//! computes one output element: its channel's gate, in the same f32 operations as the gate's own
//! kernel (`activated`), times its activation. The activations are read as the channels-last
//! buffer the convolutions leave, and the result is written the same way (viewed as NCHW), so the
//! projection after it reads it without a copy.

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::prelude::*;

use super::gpu::{F32, contiguous_f32, grid, plain_f32, to_burn};
use super::gpu_activations::{activated, code};

#[cube(launch)]
fn se_gate_kernel<F: Float>(
    x: &Tensor<F>,
    product: &Tensor<F>,
    bias: &Tensor<F>,
    output: &mut Tensor<F>,
    #[comptime] sigmoid: u32,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= output.len() {
        terminate!();
    }
    // Channels-last: `[n, h, w, c]`, one gate per (n, c).
    let channels = bias.len();
    let per_sample = output.len() / (product.len() / channels);
    let channel = i % channels;
    let gate_at = (i / per_sample) * channels + channel;
    let gate = activated::<F>(product[gate_at] + bias[channel], sigmoid);
    output[i] = x[i] * gate;
}

/// `x · sigmoid(product + bias)` for activations `x [n, c, h, w]` laid out channels-last (a
/// convolution's output), the gate's product `[n, c]` and its bias `[c]`; the result
/// channels-last, viewed as NCHW. `None` when a tensor is not a plain f32 tensor of this
/// process's GPU backend laid out so (the product and bias contiguous) or the shapes disagree;
/// the caller composes it.
pub fn se_gate(
    x: &BurnTensor<4>,
    product: &BurnTensor<2>,
    bias: &BurnTensor<1>,
) -> Option<BurnTensor<4>> {
    let [n, c, h, w] = x.dims();
    if c == 0 || product.dims() != [n, c] || bias.dims() != [c] {
        return None;
    }
    let pixels = plain_f32(x.clone().permute([0, 2, 3, 1]))?;
    if !pixels.is_contiguous() {
        return None;
    }
    let product = contiguous_f32(product.clone())?;
    let bias = contiguous_f32(bias.clone())?;
    let output = empty_device_dtype(
        pixels.client.clone(),
        pixels.device.clone(),
        [n, h, w, c].into(),
        pixels.dtype,
    );
    let (cube_count, cube_dim) = grid(&output, output.meta.num_elements());
    se_gate_kernel::launch(
        &output.client,
        cube_count,
        cube_dim,
        pixels.into_tensor_arg(),
        product.into_tensor_arg(),
        bias.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        code(super::Activation::Sigmoid),
        F32,
    );
    Some(to_burn::<4>(output).permute([0, 3, 1, 2]))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};

    use crate::kernels::gpu::values;

    /// On wgpu, against the composed gate (the bias and sigmoid kernel, then burn's broadcast
    /// product) on channels-last activations: one launch, bit for bit, channels-last out. NCHW
    /// activations are refused.
    #[test]
    fn one_kernel_gates_as_the_composed_form() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(8);
        let (n, c, h, w) = (2, 24, 7, 5);
        let nchw = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 2.0), &device);
        let x = nchw
            .clone()
            .permute([0, 2, 3, 1])
            .reshape([n * h * w * c])
            .reshape([n, h, w, c])
            .permute([0, 3, 1, 2]);
        let product = Tensor::<2>::random([n, c], Distribution::Normal(0.0, 3.0), &device);
        let bias = Tensor::<1>::random([c], Distribution::Normal(0.0, 1.0), &device);
        let _ = values(se_gate(&x, &product, &bias).unwrap());
        let profiler = crate::device::kernel_profile::KernelProfiler::start("gate");
        let got = se_gate(&x, &product, &bias).unwrap();
        assert_eq!(profiler.finish().stages[0].launches, 1);
        assert!(crate::kernels::channels_last_on_gpu(&got));
        let gate = super::super::gpu_activations::bias_activated(
            &product,
            &bias,
            None,
            crate::kernels::Activation::Sigmoid,
        )
        .unwrap()
        .reshape([n, c, 1, 1]);
        let want = x * gate;
        let bits = |t: Tensor<4>| values(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(got), bits(want));
        assert!(se_gate(&nchw, &product, &bias).is_none());
    }
}
