//! A squeeze-and-excitation gate applied, `x · gate`, as one GPU kernel (CubeCL: wgpu, CUDA).
//!
//! The gate is per sample and channel (`gate [n, c]`, from `gpu_se_excite` or the composed
//! convolutions). burn's broadcast product would write its result in the layout of its own
//! choosing; here one thread computes one output element, its activation times its channel's
//! gate, reading the channels-last buffer the convolutions leave and writing the same layout
//! (viewed as NCHW), so the projection after it reads it without a copy.

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::gpu::{F32, grid, plain_f32, plain_f32_contiguous, to_burn};

#[cube(launch)]
fn se_gate_kernel<F: Float>(
    x: &Tensor<F>,
    gate: &Tensor<F>,
    output: &mut Tensor<F>,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= output.len() {
        terminate!();
    }
    // Channels-last: `[n, h, w, c]`, one gate per (n, c).
    let channels = gate.shape(1);
    let per_sample = output.len() / gate.shape(0);
    output[i] = x[i] * gate[(i / per_sample) * channels + i % channels];
}

/// `x · gate` for activations `x [n, c, h, w]` laid out channels-last (a convolution's output)
/// and one gate per sample and channel, `gate [n, c]`; the result channels-last, viewed as NCHW.
/// `None` when a tensor is not a plain f32 tensor of this process's GPU backend, the activations
/// are not laid out so (burn's broadcast product is then one launch too) or the shapes disagree;
/// the caller composes it. A gate not laid out contiguously is copied first.
pub fn gated(x: &BurnTensor<4>, gate: &BurnTensor<2>) -> Option<BurnTensor<4>> {
    let [n, c, h, w] = x.dims();
    if n == 0 || c == 0 || gate.dims() != [n, c] {
        return None;
    }
    let pixels = plain_f32(x.clone().permute([0, 2, 3, 1]))?;
    if !pixels.is_contiguous() {
        return None;
    }
    let gate = plain_f32_contiguous(gate.clone())?;
    let output = empty_device_contiguous_dtype(
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
        gate.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        F32,
    );
    Some(to_burn::<4>(output).permute([0, 3, 1, 2]))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};

    use crate::kernels::gpu::{stored_as, values};

    /// On wgpu, against burn's broadcast product on channels-last activations: one launch, bit
    /// for bit, channels-last out. NCHW activations are refused.
    #[test]
    fn one_kernel_gates_as_the_broadcast_product() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(8);
        let (n, c, h, w) = (2, 24, 7, 5);
        let nchw = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 2.0), &device);
        let x = stored_as(nchw.clone(), [0, 2, 3, 1]);
        let gate = Tensor::<2>::random([n, c], Distribution::Uniform(0.0, 1.0), &device);
        let _ = values(gated(&x, &gate).unwrap());
        let profiler = crate::device::kernel_profile::KernelProfiler::start("gate");
        let got = gated(&x, &gate).unwrap();
        assert_eq!(profiler.finish().stages[0].launches, 1);
        assert!(crate::kernels::channels_last_on_gpu(&got));
        let want = nchw.clone() * gate.clone().reshape([n, c, 1, 1]);
        let bits = |t: Tensor<4>| values(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(got), bits(want));
        assert!(gated(&nchw, &gate).is_none());
        assert!(gated(&x, &gate.slice([0..1, 0..c])).is_none());
    }
}
