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

use super::gpu::{
    F32, contiguous, empty_like, grid, plain_f32, plain_f32_contiguous, rows, to_burn,
};

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

/// `v` through the activation numbered `activation` ([`code`]; known when the kernel is
/// compiled, so one branch is compiled in): swish, ReLU6, the sigmoid and ReLU in the same
/// operations as the kernels above and burn's clamp (ReLU: `max(v, 0)`, the value burn's
/// masked fill gives).
#[cube]
pub(super) fn activated<F: Float>(v: F, #[comptime] activation: u32) -> F {
    let mut y = v;
    if activation == 1 {
        y = v / (F::exp(-v) + F::new(1.0));
    } else if activation == 2 {
        y = max(min(v, F::new(6.0)), F::new(0.0));
    } else if activation == 3 {
        y = F::new(1.0) / (F::exp(-v) + F::new(1.0));
    } else if activation == 4 {
        y = max(v, F::new(0.0));
    }
    y
}

/// [`activated`] with the activation's number ([`code`]) given at launch, for kernels that
/// take an epilogue or none ([`RowEpilogue`]) and compile once for every activation: the same
/// operations. Swish and the sigmoid share one `exp` and one division (`v / (e⁻ᵛ + 1)` and
/// `1 / (e⁻ᵛ + 1)`): a product's kernel applies this to each of a thread's 4 to 64 values,
/// unrolled, and a division or an `exp` is a long sequence of instructions on a GPU, so one of
/// each instead of two keeps the kernel's code (and its compilation) smaller.
#[cube]
fn activated_by<F: Float>(v: F, activation: u32) -> F {
    let mut y = v;
    if activation == 1 || activation == 3 {
        let mut numerator = v;
        if activation == 3 {
            numerator = F::new(1.0);
        }
        y = numerator / (F::exp(-v) + F::new(1.0));
    } else if activation == 2 {
        y = max(min(v, F::new(6.0)), F::new(0.0));
    } else if activation == 4 {
        y = max(v, F::new(0.0));
    }
    y
}

/// Value `v` of output `at` as a kernel writes it given its epilogue's arguments
/// ([`RowEpilogue::arguments`]; `bias`: the bias of the value's column, read by the caller,
/// which reads it once for many values): `v` itself when `epilogue` is 0, else
/// `activation(v + bias)`, plus `residual[at]` when `epilogue` is 2; the operations of the
/// epilogue's own kernel ([`RowEpilogue::after`]) in its order.
#[cube]
pub(super) fn finished<F: Float>(
    v: F,
    bias: F,
    residual: &Tensor<F>,
    at: usize,
    epilogue: u32,
    activation: u32,
) -> F {
    let mut y = v;
    if epilogue > 0 {
        y = activated_by::<F>(v + bias, activation);
        if epilogue > 1 {
            y += residual[at];
        }
    }
    y
}

/// A layer's `activation(v + bias) + residual` (the residual optional) after its matrix
/// product, in the same f32 operations as adding the bias, applying the activation and adding
/// the residual one after the other: applied by the product's kernel to each value as it
/// writes it (`gpu_matmul_tiled`, one launch and one pass over the output saved), or after
/// another routine's product in one launch of its own ([`RowEpilogue::after`]). The tiled
/// kernels take it as four arguments ([`RowEpilogue::arguments`]) whether there is one or not,
/// so one compiled kernel serves plain products and every epilogue.
pub(super) struct RowEpilogue {
    bias: CubeTensor,
    residual: Option<CubeTensor>,
    activation: super::Activation,
    /// The output's `[rows, columns]`.
    pub(super) shape: [usize; 2],
}

impl RowEpilogue {
    /// For an output `[rows, columns]` (`shape`), row-major: `bias [columns]` and the residual
    /// of the output's shape. `None` when the shapes disagree or a tensor is not a plain f32
    /// tensor of this process's GPU backend (the residual is copied when not contiguous).
    pub(super) fn new(
        bias: &BurnTensor<1>,
        residual: Option<&BurnTensor<2>>,
        activation: super::Activation,
        shape: [usize; 2],
    ) -> Option<Self> {
        if shape[1] == 0 || bias.dims() != [shape[1]] || residual.is_some_and(|r| r.dims() != shape)
        {
            return None;
        }
        Some(Self {
            bias: plain_f32_contiguous(bias.clone())?,
            residual: match residual {
                Some(r) => Some(plain_f32_contiguous(r.clone())?),
                None => None,
            },
            activation,
            shape,
        })
    }

    /// The epilogue applied to a product already computed (`[rows, columns]`, any rank of that
    /// many values in row-major order) in one launch, into a new contiguous tensor of its shape:
    /// the routine for products the tiled kernel does not run. `None` when the product is not a
    /// plain f32 tensor of this process's GPU backend or holds another number of values. Rows
    /// padded apart (burn's product on CUDA, whose allocator pads a row of 24 values to 32) are
    /// read where they lie; another layout is copied first.
    pub(super) fn after<const D: usize>(&self, product: BurnTensor<D>) -> Option<BurnTensor<D>> {
        let input = plain_f32(product)?;
        if input.meta.num_elements() != self.shape[0] * self.shape[1] {
            return None;
        }
        let columns = self.shape[1];
        let (input, pitch) = if input.meta.shape().last() == Some(&columns) {
            rows(input)
        } else {
            (contiguous(input), columns)
        };
        let output = empty_like(&input);
        let (cube_count, cube_dim) = grid(&input, input.meta.num_elements());
        let has_residual = self.residual.is_some();
        // Without a residual any tensor stands in (the kernel does not read it).
        let residual = self.residual.clone().unwrap_or_else(|| self.bias.clone());
        bias_activation_kernel::launch(
            &output.client,
            cube_count,
            cube_dim,
            input.into_tensor_arg(),
            self.bias.clone().into_tensor_arg(),
            residual.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            pitch,
            code(self.activation),
            has_residual,
            F32,
        );
        Some(to_burn(output))
    }

    /// The bias, the residual, the epilogue's number and the activation's, as [`finished`]
    /// takes them; without an epilogue (`None`) `stand_in` (an input of the launch: read-only,
    /// never read) fills the two tensor slots and the numbers are 0.
    pub(super) fn arguments(
        then: Option<&Self>,
        stand_in: &CubeTensor,
    ) -> (CubeTensor, CubeTensor, u32, u32) {
        match then {
            None => (stand_in.clone(), stand_in.clone(), 0, 0),
            Some(t) => (
                t.bias.clone(),
                t.residual.clone().unwrap_or_else(|| t.bias.clone()),
                1 + t.residual.is_some() as u32,
                code(t.activation),
            ),
        }
    }
}

/// An activation's number in the kernels.
pub(super) fn code(activation: super::Activation) -> u32 {
    match activation {
        super::Activation::Identity => 0,
        super::Activation::Swish => 1,
        super::Activation::Relu6 => 2,
        super::Activation::Sigmoid => 3,
        super::Activation::Relu => 4,
    }
}

/// `activation(x + bias) (+ residual)` over rows of `x` whose last axis is the bias's, the
/// output of a convolution computed as a matrix product without its bias: `x`'s rows `pitch`
/// values apart (its row length when contiguous), the output and the residual contiguous.
#[cube(launch)]
fn bias_activation_kernel<F: Float>(
    x: &Tensor<F>,
    bias: &Tensor<F>,
    residual: &Tensor<F>,
    output: &mut Tensor<F>,
    pitch: usize,
    #[comptime] activation: u32,
    #[comptime] has_residual: bool,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= output.len() {
        terminate!();
    }
    let column = i % bias.len();
    let v = activated::<F>(
        x[(i / bias.len()) * pitch + column] + bias[column],
        activation,
    );
    if has_residual {
        output[i] = v + residual[i];
    } else {
        output[i] = v;
    }
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
        let _generator = crate::test_rng::lock();
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
        let _generator = crate::test_rng::lock();
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

    /// The bias-activation kernel against the f64 form on the host, one launch: each
    /// activation, with and without a residual, on a contiguous product and on one whose rows
    /// are padded apart (as CUDA allocates burn's products; read in place, the padding's NaNs
    /// never), within one rounding each of the bias's sum, the activation (plus Vulkan's `exp`
    /// bound, 3 + 2|x| ulp, for swish and the sigmoid) and the residual's sum, relative to the
    /// values involved.
    #[test]
    fn one_kernel_adds_the_bias_activates_and_adds_the_residual() {
        let _generator = crate::test_rng::lock();
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let (rows, channels) = (30, 12);
        let x: Tensor<2> =
            Tensor::random([rows, channels], Distribution::Normal(0.0, 4.0), &device);
        let bias: Tensor<1> = Tensor::random([channels], Distribution::Normal(0.0, 2.0), &device);
        let residual: Tensor<2> =
            Tensor::random([rows, channels], Distribution::Normal(0.0, 1.0), &device);
        let (xv, bv, rv) = (
            values(x.clone()),
            values(bias.clone()),
            values(residual.clone()),
        );
        use super::super::Activation;
        let padded = crate::kernels::gpu::padded_rows(x.clone());
        for (activation, x) in Activation::ALL
            .into_iter()
            .flat_map(|a| [(a, x.clone()), (a, padded.clone())])
        {
            for with_residual in [false, true] {
                let r = with_residual.then_some(&residual);
                let then = RowEpilogue::new(&bias, r, activation, [rows, channels]).unwrap();
                let _ = values(then.after(x.clone()).unwrap());
                let profiler = crate::device::kernel_profile::KernelProfiler::start("bias");
                let got = then.after(x.clone()).unwrap();
                assert_eq!(profiler.finish().stages[0].launches, 1);
                for (i, g) in values(got).iter().enumerate() {
                    let pre = xv[i] as f64 + bv[i % channels] as f64;
                    let (act, exp_ulps) = match activation {
                        Activation::Identity => (pre, 0.0),
                        Activation::Swish => (pre / (1.0 + (-pre).exp()), 5.0 + 2.0 * pre.abs()),
                        Activation::Relu => (pre.max(0.0), 0.0),
                        Activation::Relu6 => (pre.clamp(0.0, 6.0), 0.0),
                        Activation::Sigmoid => (1.0 / (1.0 + (-pre).exp()), 5.0 + 2.0 * pre.abs()),
                    };
                    let res = if with_residual { rv[i] as f64 } else { 0.0 };
                    let want = act + res;
                    let eps = 2f64.powi(-24);
                    let bound = 1.1 * eps * pre.abs()
                        + 2.0 * eps * exp_ulps * act.abs()
                        + eps * want.abs()
                        + 1e-30;
                    assert!(
                        (*g as f64 - want).abs() <= bound,
                        "{activation:?} residual {with_residual} [{i}]: {g} vs {want}"
                    );
                }
            }
        }
        // Not this kernel's: a bias of another width, a residual of another shape.
        let other: Tensor<1> = Tensor::zeros([channels + 1], &device);
        assert!(RowEpilogue::new(&other, None, Activation::Swish, [rows, channels]).is_none());
        let small: Tensor<2> = Tensor::zeros([rows - 1, channels], &device);
        assert!(
            RowEpilogue::new(&bias, Some(&small), Activation::Swish, [rows, channels]).is_none()
        );
        // A product of another size.
        let then = RowEpilogue::new(&bias, None, Activation::Swish, [rows, channels]).unwrap();
        assert!(then.after(small).is_none());
    }
}
