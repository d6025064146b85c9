//! Matrix products and convolutions at the run's precision (`--precision`, `device::precision`).
//!
//! At f32 and tf32 these are burn's own operations on f32 tensors (whether f32 products may use
//! TF32 tensor cores is decided inside burn's kernel selection), or hvq's tiled kernel for plain
//! f32 products on a GPU, where `HVQ_GPU_MATMUL` (`device::gpu_matmul`) gives it them: all
//! (`tiled`) or those it was timed faster on (`auto`, [`product_choice`](super::product_choice)).
//! At bf16 and f16 they cast their
//! operands (and bias) to the half type, run the operation there and cast the result back to
//! f32, as PyTorch's autocast does for `linear`, `matmul` and `conv2d`: every other operation of
//! the network (norms, softmax, activations, sums, the map) stays f32. The casts are passes of
//! their own; the products are where tensor cores pay for them.
//!
//! Each function comes in two forms: the plain one reads the process's precision, the `_at`
//! one takes the half type (or `None`) from its caller, so tests can run both precisions side by
//! side without touching the process-wide setting.

use burn::tensor::module::{conv2d as burn_conv2d, linear as burn_linear};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{FloatDType, Tensor};

use crate::device::precision;

/// The half type products run in now (`None`: f32 operands).
pub fn half_dtype() -> Option<FloatDType> {
    precision::current().half_dtype()
}

/// `x · weight + bias` over the last axis of `x` (`weight [in, out]`), at the run's precision.
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    linear_at(half_dtype(), x, weight, bias)
}

/// [`linear`] with its operands in `half` (f32 when `None`).
pub fn linear_at<const D: usize>(
    half: Option<FloatDType>,
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    match half {
        None => {
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            if let Some(y) = tiled_product(&x, &weight.clone().unsqueeze()) {
                return match bias {
                    Some(bias) => y + bias.unsqueeze(),
                    None => y,
                };
            }
            burn_linear(x, weight, bias)
        }
        Some(dt) => {
            burn_linear(x.cast(dt), weight.cast(dt), bias.map(|b| b.cast(dt))).cast(FloatDType::F32)
        }
    }
}

/// Batched matrix product `a · b`, at the run's precision.
pub fn matmul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    matmul_at(half_dtype(), a, b)
}

/// [`matmul`] with its operands in `half` (f32 when `None`).
pub fn matmul_at<const D: usize>(
    half: Option<FloatDType>,
    a: Tensor<D>,
    b: Tensor<D>,
) -> Tensor<D> {
    match half {
        None => {
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            if let Some(c) = tiled_product(&a, &b) {
                return c;
            }
            a.matmul(b)
        }
        Some(dt) => a.cast(dt).matmul(b.cast(dt)).cast(FloatDType::F32),
    }
}

/// The block size hvq's tiled kernel runs the f32 product `a · b` in, if it runs it: never,
/// every product it takes in blocks of 64, or those it was timed faster on (`HVQ_GPU_MATMUL`;
/// `auto` times this kind of product now if it was not timed before).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) fn runs_tiled<const D: usize>(
    a: &Tensor<D>,
    b: &Tensor<D>,
) -> Option<super::gpu_matmul_tiled::BlockSize> {
    runs_tiled_then(a, b, None)
}

/// [`runs_tiled`] for a product followed by the epilogue `then` (a kind of its own for `auto`,
/// timed with the epilogue: `product_choice::faster_tiled`).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn runs_tiled_then<const D: usize>(
    a: &Tensor<D>,
    b: &Tensor<D>,
    then: Option<&super::gpu_activations::RowEpilogue>,
) -> Option<super::gpu_matmul_tiled::BlockSize> {
    use super::gpu_matmul_tiled::{BlockSize, taken_strides};
    use crate::device::gpu_matmul::{TiledUse, tiled_use};
    match tiled_use() {
        TiledUse::Never => None,
        TiledUse::Always => taken_strides(a, b).map(|_| BlockSize::Of64),
        TiledUse::WhenFaster => super::product_choice::faster_tiled(a, b, then),
    }
}

/// `a · b` on hvq's tiled kernel when it runs this product ([`runs_tiled`]).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn tiled_product<const D: usize>(a: &Tensor<D>, b: &Tensor<D>) -> Option<Tensor<D>> {
    super::gpu_matmul_tiled::matmul_in(a, b, runs_tiled(a, b)?)
}

/// `activation(x · weight + bias) + residual` (the residual optional) for `x [rows, in]` and
/// `weight [in, out]` at f32 on a GPU backend: one launch of hvq's tiled kernel with the bias,
/// activation and residual applied as it writes (two when it splits the inner dimension) where
/// that kernel runs this product with them ([`runs_tiled_then`]; `auto` times the kind with
/// them), else burn's product and the epilogue's own kernel
/// (`gpu_activations::RowEpilogue::after`); the same f32 operations either way. `None` when the
/// bias or the residual does not fit the output or a tensor is not a plain f32 tensor of this
/// process's GPU backend, and the caller composes it.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(super) fn linear_activated(
    x: &Tensor<2>,
    weight: &Tensor<2>,
    bias: &Tensor<1>,
    residual: Option<&Tensor<2>>,
    activation: super::Activation,
) -> Option<Tensor<2>> {
    use super::{gpu_activations::RowEpilogue, gpu_matmul_tiled::matmul_then};
    let shape = [x.dims()[0], weight.dims()[1]];
    let then = RowEpilogue::new(bias, residual, activation, shape)?;
    if let Some(size) = runs_tiled_then(x, weight, Some(&then))
        && let Some(y) = matmul_then(x, weight, size, Some(&then))
    {
        return Some(y);
    }
    // burn's product: the routine chosen for this kind with its epilogue (asking `linear_at`
    // would ask again for the same operands without it, another kind).
    then.after(x.clone().matmul(weight.clone()))
}

/// 2-D convolution, at the run's precision.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    conv2d_at(half_dtype(), x, weight, bias, options)
}

/// [`conv2d`] with its operands in `half` (f32 when `None`).
pub fn conv2d_at(
    half: Option<FloatDType>,
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    if runs_as_product(&x, &weight, &options) {
        return pointwise_as_product(half, x, weight, bias);
    }
    match half {
        None => burn_conv2d(x, weight, bias, options),
        Some(dt) => burn_conv2d(
            x.cast(dt),
            weight.cast(dt),
            bias.map(|b| b.cast(dt)),
            options,
        )
        .cast(FloatDType::F32),
    }
}

/// A 1×1 convolution with stride 1, no padding and one group: a matrix product over channels.
fn is_pointwise(weight: &Tensor<4>, options: &ConvOptions<2>) -> bool {
    let [_, _, kh, kw] = weight.dims();
    (kh, kw) == (1, 1)
        && options.stride == [1, 1]
        && options.padding == [(0, 0); 2]
        && options.groups == 1
}

/// Whether `x` lives on one of this process's GPU backends (CubeCL: wgpu, CUDA).
pub(crate) fn on_gpu<const D: usize>(x: &Tensor<D>) -> bool {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return matches!(
        x.device().as_dispatch(),
        burn::backend::DispatchDevice::Cube(_)
    );
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = x;
        false
    }
}

/// A pointwise convolution ([`is_pointwise`]) of `x [n, c, h, w]` as the product of its pixels
/// `[n·h·w, c]` with the weight `[c, o]`, on a GPU backend. burn's GPU backends run every
/// convolution without autotuning as a direct kernel (each output value a loop over the input
/// channels, nothing shared between threads), while the matrix product is tiled: the 1×1
/// convolutions hold most of an EfficientNet's arithmetic. The pixels are taken channels-last,
/// as the direct kernel reads them (burn's GPU convolutions return channels-last buffers viewed
/// as NCHW), so a chain of convolutions copies nothing between them; the result is
/// channels-last too, viewed as NCHW. The sums run in another order than the direct kernel's:
/// the same values to float rounding.
fn pointwise_as_product(
    half: Option<FloatDType>,
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
) -> Tensor<4> {
    let [n, _, h, w] = x.dims();
    let (pixels, weight) = pointwise_operands(x, weight);
    from_pixel_rows(linear_at(half, pixels, weight, bias), [n, h, w])
}

/// A pointwise convolution's operands as a matrix product's: the pixels of `x [n, c, h, w]`
/// as rows `[n·h·w, c]` (channels-last, a view when `x` is laid out so) and the weight
/// `[o, c, 1, 1]` as `[c, o]`.
pub(crate) fn pointwise_operands(x: Tensor<4>, weight: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
    let [n, c, h, w] = x.dims();
    let out = weight.dims()[0];
    (
        x.permute([0, 2, 3, 1]).reshape([n * h * w, c]),
        weight.reshape([out, c]).transpose(),
    )
}

/// Rows of pixels `[n·h·w, o]` (channels-last) as the image batch `[n, o, h, w]` they are: a
/// view of the same buffer.
pub(crate) fn from_pixel_rows(rows: Tensor<2>, [n, h, w]: [usize; 3]) -> Tensor<4> {
    let out = rows.dims()[1];
    rows.reshape([n, h, w, out]).permute([0, 3, 1, 2])
}

/// Whether `conv2d` with these operands runs as a matrix product ([`pointwise_as_product`]).
pub(crate) fn runs_as_product(x: &Tensor<4>, weight: &Tensor<4>, options: &ConvOptions<2>) -> bool {
    is_pointwise(weight, options) && on_gpu(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{DType, Distribution, TensorData};

    /// The CPU backend: its half products are gemm's, with f32 sums (what the tolerances
    /// below assume; GPU half kernels may sum in the half type).
    fn cpu() -> burn::tensor::Device {
        crate::device::create(crate::device::DeviceChoice::Cpu).unwrap()
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// A value rounded to the half type's nearest (ties to even), computed on the host.
    fn round_to(dt: FloatDType, v: f32) -> f32 {
        match dt {
            FloatDType::F16 => burn::tensor::f16::from_f32(v).to_f32(),
            FloatDType::BF16 => burn::tensor::bf16::from_f32(v).to_f32(),
            _ => v,
        }
    }

    /// Each linear layer at a half type is the product of the operands rounded to that type,
    /// rounded to it (the product's output), plus the rounded bias, rounded again (the bias is
    /// added in the half type, as on a GPU): within one last place of the half type at each of
    /// the two roundings (the f32 sums can tip a rounding). f32 is burn's own operation exactly;
    /// results come back as f32.
    #[test]
    fn half_products_are_the_rounded_operands_products() {
        let _generator = crate::test_rng::lock();
        let device = cpu();
        let x: Tensor<3> = Tensor::random([2, 5, 24], Distribution::Normal(0.0, 1.0), &device);
        let w: Tensor<2> = Tensor::random([24, 7], Distribution::Normal(0.0, 0.3), &device);
        let b: Tensor<1> = Tensor::random([7], Distribution::Normal(0.0, 0.3), &device);
        let (xv, wv, bv) = (values(x.clone()), values(w.clone()), values(b.clone()));
        let exact_f32 = values(burn_linear(x.clone(), w.clone(), Some(b.clone())));
        assert_eq!(
            values(linear_at(None, x.clone(), w.clone(), Some(b.clone()))),
            exact_f32
        );
        for dt in [FloatDType::F16, FloatDType::BF16] {
            let got = linear_at(Some(dt), x.clone(), w.clone(), Some(b.clone()));
            assert_eq!(got.dtype(), DType::F32);
            let got = values(got);
            // One last place of the half type, relative (2^-10 for f16's 10 stored bits).
            let ulp = match dt {
                FloatDType::F16 => 2f64.powi(-10),
                _ => 2f64.powi(-7),
            };
            for row in 0..10 {
                for col in 0..7 {
                    let (mut product, mut magnitude, mut exact) = (0f64, 0f64, bv[col] as f64);
                    for k in 0..24 {
                        let (xk, wk) = (xv[row * 24 + k], wv[k * 7 + col]);
                        let term = round_to(dt, xk) as f64 * round_to(dt, wk) as f64;
                        product += term;
                        magnitude += term.abs();
                        exact += xk as f64 * wk as f64;
                    }
                    let product = round_to(dt, product as f32) as f64;
                    let want = round_to(dt, (product + round_to(dt, bv[col]) as f64) as f32) as f64;
                    let g = got[row * 7 + col] as f64;
                    assert!(
                        (g - want).abs() <= ulp * (product.abs() + want.abs()) + 1e-7,
                        "{dt:?} [{row},{col}]: {g} vs {want}"
                    );
                    // Of half precision's size against the exact value: the operands' two
                    // roundings (half a place each) and the two results' (≤ 1 place each, above).
                    let bound = ulp * (magnitude + 2.0 * product.abs() + 2.0 * want.abs()) + 1e-7;
                    assert!(
                        (g - exact).abs() <= bound,
                        "{dt:?} [{row},{col}]: {g} vs {exact}"
                    );
                }
            }
            assert_ne!(got, exact_f32, "{dt:?}: the operands were not rounded");
        }
    }

    /// The matmul and convolution forms route the same way: f32 is burn's operation exactly, a
    /// half type equals burn's operation on the cast operands, cast back.
    #[test]
    fn matmul_and_conv_route_through_the_half_type() {
        let _generator = crate::test_rng::lock();
        let device = cpu();
        let a: Tensor<3> = Tensor::random([2, 4, 16], Distribution::Normal(0.0, 1.0), &device);
        let b: Tensor<3> = Tensor::random([2, 16, 3], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(
            values(matmul_at(None, a.clone(), b.clone())),
            values(a.clone().matmul(b.clone()))
        );
        let x: Tensor<4> = Tensor::random([1, 4, 6, 6], Distribution::Normal(0.0, 1.0), &device);
        let w: Tensor<4> = Tensor::random([4, 1, 3, 3], Distribution::Normal(0.0, 0.3), &device);
        let bias = Tensor::<1>::from_data(TensorData::from([0.1f32, -0.2, 0.3, 0.0]), &device);
        let options = || ConvOptions::new_with_padding([1, 1], [(1, 1), (1, 1)], [1, 1], 4);
        assert_eq!(
            values(conv2d_at(
                None,
                x.clone(),
                w.clone(),
                Some(bias.clone()),
                options()
            )),
            values(burn_conv2d(
                x.clone(),
                w.clone(),
                Some(bias.clone()),
                options()
            ))
        );
        for dt in [FloatDType::F16, FloatDType::BF16] {
            let got = matmul_at(Some(dt), a.clone(), b.clone());
            assert_eq!(got.dtype(), DType::F32);
            let want = a
                .clone()
                .cast(dt)
                .matmul(b.clone().cast(dt))
                .cast(FloatDType::F32);
            assert_eq!(values(got), values(want));
            let got = conv2d_at(
                Some(dt),
                x.clone(),
                w.clone(),
                Some(bias.clone()),
                options(),
            );
            assert_eq!(got.dtype(), DType::F32);
            let want = burn_conv2d(
                x.clone().cast(dt),
                w.clone().cast(dt),
                Some(bias.clone().cast(dt)),
                options(),
            )
            .cast(FloatDType::F32);
            let (got, want) = (values(got), values(want));
            assert_eq!(got, want);
            let exact = values(burn_conv2d(
                x.clone(),
                w.clone(),
                Some(bias.clone()),
                options(),
            ));
            assert_ne!(got, exact, "{dt:?}: the operands were not rounded");
        }
    }

    /// On wgpu a 1×1 convolution runs as a matrix product ([`pointwise_as_product`]): against
    /// the f64 sum on the host, within the f32 rounding of a sum of `c` products (c·2⁻²⁴ of the
    /// sum of their magnitudes), with a bias, on an NCHW input and on the channels-last view a
    /// 3×3 convolution returns (what a network feeds it); the result feeds the next
    /// convolution as burn's own would (same values through a 3×3 depthwise convolution). The
    /// kernels launched are a matrix product's, no convolution's: cubek's, or hvq's tiled
    /// kernel when chosen (through `linear`, its bias added after).
    #[cfg(feature = "wgpu")]
    #[test]
    fn pointwise_convolutions_on_a_gpu_are_the_channel_products() {
        let _generator = crate::test_rng::lock();
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let (n, c, h, w, o) = (2, 24, 5, 7, 40);
        let x: Tensor<4> = Tensor::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let weight: Tensor<4> =
            Tensor::random([o, c, 1, 1], Distribution::Normal(0.0, 0.3), &device);
        let bias: Tensor<1> = Tensor::random([o], Distribution::Normal(0.0, 0.3), &device);
        let pointwise = || ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        assert!(is_pointwise(&weight, &pointwise()) && on_gpu(&x));
        // A 3×3 convolution's output: channels-last underneath.
        let spread: Tensor<4> =
            Tensor::random([c, c, 3, 3], Distribution::Normal(0.0, 0.1), &device);
        let chained = burn_conv2d(
            x.clone(),
            spread,
            None,
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        );
        // On cubek's routine and on hvq's tiled kernel (`HVQ_GPU_MATMUL=tiled`, this thread).
        for (tiled, input) in [
            (false, x.clone()),
            (false, chained.clone()),
            (true, x),
            (true, chained),
        ] {
            crate::device::gpu_matmul::tiled_here(Some(if tiled {
                crate::device::gpu_matmul::TiledUse::Always
            } else {
                crate::device::gpu_matmul::TiledUse::Never
            }));
            // Routed to the matrix product: no direct convolution kernel runs (kernels compiled
            // first, outside the profile).
            let _ = values(conv2d_at(
                None,
                input.clone(),
                weight.clone(),
                Some(bias.clone()),
                pointwise(),
            ));
            let profiler = crate::device::kernel_profile::KernelProfiler::start("pointwise");
            let got = conv2d_at(
                None,
                input.clone(),
                weight.clone(),
                Some(bias.clone()),
                pointwise(),
            );
            let profile = profiler.finish();
            let launched: Vec<String> = profile.stages[0]
                .names()
                .iter()
                .map(|name| name.to_lowercase())
                .collect();
            assert!(
                launched.iter().any(|k| k.contains("matmul"))
                    && !launched.iter().any(|k| k.contains("conv")),
                "{launched:?}"
            );
            assert_eq!(got.dims(), [n, o, h, w]);
            let (xv, wv, bv) = (
                values(input.clone()),
                values(weight.clone()),
                values(bias.clone()),
            );
            let gv = values(got.clone());
            for b in 0..n {
                for oc in 0..o {
                    for p in 0..h * w {
                        let (mut sum, mut magnitude) = (bv[oc] as f64, bv[oc].abs() as f64);
                        for ic in 0..c {
                            let term = xv[(b * c + ic) * h * w + p] as f64 * wv[oc * c + ic] as f64;
                            sum += term;
                            magnitude += term.abs();
                        }
                        let g = gv[(b * o + oc) * h * w + p] as f64;
                        let bound = (c + 1) as f64 * 2f64.powi(-24) * magnitude + 1e-30;
                        assert!((g - sum).abs() <= bound, "[{b},{oc},{p}]: {g} vs {sum}");
                    }
                }
            }
            // What follows it sees the same tensor as after burn's own convolution.
            let depthwise: Tensor<4> =
                Tensor::random([o, 1, 3, 3], Distribution::Normal(0.0, 0.3), &device);
            let next = |t: Tensor<4>| {
                values(burn_conv2d(
                    t,
                    depthwise.clone(),
                    None,
                    ConvOptions::new([1, 1], [1, 1], [1, 1], o),
                ))
            };
            let own = burn_conv2d(input, weight.clone(), Some(bias.clone()), pointwise());
            let (a, b) = (next(got), next(own));
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-5 * scale, "{x} vs {y}");
            }
            let tiled_ran = launched.iter().any(|k| k.starts_with("tiledmatmul"));
            assert_eq!(tiled_ran, tiled, "{launched:?}");
        }
        crate::device::gpu_matmul::tiled_here(None);
    }
}
