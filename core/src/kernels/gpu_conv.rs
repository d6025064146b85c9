//! A convolution with few input channels per group (EfficientNet's depthwise convolutions and
//! its stem), its bias and the activation after it, as one GPU kernel (CubeCL: wgpu, CUDA).
//!
//! burn's GPU backends, built without autotuning, run these as their direct convolution (a
//! general kernel for any group size) and the bias-free output goes through two more passes:
//! the BatchNorm's bias (folded into the convolution, [`super::fold_batch_norm`]) and the
//! activation. The depthwise convolutions and the stem were 275 of the official backbone's 579
//! ms of kernel time on lavapipe (`hvq bench --kernels`), and each is followed by a swish over
//! the same, largest, activations of the network. Here one thread computes one output value,
//! channels innermost (neighbouring threads read neighbouring input channels), adds the bias,
//! applies the activation and writes it once.
//!
//! The input may be laid out in any order (its strides are read; burn's GPU convolutions and
//! hvq's pointwise products leave channels-last buffers viewed as NCHW), and so may the weight:
//! neighbouring threads compute neighbouring output channels, so each tap's weights are read
//! at neighbouring addresses (one or a few memory transactions per warp, rather than one per
//! thread) when they are stored outputs innermost, as the BatchNorm fold writes them
//! ([`weight_layout`]); stored as loaded, `[out, in, k, k]`, they are read as before. Either is
//! a compile-time choice, so a tap's weight is a constant offset from the first. The output is a
//! channels-last buffer viewed as NCHW, as burn's convolutions return, so the next 1×1
//! convolution (a matrix product over channels, `products`) reads it without a copy.

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::Activation;
use super::gpu::{
    F32, contiguous, grid, plain_f32, plain_f32_contiguous, stored_contiguous, to_burn,
};
use super::gpu_activations::{activated, code};

/// The largest number of input channels per group this kernel takes: each thread loops over its
/// group's inputs with nothing shared, which pays only for a few (burn's direct convolution and
/// the matrix products take the rest).
pub(super) const MAX_INPUTS_PER_GROUP: usize = 4;

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn conv_kernel<F: Float>(
    input: &Tensor<F>,
    weight: &Tensor<F>,
    bias: &Tensor<F>,
    output: &mut Tensor<F>,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    outputs_per_group: u32,
    #[comptime] kernel: usize,
    #[comptime] inputs_per_group: usize,
    #[comptime] outputs_innermost: bool,
    #[comptime] activation: u32,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= output.len() {
        terminate!();
    }
    // Output `[n, oy, ox, o]`, channels-last and contiguous.
    let channels = output.shape(3);
    let width = output.shape(2);
    let height = output.shape(1);
    let o = i % channels;
    let ox = (i / channels) % width;
    let oy = (i / (channels * width)) % height;
    let n = i / (channels * width * height);
    // Input `[n, c, y, x]` at its own strides.
    let (in_height, in_width) = (input.shape(2), input.shape(3));
    let first_input = (o / outputs_per_group as usize) * inputs_per_group;
    let base = n * input.stride(0) + first_input * input.stride(1);
    let (stride, pad_top, pad_left) = (stride as usize, pad_top as usize, pad_left as usize);
    // Tap `(c, ky, kx)`'s weight: `[k, k, in, out]` stored (outputs innermost) or `[out, in, k, k]`.
    let outputs = weight.shape(0);
    let mut first_weight = o * inputs_per_group * kernel * kernel;
    let mut tap_stride = 1;
    if outputs_innermost {
        first_weight = o;
        tap_stride = outputs;
    }
    let mut sum = F::new(0.0);
    #[unroll]
    for ky in 0..kernel {
        // `y = oy·stride + ky − pad_top`, in unsigned arithmetic: rows above the image are
        // padding (zero), as are those below it.
        let y = oy * stride + ky;
        if y >= pad_top && y - pad_top < in_height {
            let row = base + (y - pad_top) * input.stride(2);
            #[unroll]
            for kx in 0..kernel {
                let x = ox * stride + kx;
                if x >= pad_left && x - pad_left < in_width {
                    let at = row + (x - pad_left) * input.stride(3);
                    #[unroll]
                    for c in 0..inputs_per_group {
                        let tap = if outputs_innermost {
                            (ky * kernel + kx) * inputs_per_group + c
                        } else {
                            (c * kernel + ky) * kernel + kx
                        };
                        sum += input[at + c * input.stride(1)]
                            * weight[first_weight + tap * tap_stride];
                    }
                }
            }
        }
    }
    output[i] = activated::<F>(sum + bias[o], activation);
}

/// The layout this kernel reads a weight of logical shape `[o, c/groups, k, k]` best in, as the
/// order its axes are stored in (outermost first: `[2, 3, 1, 0]` is `[k, k, c/groups, o]`,
/// outputs innermost), for the weights it takes; `None` for the others (their convolutions read
/// the usual `[o, c/groups, k, k]`, and a 1×1 weight is a matrix product's operand).
pub(super) fn weight_layout([_, per_group, kh, kw]: [usize; 4]) -> Option<[usize; 4]> {
    (kh == kw && kh > 1 && per_group <= MAX_INPUTS_PER_GROUP).then_some([2, 3, 1, 0])
}

/// `activation(conv(x, weight) + bias)` for `x [n, c, h, w]`, `weight [o, c/groups, k, k]`
/// (square, at most [`MAX_INPUTS_PER_GROUP`] inputs per group; stored contiguously as is or as
/// [`weight_layout`] says, which reads fastest; in another layout it is copied first), `bias
/// [o]`, in one launch; `None` when the tensors are not plain f32 tensors of this process's GPU
/// backend (the bias contiguous) or the shapes are not this kernel's, and the caller composes
/// it.
pub fn conv_activated(
    x: &BurnTensor<4>,
    weight: &BurnTensor<4>,
    bias: &BurnTensor<1>,
    stride: usize,
    padding: [(usize, usize); 2],
    groups: usize,
    activation: Activation,
) -> Option<BurnTensor<4>> {
    let [n, channels, height, width] = x.dims();
    let [outputs, per_group, kh, kw] = weight.dims();
    let fits = kh == kw
        && kh > 0
        && stride > 0
        && groups > 0
        && per_group <= MAX_INPUTS_PER_GROUP
        && channels == per_group * groups
        && outputs % groups == 0
        && bias.dims() == [outputs]
        && height + padding[0].0 + padding[0].1 >= kh
        && width + padding[1].0 + padding[1].1 >= kw;
    if !fits {
        return None;
    }
    let out_height = (height + padding[0].0 + padding[0].1 - kh) / stride + 1;
    let out_width = (width + padding[1].0 + padding[1].1 - kw) / stride + 1;
    let input = plain_f32(x.clone())?;
    let weight = plain_f32(weight.clone())?;
    // A kernel in neither layout (CUDA pads a loaded kernel's rows of 3 or 5 taps) is copied:
    // a few thousand values, where declining would run the whole convolution as burn's.
    let (weight, outputs_innermost) = if weight.is_contiguous() {
        (weight, false)
    } else if stored_contiguous(&weight, [2, 3, 1, 0]) {
        (weight, true)
    } else {
        (contiguous(weight), false)
    };
    let bias = plain_f32_contiguous(bias.clone())?;
    let output = empty_device_contiguous_dtype(
        input.client.clone(),
        input.device.clone(),
        [n, out_height, out_width, outputs].into(),
        input.dtype,
    );
    let (cube_count, cube_dim) = grid(&output, output.meta.num_elements());
    conv_kernel::launch(
        &output.client,
        cube_count,
        cube_dim,
        input.into_tensor_arg(),
        weight.into_tensor_arg(),
        bias.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        stride as u32,
        padding[0].0 as u32,
        padding[1].0 as u32,
        (outputs / groups) as u32,
        kh,
        per_group,
        outputs_innermost,
        code(activation),
        F32,
    );
    Some(to_burn::<4>(output).permute([0, 3, 1, 2]))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};
    use burn_cubecl::CubeBackend;

    use crate::kernels::gpu::{stored_as, values};

    /// The convolution, bias and activation in f64 on the host, from the tensors' values
    /// (`x [n, c, h, w]` row-major): the independent computation the kernel is held to. Returns
    /// each output value, the sum of its terms' magnitudes (the scale of its rounding) and the
    /// value before the activation.
    #[allow(clippy::too_many_arguments)]
    fn host(
        x: &[f32],
        [n, c, h, w]: [usize; 4],
        weight: &[f32],
        [o, per_group, k, _]: [usize; 4],
        bias: &[f32],
        stride: usize,
        pad: [(usize, usize); 2],
        groups: usize,
        activation: Activation,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, [usize; 4]) {
        let oh = (h + pad[0].0 + pad[0].1 - k) / stride + 1;
        let ow = (w + pad[1].0 + pad[1].1 - k) / stride + 1;
        let (mut out, mut magnitude, mut pre) = (Vec::new(), Vec::new(), Vec::new());
        for b in 0..n {
            for oc in 0..o {
                let g = oc / (o / groups);
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (mut s, mut m) = (bias[oc] as f64, (bias[oc] as f64).abs());
                        for ci in 0..per_group {
                            let ic = g * per_group + ci;
                            assert!(ic < c);
                            for ky in 0..k {
                                for kx in 0..k {
                                    let y = (oy * stride + ky) as isize - pad[0].0 as isize;
                                    let xx = (ox * stride + kx) as isize - pad[1].0 as isize;
                                    if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                        continue;
                                    }
                                    let v = x[((b * c + ic) * h + y as usize) * w + xx as usize]
                                        as f64
                                        * weight[((oc * per_group + ci) * k + ky) * k + kx] as f64;
                                    s += v;
                                    m += v.abs();
                                }
                            }
                        }
                        out.push(match activation {
                            Activation::Identity => s,
                            Activation::Swish => s / (1.0 + (-s).exp()),
                            Activation::Relu => s.max(0.0),
                            Activation::Relu6 => s.clamp(0.0, 6.0),
                            Activation::Sigmoid => 1.0 / (1.0 + (-s).exp()),
                        });
                        magnitude.push(m);
                        pre.push(s);
                    }
                }
            }
        }
        (out, magnitude, pre, [n, o, oh, ow])
    }

    /// On wgpu, one launch against the f64 convolution on the host, for a depthwise convolution
    /// (3×3 stride 1, 5×5 stride 2 with the uneven padding of static SAME) and a stem-like one
    /// (three inputs per group, one group), each activation, on an NCHW input and on the
    /// channels-last view a convolution returns: within f32 rounding of the sum (its terms'
    /// magnitudes times (taps + 2)·2⁻²⁴) passed through the activation (whose slope is at most
    /// 1.1), plus Vulkan's bound on `exp` (3 + 2|x| ulp) for swish and the sigmoid; the output is
    /// channels-last. The weight stored outputs innermost gives the same.
    #[test]
    fn one_kernel_gives_the_convolution_bias_and_activation() {
        let _generator = crate::test_rng::lock();
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let cases = [
            // (channels, outputs, inputs per group, k, stride, padding)
            (8, 8, 1, 3, 1, [(1, 1), (1, 1)]),
            (6, 6, 1, 5, 2, [(1, 2), (2, 1)]),
            (3, 5, 3, 3, 2, [(0, 1), (0, 1)]),
        ];
        for (channels, outputs, per_group, k, stride, pad) in cases {
            let groups = channels / per_group;
            let shape = [2, channels, 9, 7];
            let x: Tensor<4> = Tensor::random(shape, Distribution::Normal(0.5, 2.0), &device);
            let weight: Tensor<4> = Tensor::random(
                [outputs, per_group, k, k],
                Distribution::Normal(0.0, 0.5),
                &device,
            );
            let bias: Tensor<1> =
                Tensor::random([outputs], Distribution::Normal(0.0, 1.0), &device);
            let channels_last = stored_as(x.clone(), [0, 2, 3, 1]);
            let (xv, wv, bv) = (
                values(x.clone()),
                values(weight.clone()),
                values(bias.clone()),
            );
            for activation in Activation::ALL {
                let (want, magnitude, pre, dims) = host(
                    &xv,
                    shape,
                    &wv,
                    weight.dims(),
                    &bv,
                    stride,
                    pad,
                    groups,
                    activation,
                );
                // The weight as loaded and stored outputs innermost, as the fold writes it.
                let outputs_innermost = stored_as(weight.clone(), [2, 3, 1, 0]);
                let layouts = [
                    (x.clone(), weight.clone()),
                    (channels_last.clone(), weight.clone()),
                    (channels_last.clone(), outputs_innermost),
                ];
                for (input, weight) in layouts {
                    let run = || {
                        conv_activated(&input, &weight, &bias, stride, pad, groups, activation)
                            .unwrap()
                    };
                    let _ = values(run());
                    let profiler = crate::device::kernel_profile::KernelProfiler::start("conv");
                    let got = run();
                    assert_eq!(profiler.finish().stages[0].launches, 1);
                    assert_eq!(got.dims(), dims);
                    let layout = got.clone().permute([0, 2, 3, 1]);
                    let layout = layout.try_into_primitive::<CubeBackend>().unwrap();
                    assert!(layout.is_contiguous(), "output not channels-last");
                    let taps = (per_group * k * k + 2) as f64;
                    for (j, g) in values(got).iter().enumerate() {
                        let rounding = 1.1 * taps * 2f64.powi(-24) * magnitude[j];
                        // `exp` of the pre-activation value, then a sum and a division.
                        let exp = match activation {
                            Activation::Swish | Activation::Sigmoid => {
                                (5.0 + 2.0 * pre[j].abs()) * 2f64.powi(-23) * want[j].abs()
                            }
                            _ => 0.0,
                        };
                        assert!(
                            (*g as f64 - want[j]).abs() <= rounding + exp + 1e-30,
                            "{activation:?} k{k} s{stride} [{j}]: {g} vs {}",
                            want[j]
                        );
                    }
                }
            }
        }
    }

    /// What the kernel does not take comes back as `None`: many inputs per group, a tensor
    /// tracked by autodiff, one on the CPU backend, a non-square kernel. A weight stored in
    /// another layout than its two (a transposed one; CUDA's padded rows of taps) is copied
    /// first: the same values as from a contiguous copy, one launch more, padding never read.
    #[test]
    fn other_convolutions_are_left_to_the_composed_form() {
        let _generator = crate::test_rng::lock();
        let wgpu = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        let run = |d: &burn::tensor::Device, c: usize, groups: usize, kw: usize, autodiff: bool| {
            let mut x = Tensor::<4>::ones([1, c, 5, 5], d);
            if autodiff {
                x = x.autodiff();
            }
            let w = Tensor::<4>::ones([c, c / groups, 3, kw], d);
            let b = Tensor::<1>::zeros([c], d);
            conv_activated(&x, &w, &b, 1, [(1, 1); 2], groups, Activation::Swish)
        };
        assert!(run(&wgpu, 8, 8, 3, false).is_some());
        assert!(run(&wgpu, 8, 1, 3, false).is_none());
        assert!(run(&wgpu, 8, 8, 3, true).is_none());
        assert!(run(&cpu, 8, 8, 3, false).is_none());
        assert!(run(&wgpu, 8, 8, 1, false).is_none());
        let x = Tensor::<4>::ones([1, 8, 5, 5], &wgpu);
        let b = Tensor::<1>::zeros([8], &wgpu);
        let random = Tensor::<4>::random([8, 1, 3, 3], Distribution::Default, &wgpu);
        let transposed = stored_as(random.clone(), [0, 1, 3, 2]);
        let padded = crate::kernels::gpu::padded_rows(random.clone());
        // Computed before the launches are counted.
        let _ = (
            values(random.clone()),
            values(transposed.clone()),
            values(padded.clone()),
        );
        let conv = |w: &Tensor<4>| {
            let profiler = crate::device::kernel_profile::KernelProfiler::start("conv");
            let y = conv_activated(&x, w, &b, 1, [(1, 1); 2], 8, Activation::Swish).unwrap();
            let launches = profiler.finish().stages[0].launches;
            (values(y), launches)
        };
        let (want, launches) = conv(&random);
        assert_eq!(launches, 1);
        for other in [transposed, padded] {
            assert_eq!(conv(&other), (want.clone(), 2));
        }
    }
}
