//! Swish `x / (1 + e⁻ˣ)` and the sigmoid `1 / (1 + e⁻ˣ)` as one GPU kernel each (CubeCL: runs
//! on wgpu and CUDA).
//!
//! Written in burn's operations swish is four kernels (negate, `exp`, add one, divide), each a
//! pass over the tensor, and the EfficientNet-B4 backbone applies it some seventy times a
//! forward; burn's sigmoid is six (`exp(−log(e⁻ˣ + 1))`), once per squeeze-and-excitation gate.
//! These kernels read each value once and write it once; swish in the same f32 operations as the
//! composed form, the sigmoid in PyTorch's formula (one `exp` and a division instead of burn's
//! `exp`, `log`, `exp`).
//!
//! A convolution on burn's GPU backends returns a channels-last buffer viewed as NCHW; the kernel
//! runs on the buffer in memory order (the tensor permuted to channels-last, which is contiguous
//! there) and hands back the same view, so the next convolution reads it without a copy.

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::std::tensor::layout::linear::{LinearView, LinearViewMut};

use super::gpu::{F32, empty_like, grid, plain_f32, to_burn};

#[cube(launch_unchecked, address_type = "dynamic")]
fn swish_kernel<F: Float>(
    input: LinearView<'_, F>,
    mut output: LinearViewMut<'_, F>,
    #[define(F)] _dtype: ElemType,
) {
    if !output.is_in_bounds(ABSOLUTE_POS) {
        terminate!();
    }
    let x = input.read(ABSOLUTE_POS);
    output.write(ABSOLUTE_POS, x / (F::exp(-x) + F::new(1.0)));
}

#[cube(launch_unchecked, address_type = "dynamic")]
fn sigmoid_kernel<F: Float>(
    input: LinearView<'_, F>,
    mut output: LinearViewMut<'_, F>,
    #[define(F)] _dtype: ElemType,
) {
    if !output.is_in_bounds(ABSOLUTE_POS) {
        terminate!();
    }
    let x = input.read(ABSOLUTE_POS);
    output.write(ABSOLUTE_POS, F::new(1.0) / (F::exp(-x) + F::new(1.0)));
}

/// Which activation a launch computes.
#[derive(Clone, Copy)]
enum Activation {
    Swish,
    Sigmoid,
}

/// The activation of a contiguous tensor into a new one of the same shape.
fn launch(input: CubeTensor, activation: Activation) -> CubeTensor {
    let output = empty_like(&input);
    let (cube_count, cube_dim) = grid(&input, input.meta.num_elements());
    let address = input
        .required_address_type()
        .max(output.required_address_type());
    let client = &output.client;
    // SAFETY: both views span the tensor's elements of f32 (the caller checked the dtype), and
    // the kernel reads and writes only positions the output reports in bounds.
    unsafe {
        let (input, out) = (input.into_linear_view(), output.clone().into_linear_view());
        match activation {
            Activation::Swish => swish_kernel::launch_unchecked(
                client, cube_count, cube_dim, address, input, out, F32,
            ),
            Activation::Sigmoid => sigmoid_kernel::launch_unchecked(
                client, cube_count, cube_dim, address, input, out, F32,
            ),
        }
    }
    output
}

/// Swish on a GPU tensor in one kernel; `None` when `x` is not a plain f32 tensor of this
/// process's GPU backend laid out contiguously (or, for an image batch, channels-last), and the
/// caller composes it.
pub fn swish<const D: usize>(x: &BurnTensor<D>) -> Option<BurnTensor<D>> {
    apply(x, Activation::Swish)
}

/// The sigmoid on a GPU tensor in one kernel; `None` as for [`swish`].
pub fn sigmoid<const D: usize>(x: &BurnTensor<D>) -> Option<BurnTensor<D>> {
    apply(x, Activation::Sigmoid)
}

fn apply<const D: usize>(x: &BurnTensor<D>, activation: Activation) -> Option<BurnTensor<D>> {
    // In memory order: as it is, or an NCHW view of a channels-last buffer (what burn's GPU
    // convolutions return), taken as NHWC and viewed back.
    let identity: [usize; D] = core::array::from_fn(|i| i);
    let mut orders = vec![(identity, identity)];
    if D == 4 {
        let to: [usize; D] = core::array::from_fn(|i| [0, 2, 3, 1][i]);
        let back: [usize; D] = core::array::from_fn(|i| [0, 3, 1, 2][i]);
        orders.push((to, back));
    }
    for (to_memory, back) in orders {
        let t = plain_f32(x.clone().permute(to_memory))?;
        if t.is_contiguous() {
            return Some(to_burn::<D>(launch(t, activation)).permute(back));
        }
    }
    None
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Distribution, Tensor};
    use burn_cubecl::CubeBackend;

    use crate::kernels::gpu::values;

    /// On wgpu, against burn's four operations of the same formula: within one f32 rounding
    /// (2⁻²³ relative; the GPU's `exp` is the same intrinsic in both), on an NCHW tensor and on
    /// the channels-last view a convolution returns, with large negative and positive values;
    /// one kernel launched; the channels-last result stays channels-last (the next convolution
    /// reads it without a copy).
    #[test]
    fn one_kernel_gives_the_composed_swish() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let x: Tensor<4> = Tensor::random([2, 6, 5, 7], Distribution::Normal(0.0, 30.0), &device);
        let w: Tensor<4> = Tensor::random([6, 6, 3, 3], Distribution::Normal(0.0, 1.0), &device);
        let convolved = conv2d(
            x.clone(),
            w,
            None,
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        );
        let composed = |x: Tensor<4>| x.clone() / x.neg().exp().add_scalar(1.0);
        for (input, channels_last) in [(x, false), (convolved, true)] {
            let _ = values(swish(&input).unwrap());
            let profiler = crate::device::kernel_profile::KernelProfiler::start("swish");
            let got = swish(&input).unwrap();
            let profile = profiler.finish();
            assert_eq!(profile.stages[0].launches, 1, "{profile:#?}");
            let layout_kept = got
                .clone()
                .permute([0, 2, 3, 1])
                .try_into_primitive::<CubeBackend>()
                .unwrap()
                .is_contiguous();
            assert_eq!(layout_kept, channels_last);
            let (got, want) = (values(got), values(composed(input)));
            assert!(want.iter().any(|v| *v < -1e-6) && want.iter().any(|v| *v > 20.0));
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 2f32.powi(-23) * w.abs(), "{g} vs {w}");
            }
        }
    }

    /// What the kernel does not take comes back as `None`: a tensor tracked by autodiff, an f16
    /// one, one on the CPU backend.
    #[test]
    fn other_tensors_are_left_to_the_composed_form() {
        let wgpu = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        let x = |d: &burn::tensor::Device| Tensor::<4>::ones([1, 2, 3, 3], d);
        assert!(swish(&x(&wgpu)).is_some());
        assert!(swish(&x(&wgpu).autodiff()).is_none());
        assert!(swish(&x(&wgpu).cast(burn::tensor::FloatDType::F16)).is_none());
        assert!(swish(&x(&cpu)).is_none());
    }

    /// The sigmoid kernel against the f64 logistic function, one launch, on values from −30 to
    /// 30: within the error Vulkan allows a shader's `exp` (3 + 2·|x| units in the last place,
    /// which lavapipe's approaches for large |x|) plus one rounding each for the sum and the
    /// division, relative to the value.
    #[test]
    fn one_kernel_gives_the_sigmoid() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let x: Tensor<4> =
            Tensor::random([2, 40, 1, 1], Distribution::Uniform(-30.0, 30.0), &device);
        let _ = values(sigmoid(&x).unwrap());
        let profiler = crate::device::kernel_profile::KernelProfiler::start("sigmoid");
        let got = sigmoid(&x).unwrap();
        assert_eq!(profiler.finish().stages[0].launches, 1);
        for (g, x) in values(got).iter().zip(values(x)) {
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!(
                (*g as f64 - want).abs() <= (5.0 + 2.0 * (x as f64).abs()) * 2f64.powi(-23) * want,
                "sigmoid({x}) = {g}, want {want}"
            );
        }
    }
}
