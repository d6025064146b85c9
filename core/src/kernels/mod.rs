//! Vectorised CPU kernels for the element-wise functions burn's CPU backend evaluates one scalar
//! `exp` at a time: swish (the B4 backbone's activation) and the last-axis softmax (attention,
//! OT score), plus its autodiff form for training (`softmax_autodiff`) and dropout masks
//! ([`dropout_mask`](dropout_mask::dropout_mask)); multi-head attention as one operation per
//! (batch, head) pair, forward and backward ([`fused_attention`], `attention.rs`); and the
//! layer norm under autodiff as one operation ([`layer_norm`], `layer_norm.rs`); and the AdamW
//! update as one pass per parameter ([`adamw_update`], `adamw.rs`).
//!
//! burn-flex calls the C library's scalar `expf` per element (7 % of a profiled `hvq bench
//! --config official`, plus the loop around it). Here `exp` is a branch-free polynomial that the
//! compiler vectorises, built once per instruction set (AVX-512, AVX2+FMA, baseline) and chosen
//! at run time from the CPU's flags; rows are split across the CPU backend's thread pool.
//!
//! The fast path applies to plain f32 tensors on a flex device. The softmax of an f32 tensor
//! tracked by autodiff on flex is one fused autodiff operation (`softmax_autodiff`, training).
//! On the GPU backends (wgpu, CUDA), plain f32 tensors at inference take hvq's CubeCL kernels
//! (`gpu_*.rs`: swish and sigmoid, the BatchNorm fold, layer norm, softmax, the depthwise and stem
//! convolutions with their bias and activation, a pointwise convolution's bias, activation and
//! residual after its product, a squeeze-and-excitation gate after its product; several
//! independent additions in one launch; a vector-quantiser level's step after its distance
//! product, the OT score's and the anomaly map; burn's flash attention on head views of the
//! projections; the optimiser's flat-buffer gather and its AdamW update; the codebooks' EMA
//! step in training, `gpu_codebook_ema`: one launch where burn's operations take two to
//! thirty); under autodiff the layer norm, the softmax, a linear layer with its bias, ReLU and
//! residual, a whole attention with its packed input projection, the POT loss, a quantiser
//! level's straight-through output and commitment and the reconstruction loss are one autodiff
//! operation each (`gpu_layer_norm_autodiff`, `gpu_softmax_autodiff`, `gpu_linear_autodiff`,
//! `gpu_pot_loss`, `gpu_straight_through`, `gpu_loss_means`, `gpu_attention_autodiff`; the last
//! one switchable by `HVQ_TRAIN_ATTENTION`, [`train_attention`]); anything else (another dtype,
//! the other operations under autodiff) takes burn's own ops. Results agree with the generic
//! formulas to a few ulp (tests below and in each module, against f64 or the composed form).

/// `isa_dispatch!(VIS fn NAME(ARGS) => BODY)` defines `NAME`, which runs the function `BODY`
/// compiled for AVX-512, for AVX2 + FMA or for the baseline: the widest the CPU has (`simd::level`,
/// which honours `HVQ_CPU_ISA`). `BODY` is `#[inline(always)]` plain Rust, so each copy is
/// vectorised for its instruction set.
macro_rules! isa_dispatch {
    ($vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:path) => {
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                match crate::kernels::simd::level() {
                    // SAFETY: the CPU reported the feature (`level`).
                    2 => unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    1 => unsafe { avx2($($arg),*) },
                    _ => $body($($arg),*),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            $body($($arg),*)
        }
    };
}

mod adamw;
mod attention;
pub mod attention_choice;
mod dropout_mask;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_activations;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_adamw;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_add_many;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_anomaly_map;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_attention;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_attention_autodiff;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_attention_split;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_codebook_ema;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_column_sums;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_conv;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_fold;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_gather;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_layer_norm;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_layer_norm_autodiff;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_linear_autodiff;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_loss_means;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_matmul_tiled;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_nearest_code;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_ot_score;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_pot_loss;
#[cfg(all(test, any(feature = "wgpu", feature = "cuda")))]
pub(crate) use gpu::relative;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_row_choice;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_row_max;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_se_excite;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_se_gate;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_softmax;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_softmax_autodiff;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_straight_through;
pub mod inference_attention;
pub mod isa;
mod layer_norm;
pub mod product_choice;
pub mod product_store;
pub mod products;
mod softmax_autodiff;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod timed_choice;
pub mod train_attention;
pub mod train_attention_choice;

pub use adamw::{AdamWScalars, adamw_fuses, adamw_update};
pub use attention::{attention_fuses, fused_attention};
pub use dropout_mask::dropout_mask;
pub use layer_norm::layer_norm;

use burn::backend::flex::FlexTensor;
use burn::backend::{DispatchDevice, Flex};
use burn::tensor::activation::softmax;
use burn::tensor::{DType, Device, Int, Tensor};

/// `x / (1 + e⁻ˣ)` (= `x·σ(x)`), element-wise. On the fast path x < −88 gives ≈ x·6e−39
/// (`exp` is clamped) where the exact value underflows to −0.
pub fn swish<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !on_plain_cpu(&x) {
        // One kernel on a GPU backend (`gpu_activations`).
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        if let Some(y) = gpu_activations::swish(&x) {
            return y;
        }
        return generic_swish(x);
    }
    map_in_place(x, usize::MAX, |part, row| simd::swish(part, row, 1.0))
}

/// The logistic sigmoid `1 / (1 + e⁻ˣ)`, element-wise: one kernel on a GPU backend
/// (`gpu_activations`), burn's own elsewhere.
pub fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if let Some(y) = gpu_activations::sigmoid(&x) {
        return y;
    }
    burn::tensor::activation::sigmoid(x)
}

/// An activation applied after a convolution ([`conv2d_fused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// None.
    Identity,
    /// `x / (1 + e⁻ˣ)` ([`swish`]).
    Swish,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `1 / (1 + e⁻ˣ)` ([`sigmoid`]).
    Sigmoid,
}

impl Activation {
    /// Every activation.
    pub const ALL: [Activation; 5] = [
        Activation::Identity,
        Activation::Swish,
        Activation::Relu,
        Activation::Relu6,
        Activation::Sigmoid,
    ];

    /// The activation of `x` on its own ([`swish`], [`sigmoid`]; ReLU6 as one clamp, one kernel
    /// on a GPU backend where `relu` then `clamp_max` are four).
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Identity => x,
            Activation::Swish => swish(x),
            Activation::Relu => burn::tensor::activation::relu(x),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::Sigmoid => sigmoid(x),
        }
    }
}

/// What follows a convolution in [`conv2d_fused`]: after its bias, an activation, then a
/// residual added (a block's input).
pub struct Epilogue {
    /// Applied to the convolution plus its bias.
    pub activation: Activation,
    /// Added last, of the output's shape.
    pub residual: Option<Tensor<4>>,
}

impl Epilogue {
    /// The activation alone.
    pub fn activation(activation: Activation) -> Self {
        Self {
            activation,
            residual: None,
        }
    }
}

/// `activation(conv2d(x, weight) + bias) + residual` ([`Epilogue`]) at the run's precision
/// ([`products::conv2d`]). On a GPU backend at f32 the bias, activation and residual take one
/// kernel after the convolution, or none: a convolution with a few inputs per group (depthwise,
/// or a stem's three colours) is one kernel with its epilogue (`gpu_conv`), a pointwise one a
/// matrix product and one kernel (`products::linear_activated`: one launch where hvq's tiled
/// kernel runs the product and applies them as it writes; burn adds the bias in a pass of its
/// own). Anything else is the convolution, then the activation, then the residual,
/// in the same f32 operations.
pub fn conv2d_fused(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    options: burn::tensor::ops::ConvOptions<2>,
    then: Epilogue,
) -> Tensor<4> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if let Some(y) = gpu_fused(&x, &weight, &bias, &options, &then) {
        return y;
    }
    let y = then
        .activation
        .apply(products::conv2d(x, weight, Some(bias), options));
    match then.residual {
        Some(r) => y + r,
        None => y,
    }
}

/// `activation(x·weight + bias) + residual` for `x [.., in]` and `weight [in, out]` (a linear
/// layer's transposed weight), the residual optional and of the output's shape, at the run's
/// precision ([`products::linear`]). On a GPU backend at f32, outside autodiff, the bias,
/// activation and residual take one kernel after the matrix product, or none where hvq's tiled
/// kernel runs it and applies them as it writes (`products::linear_activated`), where burn's
/// operations take one to three; the same f32 operations either way (the residual added last).
pub fn linear_fused<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Tensor<1>,
    activation: Activation,
    residual: Option<Tensor<D>>,
) -> Tensor<D> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if products::half_dtype().is_none()
        && !weight.is_autodiff()
        && gpu::plain_f32(x.clone()).is_some()
    {
        let dims = x.dims();
        let [_, out] = weight.dims();
        let rows = dims[..D - 1].iter().product::<usize>();
        let x_rows = x.clone().reshape([rows, dims[D - 1]]);
        let residual_rows = residual.clone().map(|r| r.reshape([rows, out]));
        if let Some(y) =
            products::linear_activated(&x_rows, &weight, &bias, residual_rows.as_ref(), activation)
        {
            let mut out_dims = dims;
            out_dims[D - 1] = out;
            return y.reshape(out_dims);
        }
    }
    let y = activation.apply(products::linear(x, weight, Some(bias)));
    // The residual on the left, as a layer writes `x + f(x)`: the value is the same either way,
    // but under autodiff the order of the operands is the order in which the backward pass adds
    // up `x`'s gradient contributions, and training keeps its rounding as before.
    match residual {
        Some(r) => r + y,
        None => y,
    }
}

/// `activation(x·Wᵀ + b) + residual` with `weight` stored `(out, in)` as one autodiff operation
/// on a GPU backend in training (`gpu_linear_autodiff`: the product and one kernel forward;
/// backward `∂W` in `W`'s own layout, so the optimiser flattens it without a copy). `None`
/// elsewhere (the CPU, inference, half precisions, an activation other than the identity or a
/// ReLU, a ReLU with a residual), and the caller composes it.
pub fn linear_trained<const D: usize>(
    x: &Tensor<D>,
    weight: &Tensor<2>,
    bias: &Tensor<1>,
    activation: Activation,
    residual: Option<&Tensor<D>>,
) -> Option<Tensor<D>> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu_linear_autodiff::linear(x, weight, bias, activation, residual);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = (x, weight, bias, activation, residual);
        None
    }
}

/// The reconstruction loss `mean((rec − feature)²)`, its mean taken by `mean` (the caller's order
/// of sums), as one autodiff operation on a GPU backend in training (`gpu_loss_means`:
/// the same value; a backward of two launches where burn's means take some eighteen); `None`
/// elsewhere (the CPU, an untracked `rec`, another dtype), and the caller composes it.
pub fn mean_squared_error_trained(
    rec: &Tensor<4>,
    feature: &Tensor<4>,
    mean: impl Fn(Tensor<4>) -> Tensor<1>,
) -> Option<Tensor<1>> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu_loss_means::mean_squared_error(rec, feature, mean);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = (rec, feature, mean);
        None
    }
}

/// `mean(t)` as one autodiff operation on a GPU backend in training (`gpu_loss_means`: burn's
/// value; the backward one launch, the gradient over n broadcast as a view, where burn's fills,
/// scales and multiplies); `None` elsewhere, and the caller takes burn's `mean`.
pub fn mean_trained(t: &Tensor<1>) -> Option<Tensor<1>> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu_loss_means::mean(t);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = t;
        None
    }
}

/// A vector quantiser's straight-through output `x + sg(q − x)` and per-sample commitment
/// `mean((q − x)²)` as autodiff operations on a GPU backend in training (`gpu_straight_through`:
/// one kernel forward, one backward); `None` elsewhere (the CPU, untracked tokens, another
/// dtype), and the caller composes it.
pub fn straight_through(x: &Tensor<3>, q: &Tensor<3>) -> Option<(Tensor<3>, Tensor<1>)> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu_straight_through::straight_through(x, q);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = (x, q);
        None
    }
}

/// [`straight_through`]'s values in burn's operations (any backend, tracked or not): `x +
/// sg(q − x)` and each sample's `mean((sg(q) − x)²)`, what the model computes where the
/// operation does not apply.
pub fn composed_straight_through(x: Tensor<3>, q: Tensor<3>) -> (Tensor<3>, Tensor<1>) {
    let [b, _, _] = x.dims();
    let q = q.detach();
    let diff = (q.clone() - x.clone())
        .powi_scalar(2)
        .mean_dim(2)
        .mean_dim(1)
        .reshape([b]);
    let quantized = x.clone() + (q - x).detach();
    (quantized, diff)
}

/// [`conv2d_fused`] on a GPU backend at f32; `None` where it is not one of the forms above.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gpu_fused(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    bias: &Tensor<1>,
    options: &burn::tensor::ops::ConvOptions<2>,
    then: &Epilogue,
) -> Option<Tensor<4>> {
    if products::half_dtype().is_some() || x.is_autodiff() || weight.is_autodiff() {
        return None;
    }
    if products::runs_as_product(x, weight, options) {
        let [n, _, h, w] = x.dims();
        let out = weight.dims()[0];
        let residual = then
            .residual
            .clone()
            .map(|r| r.permute([0, 2, 3, 1]).reshape([n * h * w, out]));
        let (pixels, weight) = products::pointwise_operands(x.clone(), weight.clone());
        let y =
            products::linear_activated(&pixels, &weight, bias, residual.as_ref(), then.activation)?;
        return Some(products::from_pixel_rows(y, [n, h, w]));
    }
    let [stride, stride_x] = options.stride;
    if then.residual.is_some() || stride != stride_x || options.dilation != [1, 1] {
        return None;
    }
    gpu_conv::conv_activated(
        x,
        weight,
        bias,
        stride,
        options.padding,
        options.groups,
        then.activation,
    )
}

/// A squeeze-and-excitation's two 1×1 convolutions (PyTorch's `_se_reduce`, `_se_expand`) and
/// the activation between them.
pub struct Excitation {
    /// `[r, c, 1, 1]`.
    pub reduce_weight: Tensor<4>,
    /// `[r]`.
    pub reduce_bias: Tensor<1>,
    /// `[c, r, 1, 1]`.
    pub expand_weight: Tensor<4>,
    /// `[c]`.
    pub expand_bias: Tensor<1>,
    /// After the reduce convolution (the expand one is followed by the sigmoid).
    pub activation: Activation,
}

/// Squeeze-and-excitation applied: `x · sigmoid(expand(activation(reduce(means))))` for the
/// block's activations `x [n, c, h, w]` and their channel means ([`channel_means`]). On a GPU
/// backend at f32, outside autodiff, on channels-last activations, two kernels compute the
/// gates (`gpu_se_excite`: the means' partial sums; the means, the two small products, biases
/// and activations) and one applies them (`gpu_se_gate`); elsewhere [`channel_means`], then
/// [`conv2d_fused`] twice, then the product. The same function; the sums in another order.
pub fn excite(x: Tensor<4>, excitation: Excitation) -> Tensor<4> {
    let Excitation {
        reduce_weight,
        reduce_bias,
        expand_weight,
        expand_bias,
        activation,
    } = excitation;
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    let gpu = products::half_dtype().is_none() && !x.is_autodiff();
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if gpu
        && let Some(gate) = gpu_se_excite::excite(
            &x,
            (&reduce_weight, &reduce_bias),
            (&expand_weight, &expand_bias),
            activation,
        )
    {
        if let Some(y) = gpu_se_gate::gated(&x, &gate) {
            return y;
        }
        // Activations the gate kernel does not take (not channels-last): burn's broadcast
        // product, one launch, rather than computing the gates again.
        let [n, c] = gate.dims();
        return x * gate.reshape([n, c, 1, 1]);
    }
    let options = burn::tensor::ops::ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    let hidden = conv2d_fused(
        channel_means(x.clone()),
        reduce_weight,
        reduce_bias,
        options.clone(),
        Epilogue::activation(activation),
    );
    let gate = conv2d_fused(
        hidden,
        expand_weight,
        expand_bias,
        options,
        Epilogue::activation(Activation::Sigmoid),
    );
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if gpu {
        let [n, c, _, _] = gate.dims();
        if let Some(y) = gpu_se_gate::gated(&x, &gate.clone().reshape([n, c])) {
            return y;
        }
    }
    x * gate
}

/// Each row's largest value, `[rows]`, of `x [rows, columns]`: on a GPU backend (plain f32) in
/// cubes of threads over chunks of each row (`gpu_row_max`), elsewhere burn's `max_dim`.
pub fn row_max(x: Tensor<2>) -> Tensor<1> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if let Some(maxima) = gpu_row_max::row_max(&x) {
        return maxima;
    }
    let [rows, _] = x.dims();
    x.max_dim(1).reshape([rows])
}

/// Which column of a row [`row_choice`] picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowChoice {
    /// The largest value's, the last on ties; NaN ranks as −∞.
    LastMaximum,
    /// The lowest value's, the first on ties; NaN ranks as +∞.
    FirstMinimum,
}

/// The column `rule` picks in each row of `values [rows, columns]`, `[rows]`, in one launch on a
/// GPU backend (plain f32: `gpu_row_choice`); `None` elsewhere, where the caller composes it
/// (`class_choice`, whose host twins define the same rule).
pub fn row_choice(values: &Tensor<2>, rule: RowChoice) -> Option<Tensor<1, Int>> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu_row_choice::row_choice(values, rule);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = (values, rule);
        None
    }
}

/// The squeeze of squeeze-and-excitation: each channel's mean over the image, `[n, c, 1, 1]`.
/// Laid out channels-last on a GPU, a channel's pixels are a column of the `[n, h·w, c]` view:
/// one reduction over them (as PyTorch's one `adaptive_avg_pool2d`) instead of two, over rows
/// and then columns (the same mean, summed in another order). [`excite`]'s GPU kernels take
/// the means themselves; this is its composed form's.
pub fn channel_means(x: Tensor<4>) -> Tensor<4> {
    if channels_last_on_gpu(&x) {
        let [n, c, h, w] = x.dims();
        return x
            .permute([0, 2, 3, 1])
            .reshape([n, h * w, c])
            .mean_dim(1)
            .reshape([n, 1, 1, c])
            .permute([0, 3, 1, 2]);
    }
    x.mean_dim(2).mean_dim(3)
}

/// Multi-head attention `softmax(q·kᵀ/√d)·v` over heads `q [B, H, Lq, d]`, `k [B, H, Lk, d]`,
/// `v [B, H, Lk, dv]` on a GPU backend at inference: burn's flash-attention kernel
/// (`gpu_attention`); `None` elsewhere (autodiff, the CPU, another dtype) or at a half
/// precision, and the caller composes it.
pub fn gpu_attention(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>) -> Option<Tensor<4>> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if products::half_dtype().is_none() {
        return gpu_attention::attention_unit(q, k, v);
    }
    let _ = (q, k, v);
    None
}

/// Inference's attention on the projections `q [B, Lq, E]`, `k [B, Lk, E]`, `v [B, Lk, E]`
/// (parts of a packed projection allowed) with `heads` heads, the heads read and the result
/// `[B, Lq, E]` written in place, in one launch: hvq's kernel (`gpu_attention_split`), burn's
/// flash kernel on head views (`gpu_attention::attention_merged`) or, with `auto`, the one the
/// device timed faster for this kind of attention (`attention_choice`), as
/// `HVQ_GPU_ATTENTION` chooses ([`inference_attention`]). `None` where [`gpu_attention`] is, or when the layout
/// is not one the kernel reads; the caller splits the heads.
pub fn gpu_attention_merged(
    q: &Tensor<3>,
    k: &Tensor<3>,
    v: &Tensor<3>,
    heads: usize,
) -> Option<Tensor<3>> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if products::half_dtype().is_none() {
        return match inference_attention::current() {
            inference_attention::InferenceAttention::Split => {
                gpu_attention_split::attention(q, k, v, heads)
            }
            inference_attention::InferenceAttention::Flash => {
                gpu_attention::attention_merged(q, k, v, heads)
            }
            inference_attention::InferenceAttention::Auto => {
                attention_choice::attention(q, k, v, heads)
            }
        };
    }
    let _ = (q, k, v, heads);
    None
}

/// One input of training's packed attention projection ([`packed_attention_trained`]): `x`
/// `[B, L, E]`, plus `offset` when there is one (the positional embedding, `[1, L, E]` or
/// `[B, L, E]`), multiplied with the packed weight's row blocks `[from, to)` (0: queries, 1:
/// keys, 2: values).
#[derive(Clone, Debug)]
pub struct ProjectionInput {
    /// The tokens.
    pub x: Tensor<3>,
    /// Added to `x` before the product (queries and keys get the positional embedding, values
    /// not).
    pub offset: Option<Tensor<3>>,
    /// First row block.
    pub from: usize,
    /// One past the last row block.
    pub to: usize,
}

impl ProjectionInput {
    /// `x (+ offset)` for the row blocks `[from, to)`.
    pub fn new(x: Tensor<3>, offset: Option<Tensor<3>>, from: usize, to: usize) -> Self {
        Self {
            x,
            offset,
            from,
            to,
        }
    }
}

/// Training's attention on a GPU backend as one autodiff operation with its packed input
/// projection (`gpu_attention_autodiff`): each input's `x + offset` multiplied with the packed
/// weight's row blocks `[from, to)` (together the three, in order) plus their bias, the heads'
/// scaled dot-product attention with dropout `p` on its weights, the heads merged (`[B, L, E]`,
/// before the output projection). A tensor given for several blocks (self-attention's `x` for
/// queries, keys and values; cross-attention's memory for keys and values; the positional
/// embedding as every offset) is one parent of the operation, its gradient one sum, not one per
/// use that autodiff then adds up. `None` where it does not apply (not tracked by autodiff on a
/// GPU backend, query and key lengths differ, heads wider than the kernels hold, more than one
/// offset tensor): the caller composes it.
///
/// `HVQ_TRAIN_ATTENTION` ([`train_attention`]) says which form computes it: this operation
/// (`fused`), the caller's composed form (`composed`: `None` here), or with `auto` the one the
/// device timed faster for this kind of attention (`train_attention_choice`), for which
/// `composed` is the caller's form as a function of the inputs, the packed weight and bias and
/// the dropout.
pub fn packed_attention_trained(
    inputs: &[ProjectionInput],
    weight: &Tensor<2>,
    bias: &Tensor<1>,
    heads: usize,
    p: f64,
    composed: ComposedAttention,
) -> Option<Tensor<3>> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return match train_attention::current() {
        train_attention::TrainAttention::Auto => {
            train_attention_choice::attention(inputs, weight, bias, heads, p, composed)
        }
        form => train_attention_choice::by_form(form, inputs, weight, bias, heads, p),
    };
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = (inputs, weight, bias, heads, p, composed);
        None
    }
}

/// A training attention's composed form, as [`packed_attention_trained`] takes it: from the
/// inputs, the packed projection's weight `[3E, E]` and bias `[3E]` and the dropout, the heads
/// merged `[B, L, E]` (before the output projection).
pub type ComposedAttention<'a> =
    &'a dyn Fn(&[ProjectionInput], &Tensor<2>, &Tensor<1>, f64) -> Tensor<3>;
/// One vector-quantiser level's results for a batch, from [`nearest_codes`].
pub struct NearestCodes {
    /// Each token's code, `[B, L]`.
    pub indices: Tensor<2, burn::tensor::Int>,
    /// The chosen codes, `[B, L, D]`.
    pub codes: Tensor<3>,
    /// The straight-through output `x + (q − x)`, `[B, L, D]`.
    pub quantized: Tensor<3>,
    /// Each token's `mean_d (q − x)²`, `[B, L]`.
    pub commitment: Tensor<2>,
}

/// Each token's nearest code on a GPU backend at inference, in one kernel (`gpu_nearest_code`):
/// from the tokens `x [B, L, D]`, their dot products `dots [B, L, K]` with their sample's codes,
/// the codes' squared norms `code_norms [G, K]` and the codes as rows `code_rows [G·K, D]` (G = 1
/// for a codebook every sample shares, G = B for one per sample). `None` elsewhere (the CPU,
/// autodiff, another dtype), and the caller composes it.
pub fn nearest_codes(
    x: &Tensor<3>,
    dots: &Tensor<3>,
    code_norms: &Tensor<2>,
    code_rows: &Tensor<2>,
) -> Option<NearestCodes> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu_nearest_code::nearest_codes(x, dots, code_norms, code_rows);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = (x, dots, code_norms, code_rows);
        None
    }
}

/// The decay of one codebook EMA step for `m` codebooks at once on a GPU backend, in one kernel
/// (`gpu_codebook_ema`): from the tokens `x [m, L, D]`, each token's code `indices [m, L]` and
/// the old counts `cluster_size [m, K]` and sums `embed_avg [m, D, K]`, the new
/// `(old·keep + n_k·add, old·keep + (Σ_{t→k} x_t)·add)`. `None` off a GPU backend or for
/// tensors the kernel does not take (tracked by autodiff, not f32, shapes that disagree); the
/// caller composes it.
pub fn codebook_ema_decay(
    x: &Tensor<3>,
    indices: &Tensor<2, burn::tensor::Int>,
    cluster_size: &Tensor<2>,
    embed_avg: &Tensor<3>,
    keep: f32,
    add: f32,
) -> Option<(Tensor<2>, Tensor<3>)> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu_codebook_ema::decay(x, indices, cluster_size, embed_avg, keep, add);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = (x, indices, cluster_size, embed_avg, keep, add);
        None
    }
}

/// The codes of a codebook EMA step on a GPU backend, in one kernel (`gpu_codebook_ema`):
/// `embed_avg [m, D, K] / ((cluster_size + eps) / (total + codes_eps) · total)` with the counts
/// `cluster_size [m, K]` and their sums `total [m, 1]` (the Laplace-smoothed counts of the
/// reference). `None` where [`codebook_ema_decay`] is.
pub fn codebook_ema_normalise(
    embed_avg: &Tensor<3>,
    cluster_size: &Tensor<2>,
    total: &Tensor<2>,
    eps: f32,
    codes_eps: f32,
) -> Option<Tensor<3>> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu_codebook_ema::normalise(embed_avg, cluster_size, total, eps, codes_eps);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = (embed_avg, cluster_size, total, eps, codes_eps);
        None
    }
}

/// Each token's OT score `Σ_k softmax_k(x·e_k / τ) · (1 − cos(x, e_k))` on a GPU backend at
/// inference, in one kernel (`gpu_ot_score`): from the tokens `x [B, L, D]`, their dot products
/// `dots [B, L, K]` with their sample's prototypes and the prototypes' norms `code_norms [G, K]`
/// (clamped to `zero_norm` already, as the tokens' norms are inside). `None` elsewhere, and the
/// caller composes it.
pub fn ot_scores(
    x: &Tensor<3>,
    dots: &Tensor<3>,
    code_norms: &Tensor<2>,
    temperature: f32,
    zero_norm: f32,
) -> Option<Tensor<2>> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu_ot_score::ot_scores(x, dots, code_norms, temperature, zero_norm);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = (x, dots, code_norms, temperature, zero_norm);
        None
    }
}

/// The POT loss per sample `[B]` of tokens `x [B, L, D]` tracked by autodiff against each
/// sample's prototypes `embeds [B, D, K]` (constants) as one autodiff operation on a GPU backend
/// in training (`gpu_pot_loss`: the product and three kernels forward; two kernels, a row sum
/// and a product backward), norms below `zero_norm` clamped to it. `None` elsewhere (the CPU,
/// untracked tokens, half precisions), and the caller composes it (`model::ot`).
pub fn pot_loss_trained(
    x: &Tensor<3>,
    embeds: &Tensor<3>,
    temperature: f32,
    zero_norm: f32,
) -> Option<Tensor<1>> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu_pot_loss::pot_loss(x, embeds, temperature, zero_norm);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = (x, embeds, temperature, zero_norm);
        None
    }
}

/// The anomaly map `‖rec − feature‖₂ + weight · ot` at feature resolution on a GPU backend, in
/// one kernel (`gpu_anomaly_map`): `rec` and `feature` `[B, F, H, W]` in any layout, the OT
/// score `ot [B, H·W]` if any; `[B, 1, H, W]`. `None` elsewhere, and the caller composes it.
pub fn anomaly_map(
    rec: &Tensor<4>,
    feature: &Tensor<4>,
    ot: Option<&Tensor<2>>,
    weight: f32,
) -> Option<Tensor<4>> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu_anomaly_map::anomaly_map(rec, feature, ot, weight);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = (rec, feature, ot, weight);
        None
    }
}

/// Whether `x [n, c, h, w]` is a plain f32 tensor on a GPU backend laid out channels-last (as
/// burn's GPU convolutions and hvq's pointwise products leave activations): its pixels are then
/// the rows of an `[n·h·w, c]` view, without a copy.
pub fn channels_last_on_gpu(x: &Tensor<4>) -> bool {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu::contiguous_f32(x.clone().permute([0, 2, 3, 1])).is_some();
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = x;
        false
    }
}

/// Whether [`add_many`] adds several pairs per launch for tensors like `x`: a plain f32 tensor
/// of a GPU backend, products at f32 (at a half precision a product's result comes back through
/// a cast, which its bias add would not see fused). Callers use it to choose between producing
/// products and biases apart or burn's `linear` with its bias.
pub fn adds_fuse<const D: usize>(x: &Tensor<D>) -> bool {
    !x.is_autodiff()
        && x.dtype() == DType::F32
        && products::half_dtype().is_none()
        && products::on_gpu(x)
}

/// `x + y` for every pair (`y` broadcast onto `x`, its shape the end of `x`'s after leading
/// ones): on a GPU backend up to three pairs per launch (`gpu_add_many`), elsewhere burn's `add`
/// one pair at a time. The same f32 additions either way.
pub fn add_many<const D: usize>(pairs: Vec<(Tensor<D>, Tensor<D>)>) -> Vec<Tensor<D>> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if let Some(sums) = gpu_add_many::add_many(&pairs) {
        return sums;
    }
    pairs.into_iter().map(|(x, y)| x + y).collect()
}

/// Each `x`, plus its offset where it has one (broadcast as in [`add_many`]): all the sums in
/// one [`add_many`] (on a GPU backend, up to three a launch), the `x`s without one as they are.
pub fn with_offsets<const D: usize>(inputs: Vec<(Tensor<D>, Option<Tensor<D>>)>) -> Vec<Tensor<D>> {
    let pairs = inputs
        .iter()
        .filter_map(|(x, offset)| offset.clone().map(|o| (x.clone(), o)))
        .collect();
    let mut sums = add_many(pairs).into_iter();
    inputs
        .into_iter()
        .map(|(x, offset)| match offset {
            Some(_) => sums.next().expect("one sum per offset"),
            None => x,
        })
        .collect()
}

/// Whether `a` and `b` are one tensor: the same elements of the same GPU buffer (however
/// cloned or re-wrapped). Always false off a GPU backend, where nothing asks.
pub fn same_storage<const D: usize>(a: &Tensor<D>, b: &Tensor<D>) -> bool {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu::same_storage(a, b);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = (a, b);
        false
    }
}

/// One buffer of `total` elements with each `(offset, part)` written at its offset (offsets
/// increasing, parts not overlapping) and zeros elsewhere: the optimiser's flat buffers. On a GPU
/// backend a few launches for all the parts (`gpu_gather`), elsewhere one `slice_assign` each.
pub fn gather_flat(
    parts: impl IntoIterator<Item = (usize, Tensor<1>)>,
    total: usize,
    device: &Device,
) -> Tensor<1> {
    let parts: Vec<(usize, Tensor<1>)> = parts.into_iter().collect();
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if let Some(flat) = gpu_gather::gather(&parts, total) {
        return flat;
    }
    let mut flat = Tensor::zeros([total], device);
    for (offset, part) in parts {
        let n = part.dims()[0];
        flat = flat.slice_assign(offset..offset + n, part);
    }
    flat
}

/// `parts` (plain contiguous f32 tensors of one shape on a GPU backend) stacked along a new first
/// axis in ⌈parts / 8⌉ launches (`gpu_gather`: eight parts a launch), where burn's `stack` takes one
/// `slice_assign` per part: the vector quantiser's training rounds stack each round's codebooks
/// three times a level. `None` off a GPU backend, for tensors tracked by autodiff, of another
/// dtype or not contiguous, or shapes that differ; the caller stacks them with burn.
pub fn stack_on_gpu<const D: usize, const E: usize>(parts: &[Tensor<D>]) -> Option<Tensor<E>> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu_gather::stack(parts);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = parts;
        None
    }
}

/// One AdamW step over flat buffers as one GPU kernel (`gpu_adamw`): `(parameter, first
/// moment, second moment)`, the gradient scaled by `clip` (`[1]`, on the device) and the other
/// scalars from `s` (its `clip` unused). `None` off a GPU backend or for tensors the kernel does
/// not take (the caller composes the update).
pub fn adamw_update_on_gpu(
    param: &Tensor<1>,
    grad: &Tensor<1>,
    m: &Tensor<1>,
    v: &Tensor<1>,
    clip: &Tensor<1>,
    s: AdamWScalars,
) -> Option<(Tensor<1>, Tensor<1>, Tensor<1>)> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu_adamw::update(param, grad, m, v, clip, s);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = (param, grad, m, v, clip, s);
        None
    }
}

/// A convolution's kernel and bias with the inference BatchNorm after it folded in: BN is affine
/// per output channel, `y = x·s + (β − μ·s)` with `s = γ/√(σ² + ε)`, so the convolution with
/// kernel `w·s` and bias `β − μ·s` (plus its own bias times `s`) computes conv + BN. One kernel on
/// a GPU backend (`gpu_fold`), burn's operations elsewhere; the same f32 operations either way.
pub fn fold_batch_norm(input: BatchNormFold, eps: f32) -> (Tensor<4>, Tensor<1>) {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if let Some(folded) = gpu_fold::fold(&input, eps) {
        return folded;
    }
    composed_fold(input, eps)
}

/// [`fold_batch_norm`] in burn's operations (any backend).
pub(crate) fn composed_fold(input: BatchNormFold, eps: f32) -> (Tensor<4>, Tensor<1>) {
    let BatchNormFold {
        weight,
        conv_bias,
        gamma,
        beta,
        mean,
        var,
    } = input;
    let [out, _, _, _] = weight.dims();
    let scale = gamma / var.add_scalar(eps).sqrt();
    let weight = weight * scale.clone().reshape([out, 1, 1, 1]);
    let mut bias = beta - mean * scale.clone();
    if let Some(b) = conv_bias {
        bias = bias + b * scale;
    }
    (weight, bias)
}

/// The parameters [`fold_batch_norm`] folds: a convolution's and its BatchNorm's.
pub struct BatchNormFold {
    /// Kernel `[out, in/groups, kh, kw]`.
    pub weight: Tensor<4>,
    /// The convolution's own bias, if any.
    pub conv_bias: Option<Tensor<1>>,
    /// BatchNorm scale γ, `[out]`.
    pub gamma: Tensor<1>,
    /// BatchNorm shift β.
    pub beta: Tensor<1>,
    /// Running mean μ.
    pub mean: Tensor<1>,
    /// Running variance σ².
    pub var: Tensor<1>,
}

/// Softmax over the last axis. Tensors tracked by autodiff on the CPU backend get one fused
/// autodiff operation (`softmax_autodiff`); other backends burn's own softmax.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    softmax_last_scaled(x, 1.0)
}

/// `softmax(scale · x)` over the last axis, for `scale > 0`: attention's scaled dot products
/// without a pass that scales the queries (on the CPU the scale is applied inside the softmax
/// kernel and its backward; elsewhere `x` is multiplied first). `scale = 1` is exactly
/// [`softmax_last`].
pub fn softmax_last_scaled<const D: usize>(x: Tensor<D>, scale: f32) -> Tensor<D> {
    assert!(
        scale > 0.0,
        "softmax_last_scaled: scale {scale} must be positive"
    );
    if !softmax_kernel_takes(&x) {
        // On a GPU backend, inference: one kernel, the scale inside (`gpu_softmax`); training:
        // one autodiff operation, the same kernel forward and one backward
        // (`gpu_softmax_autodiff`).
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        if let Some(y) =
            gpu_softmax::softmax(&x, scale).or_else(|| gpu_softmax_autodiff::softmax(&x, scale))
        {
            return y;
        }
        let x = if scale == 1.0 { x } else { x.mul_scalar(scale) };
        return softmax(x, D - 1);
    }
    let row = x.dims()[D - 1];
    if row == 0 {
        return x;
    }
    if x.is_autodiff() {
        return softmax_autodiff::softmax_last(x, scale);
    }
    map_in_place(x, row, |part, row| simd::softmax_rows(part, row, scale))
}

/// Attention weights `softmax(scale · q·kᵀ)` over the last axis, from `q [.., Lq, d]` and
/// `k_t [.., d, Lk]` (`scale > 0`). On the CPU backend the scale is applied inside the softmax
/// kernel (no pass over `q`); other backends scale `q` before the product, as PyTorch's
/// `nn.MultiheadAttention` does (`q` is smaller than the scores there).
pub fn attention_weights(q: Tensor<4>, k_t: Tensor<4>, scale: f32) -> Tensor<4> {
    if softmax_kernel_takes(&q) {
        softmax_last_scaled(products::matmul(q, k_t), scale)
    } else {
        softmax_last(products::matmul(q.mul_scalar(scale), k_t))
    }
}

/// The formula the fast path computes, in burn ops (any backend, differentiable).
fn generic_swish<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone() / x.neg().exp().add_scalar(1.0)
}

/// Whether the softmax kernel here takes `x` (and so applies a scale for free): plain f32 on
/// the CPU, or tracked by autodiff where the fused operation applies.
fn softmax_kernel_takes<const D: usize>(x: &Tensor<D>) -> bool {
    if x.is_autodiff() {
        softmax_autodiff::applies(x)
    } else {
        on_plain_cpu(x)
    }
}

fn on_plain_cpu<const D: usize>(x: &Tensor<D>) -> bool {
    !x.is_autodiff()
        && x.dtype() == DType::F32
        && matches!(x.device().as_dispatch(), DispatchDevice::Flex(_))
}

/// Run `kernel` over the tensor's elements in place, in chunks of whole rows of `row` elements
/// (`usize::MAX`: any split), across the thread pool. The buffer is copied first only when it is
/// shared with another tensor or not laid out contiguously.
fn map_in_place<const D: usize>(
    x: Tensor<D>,
    row: usize,
    kernel: impl Fn(&mut [f32], usize) + Sync + Send,
) -> Tensor<D> {
    let flex = match x.try_into_primitive::<Flex>() {
        Ok(t) => t,
        // `on_plain_cpu` checked the device; a mismatch here is a bug in that check.
        Err(e) => panic!("kernels: CPU tensor expected: {e:?}"),
    };
    Tensor::from_primitive::<Flex>(map_in_place_flex(flex, row, kernel))
}

/// [`map_in_place`] on the CPU backend's own tensor type.
fn map_in_place_flex(
    flex: FlexTensor,
    row: usize,
    kernel: impl Fn(&mut [f32], usize) + Sync + Send,
) -> FlexTensor {
    let mut flex = flex.to_contiguous();
    for_each_chunk(elements_mut(&mut flex), row, |_, part, row| {
        kernel(part, row)
    });
    flex
}

/// The f32 elements of a tensor laid out contiguously (as `to_contiguous` returns it).
fn elements(t: &FlexTensor) -> &[f32] {
    let (start, end) = t
        .layout()
        .contiguous_offsets()
        .expect("to_contiguous returns a contiguous layout");
    &t.storage::<f32>()[start..end]
}

/// [`elements`] to write; the buffer is copied first if another tensor shares it.
fn elements_mut(t: &mut FlexTensor) -> &mut [f32] {
    let (start, end) = t
        .layout()
        .contiguous_offsets()
        .expect("to_contiguous returns a contiguous layout");
    &mut t.storage_mut::<f32>()[start..end]
}

/// Below this many elements one thread does the whole tensor (splitting costs more).
#[cfg(feature = "parallel")]
const PARALLEL_MIN: usize = 1 << 15;

/// Run `kernel(offset, chunk, row_len)` over `data` in chunks of whole rows of `row` elements
/// (`usize::MAX`: any split), across the thread pool; `offset` is the chunk's first index in
/// `data`. The kernels that write one buffer split their work through this one policy; the layer
/// norm (several buffers, and row sums that must not depend on the split) and AdamW (three
/// buffers written together) cut theirs in fixed pieces of their own.
fn for_each_chunk(
    data: &mut [f32],
    row: usize,
    kernel: impl Fn(usize, &mut [f32], usize) + Sync + Send,
) {
    if data.is_empty() {
        // e.g. [0, 5]: no rows (and a zero row length would be no valid chunk size).
        return;
    }
    let row_len = if row == usize::MAX {
        data.len().max(1)
    } else {
        row
    };
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        if data.len() >= PARALLEL_MIN {
            let threads = rayon::current_num_threads().max(1);
            // A few chunks per thread for balance, each a whole number of rows (any split when
            // the kernel is element-wise).
            let pieces = threads * 4;
            let chunk = if row == usize::MAX {
                data.len().div_ceil(pieces)
            } else {
                (data.len() / row_len).div_ceil(pieces).max(1) * row_len
            };
            data.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(c, part)| kernel(c * chunk, part, row_len.min(part.len())));
            return;
        }
    }
    let len = data.len();
    kernel(0, data, row_len.min(len));
}

/// The kernels, compiled once per instruction set.
mod simd {
    /// Chooses the widest instruction set the CPU has, once.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn level() -> u8 {
        use std::sync::OnceLock;
        static LEVEL: OnceLock<u8> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            // `HVQ_CPU_ISA=avx2` measures CPUs without AVX-512 (crate::kernels::isa).
            if crate::kernels::isa::avx512_allowed()
                && std::arch::is_x86_feature_detected!("avx512f")
            {
                2
            } else if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                1
            } else {
                0
            }
        })
    }

    // Each takes its data, its row length and one parameter (softmax: the scale of the logits;
    // swish: unused).
    isa_dispatch!(pub fn swish(data: &mut [f32], row: usize, param: f32) => super::portable::swish);
    isa_dispatch!(
        pub fn softmax_rows(data: &mut [f32], row: usize, param: f32) => super::portable::softmax_rows
    );
}

/// Plain Rust loops written so the compiler vectorises them (no branches, no calls, reductions
/// over independent lanes); `simd` instantiates them per instruction set.
pub(crate) mod portable {
    /// Lanes of the reductions: 16 independent accumulators fill an AVX-512 register.
    const LANES: usize = 16;

    /// `eˣ` for f32, Cephes' `expf`: x = n·ln2 + r with |r| ≤ ln2/2, a degree-7 polynomial for
    /// `eʳ`, and 2ⁿ built in the exponent bits. Inputs are clamped to [−87.3, 88] so 2ⁿ stays a
    /// normal float (below: ≈1e−38 instead of a subnormal or 0; above: ≈1.7e38 instead of ∞);
    /// callers here only need those ranges (softmax after max subtraction, swish's denominator).
    /// NaN stays NaN.
    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        // ln 2 split so n·LN2_HI is exact for |n| < 2⁹.
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        // 1.5·2²³: adding it rounds to an integer held in the low mantissa bits.
        const ROUND: f32 = 12_582_912.0;
        let x = x.clamp(-87.3, 88.0);
        let t = x * LOG2E + ROUND;
        let n = t - ROUND;
        let r = x - n * LN2_HI - n * LN2_LO;
        let p = 1.987_569_1e-4;
        let p = p * r + 1.398_199_9e-3;
        let p = p * r + 8.333_452e-3;
        let p = p * r + 4.166_579_6e-2;
        let p = p * r + 1.666_666_5e-1;
        let p = p * r + 0.5; // Cephes: 5.0000001201e-1, which is 0.5 in f32
        let er = p * r * r + r + 1.0;
        // n + 127 in the exponent field: t's low bits hold n (two's complement) + 2²².
        let bits = (t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127)) << 23;
        er * f32::from_bits(bits)
    }

    #[inline(always)]
    pub fn swish(data: &mut [f32], _row: usize, _unused: f32) {
        for v in data.iter_mut() {
            *v = *v / (1.0 + exp(-*v));
        }
    }

    /// Stable softmax of `scale ·` each row of `row` elements (`scale > 0`): max,
    /// `exp((x − max) · scale)` and sum, normalise. `scale = 1` multiplies exactly.
    #[inline(always)]
    pub fn softmax_rows(data: &mut [f32], row: usize, scale: f32) {
        for r in data.chunks_exact_mut(row) {
            let max = max(r);
            let mut acc = [0.0f32; LANES];
            let mut chunks = r.chunks_exact_mut(LANES);
            for c in &mut chunks {
                for (a, v) in acc.iter_mut().zip(c.iter_mut()) {
                    *v = exp((*v - max) * scale);
                    *a += *v;
                }
            }
            let mut sum = 0.0;
            for v in chunks.into_remainder() {
                *v = exp((*v - max) * scale);
                sum += *v;
            }
            sum += acc.iter().sum::<f32>();
            let inv = 1.0 / sum;
            for v in r.iter_mut() {
                *v *= inv;
            }
        }
    }

    #[inline(always)]
    fn max(r: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; LANES];
        let mut chunks = r.chunks_exact(LANES);
        for c in &mut chunks {
            for (a, v) in acc.iter_mut().zip(c) {
                *a = if *v > *a { *v } else { *a };
            }
        }
        let mut m = f32::NEG_INFINITY;
        for v in chunks.remainder().iter().chain(acc.iter()) {
            m = if *v > m { *v } else { m };
        }
        m
    }
}

/// [`conv2d_fused`] on wgpu against the same convolution, bias, activation and residual composed
/// on the CPU backend: within float rounding of each other (the sums run in other orders), for
/// the forms the backbone uses, on channels-last activations as its convolutions leave them: a
/// pointwise convolution with an activation and one with a residual (a matrix product and one
/// kernel: two launches, no copy), a depthwise and a stem-like one (one launch); and a grouped convolution with many inputs per group, which neither kernel
/// takes, composed on wgpu too.
#[cfg(all(test, feature = "wgpu"))]
mod fused_tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::ops::ConvOptions;

    #[test]
    fn fused_convolutions_equal_the_composed_form() {
        let _generator = crate::test_rng::lock();
        let wgpu = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        // (input channels, outputs, groups, k, stride, padding, activation, residual, launches)
        let cases = [
            (16, 24, 1, 1, 1, 0, Activation::Swish, false, Some(2)),
            (24, 24, 1, 1, 1, 0, Activation::Identity, true, Some(2)),
            (16, 16, 16, 3, 2, 1, Activation::Relu6, false, Some(1)),
            (3, 8, 1, 3, 2, 1, Activation::Swish, false, Some(1)),
            (16, 16, 2, 3, 1, 1, Activation::Sigmoid, false, None),
        ];
        for (c, o, groups, k, stride, pad, activation, residual, launches) in cases {
            let x: Tensor<4> = Tensor::random([2, c, 7, 6], Distribution::Normal(0.0, 1.0), &cpu);
            let w: Tensor<4> =
                Tensor::random([o, c / groups, k, k], Distribution::Normal(0.0, 0.3), &cpu);
            let b: Tensor<1> = Tensor::random([o], Distribution::Normal(0.0, 0.5), &cpu);
            let options = ConvOptions::new([stride, stride], [pad, pad], [1, 1], groups);
            let out_dims =
                burn::tensor::module::conv2d(x.clone(), w.clone(), None, options.clone()).dims();
            let r: Tensor<4> = Tensor::random(out_dims, Distribution::Normal(0.0, 1.0), &cpu);
            // On wgpu the activations are laid out channels-last, as the backbone's
            // convolutions leave them.
            let channels_last = |t: &Tensor<4>| {
                let t = t.clone().to_device(&wgpu).permute([0, 2, 3, 1]);
                let [n, h, w, c] = t.dims();
                // A reshape of a permuted view copies it into that order.
                t.reshape([n * h * w * c])
                    .reshape([n, h, w, c])
                    .permute([0, 3, 1, 2])
            };
            let want = conv2d_fused(
                x.clone(),
                w.clone(),
                b.clone(),
                options.clone(),
                Epilogue {
                    activation,
                    residual: residual.then(|| r.clone()),
                },
            );
            let (xg, rg) = (channels_last(&x), channels_last(&r));
            let run = || {
                conv2d_fused(
                    xg.clone(),
                    w.clone().to_device(&wgpu),
                    b.clone().to_device(&wgpu),
                    options.clone(),
                    Epilogue {
                        activation,
                        residual: residual.then(|| rg.clone()),
                    },
                )
            };
            let _ = run().into_data();
            let profiler = crate::device::kernel_profile::KernelProfiler::start("fused");
            let got = run();
            let profile = profiler.finish();
            if let Some(launches) = launches {
                assert_eq!(
                    profile.stages[0].launches, launches,
                    "k{k} groups {groups}: {profile:#?}"
                );
            }
            let (got, want) = (got.into_data(), want.into_data());
            let (got, want) = (
                got.try_to_vec::<f32>().unwrap(),
                want.try_to_vec::<f32>().unwrap(),
            );
            assert_eq!(got.len(), want.len());
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5 * scale,
                    "{activation:?} k{k} groups {groups}: {g} vs {w}"
                );
            }
        }
    }
}

/// [`linear_fused`] on wgpu against the f64 form on the host, for a transformer's uses: ReLU
/// without a residual (the FFN's first layer), the identity with one (the attention's output
/// projection and the FFN's second layer, the block's input added): a matrix product and one
/// kernel (two launches, where burn's operations take three or four), within the product's
/// rounding (the terms' magnitudes times the inner size and a few roundings more); and the same
/// call on the CPU, composed, within the same bound.
#[cfg(all(test, feature = "wgpu"))]
mod linear_tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn a_fused_linear_layer_equals_its_f64_form() {
        let _generator = crate::test_rng::lock();
        let wgpu = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        let (b, l, d_in, d_out) = (2usize, 13usize, 24usize, 40usize);
        let values = |t: Tensor<3>| t.into_data().try_to_vec::<f32>().unwrap();
        let x: Tensor<3> = Tensor::random([b, l, d_in], Distribution::Normal(0.0, 1.0), &cpu);
        let w: Tensor<2> = Tensor::random([d_in, d_out], Distribution::Normal(0.0, 0.3), &cpu);
        let bias: Tensor<1> = Tensor::random([d_out], Distribution::Normal(0.0, 0.5), &cpu);
        let r: Tensor<3> = Tensor::random([b, l, d_out], Distribution::Normal(0.0, 1.0), &cpu);
        let (xv, wv, rv) = (values(x.clone()), w.clone().into_data(), values(r.clone()));
        let wv = wv.try_to_vec::<f32>().unwrap();
        let bv = bias.clone().into_data().try_to_vec::<f32>().unwrap();
        for (activation, residual) in [(Activation::Relu, false), (Activation::Identity, true)] {
            for (device, on_gpu) in [(&wgpu, true), (&cpu, false)] {
                let run = || {
                    linear_fused(
                        x.clone().to_device(device),
                        w.clone().to_device(device),
                        bias.clone().to_device(device),
                        activation,
                        residual.then(|| r.clone().to_device(device)),
                    )
                };
                let _ = run().into_data();
                let profiler = crate::device::kernel_profile::KernelProfiler::start("linear");
                let got = run();
                let profile = profiler.finish();
                if on_gpu {
                    assert_eq!(profile.stages[0].launches, 2, "{profile:#?}");
                }
                assert_eq!(got.dims(), [b, l, d_out]);
                let got = values(got);
                for row in 0..b * l {
                    for o in 0..d_out {
                        let (mut pre, mut magnitude) = (bv[o] as f64, (bv[o] as f64).abs());
                        for i in 0..d_in {
                            let term = xv[row * d_in + i] as f64 * wv[i * d_out + o] as f64;
                            pre += term;
                            magnitude += term.abs();
                        }
                        let act = match activation {
                            Activation::Relu => pre.max(0.0),
                            _ => pre,
                        };
                        let res = if residual {
                            rv[row * d_out + o] as f64
                        } else {
                            0.0
                        };
                        let want = act + res;
                        let bound = (d_in as f64 + 4.0) * 2f64.powi(-23) * (magnitude + res.abs());
                        let g = got[row * d_out + o] as f64;
                        assert!(
                            (g - want).abs() <= bound,
                            "{activation:?} on {device:?} [{row}, {o}]: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    /// The channel means on wgpu, on channels-last activations (a convolution's output): one
    /// reduction launch, the per-channel means of the two-step form within f32 rounding of a
    /// 63-term mean; on an NCHW tensor and on the CPU, the two-step form itself.
    #[cfg(feature = "wgpu")]
    #[test]
    fn channel_means_are_one_reduction_on_channels_last_activations() {
        let _generator = crate::test_rng::lock();
        let wgpu = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let x = Tensor::<4>::random([2, 5, 7, 9], Distribution::Normal(1.0, 2.0), &wgpu);
        let channels_last = x
            .clone()
            .permute([0, 2, 3, 1])
            .reshape([2 * 7 * 9 * 5])
            .reshape([2, 7, 9, 5])
            .permute([0, 3, 1, 2]);
        assert!(channels_last_on_gpu(&channels_last));
        assert!(!channels_last_on_gpu(&x));
        let want = x.clone().mean_dim(2).mean_dim(3).into_data();
        let _ = channel_means(channels_last.clone()).into_data();
        let profiler = crate::device::kernel_profile::KernelProfiler::start("squeeze");
        let got = channel_means(channels_last);
        assert_eq!(profiler.finish().stages[0].launches, 1);
        assert_eq!(got.dims(), [2, 5, 1, 1]);
        let (got, want) = (
            got.into_data().try_to_vec::<f32>().unwrap(),
            want.try_to_vec::<f32>().unwrap(),
        );
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 64.0 * 2f32.powi(-23) * 3.0, "{g} vs {w}");
        }
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        let on_cpu = x.to_device(&cpu);
        let two_step = on_cpu.clone().mean_dim(2).mean_dim(3).into_data();
        assert_eq!(channel_means(on_cpu).into_data(), two_step);
    }

    /// Relative error bound of `portable::exp` against f64, in units of f32's epsilon: the worst
    /// case measured over the sweep below is 0.68 ε (printed by the test); a broken coefficient or
    /// range reduction gives errors of 1e−4 and more.
    const EXP_ULP: f64 = 1.0;

    #[test]
    fn exp_matches_f64_over_its_range() {
        let _generator = crate::test_rng::lock();
        let mut worst = 0.0f64;
        let steps = 2_000_000;
        for i in 0..=steps {
            let x = -87.0 + 175.0 * i as f64 / steps as f64;
            let x = x as f32;
            let want = (x as f64).exp();
            let got = portable::exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        eprintln!(
            "exp: worst relative error {:.2} ulp",
            worst / f32::EPSILON as f64
        );
        assert!(
            worst <= EXP_ULP * f32::EPSILON as f64,
            "worst relative error {worst:e}"
        );
        assert_eq!(portable::exp(0.0), 1.0);
        assert!(portable::exp(f32::NAN).is_nan());
        // Clamped ends stay finite and positive (no 0, ∞ or subnormal).
        assert!(portable::exp(-1e4).is_normal() && portable::exp(-1e4) > 0.0);
        assert!(portable::exp(1e4).is_finite());
    }

    fn tensor(values: &[f32], shape: [usize; 3], device: &Device) -> Tensor<3> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
    }

    fn values(t: Tensor<3>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32")
    }

    fn sample(n: usize, scale: f32) -> Vec<f32> {
        // Deterministic spread over [−scale, scale], with the special values swish must keep.
        let mut v: Vec<f32> = (0..n)
            .map(|i| ((i as f32 * 0.618_034).fract() * 2.0 - 1.0) * scale)
            .collect();
        v[0] = 0.0;
        v[1] = -0.0;
        v[2] = -200.0;
        v[3] = 200.0;
        v
    }

    #[test]
    fn swish_matches_its_f64_definition_on_the_cpu_fast_path() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        // Large enough to be split across threads, odd so the last chunk is ragged.
        let shape = [3, 101, 331];
        let n = shape.iter().product();
        let x = sample(n, 12.0);
        let got = values(swish(tensor(&x, shape, &device)));
        for (i, (&g, &xi)) in got.iter().zip(&x).enumerate() {
            let xi = xi as f64;
            let want = xi / (1.0 + (-xi).exp());
            let tol = 4.0 * f32::EPSILON as f64 * want.abs() + 1e-30;
            assert!(
                (g as f64 - want).abs() <= tol,
                "x[{i}] = {xi}: {g} vs {want}"
            );
        }
        // Far left tail: the true value (−200·e⁻²⁰⁰) underflows; the clamped exp gives ≈ −1e−36.
        assert!(got[2] <= 0.0 && got[2] > -1e-30, "swish(−200) = {}", got[2]);
        assert!(got[1] == 0.0);
    }

    #[test]
    fn swish_leaves_shared_and_strided_inputs_intact() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        let x: Tensor<3> = Tensor::random([4, 8, 16], Distribution::Normal(0.0, 3.0), &device);
        let before = values(x.clone());
        let keep = x.clone(); // shares the buffer: must be copied, not overwritten
        let transposed = x.clone().swap_dims(1, 2); // strided view
        let want = values(generic_swish(x.clone()));
        let got = values(swish(x));
        assert_eq!(values(keep), before, "the shared input was overwritten");
        let got_t = values(swish(transposed.clone()).swap_dims(1, 2));
        let want_t = values(generic_swish(transposed).swap_dims(1, 2));
        let close = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(a, b)| (a - b).abs() <= 4.0 * f32::EPSILON * b.abs().max(1e-6))
        };
        assert!(close(&got, &want));
        assert!(close(&got_t, &want_t));
    }

    /// Attention's scale at 32 channels per head (the encoder's), not a power of two.
    const SCALE: f32 = 0.176_776_7;

    fn max(row: &[f32]) -> f64 {
        row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64))
    }

    /// Relative error bound of a softmax element: 8 ε as measured unscaled, plus the rounding
    /// of `(x − max) · scale` in f32 (half an ε of the argument, i.e. relative in `exp`) when
    /// scaled (`scale = 1` multiplies exactly).
    fn scaled_tolerance(scale: f32, centred: f64) -> f64 {
        let product = if scale == 1.0 {
            0.0
        } else {
            (scale as f64 * centred).abs()
        };
        (8.0 + product) * f32::EPSILON as f64
    }

    #[test]
    fn softmax_matches_its_f64_definition_on_the_cpu_fast_path() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        // Rows of 196 (attention) and 37 (ragged against the 16 lanes); unscaled and with
        // attention's scale 1/√32.
        for (row, scale) in [(196usize, 1.0f32), (37, 1.0), (196, SCALE), (37, SCALE)] {
            let shape = [2, 90, row];
            let n = shape.iter().product();
            let x = sample(n, 30.0);
            let got = values(softmax_last_scaled(tensor(&x, shape, &device), scale));
            for (r, (gr, xr)) in got.chunks(row).zip(x.chunks(row)).enumerate() {
                let (s, m) = (scale as f64, max(xr));
                let z: f64 = xr.iter().map(|&v| (s * (v as f64 - m)).exp()).sum();
                for (&g, &v) in gr.iter().zip(xr) {
                    let want = (s * (v as f64 - m)).exp() / z;
                    let tol = scaled_tolerance(scale, v as f64 - m) * want + 1e-37;
                    assert!(
                        (g as f64 - want).abs() <= tol,
                        "scale {scale}, row {r}: {g} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn empty_tensors_pass_through() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        let x: Tensor<3> = Tensor::zeros([0, 4, 5], &device);
        assert_eq!(softmax_last(x.clone()).dims(), [0, 4, 5]);
        assert_eq!(swish(x).dims(), [0, 4, 5]);
        let no_rows: Tensor<3> = Tensor::zeros([2, 3, 0], &device);
        assert_eq!(softmax_last(no_rows).dims(), [2, 3, 0]);
    }

    /// The fused autodiff softmax: value and gradient of `Σ w ⊙ softmax(x)` against f64
    /// (`∂x_i = s_i (w_i − Σ_j w_j s_j)`), on a strided input that must not be overwritten, with
    /// the output used twice (gradients accumulate).
    #[test]
    fn autodiff_softmax_matches_its_f64_value_and_gradient() {
        let _generator = crate::test_rng::lock();
        autodiff_softmax_matches_on(Device::flex().autodiff());
        // On wgpu the GPU's autodiff operation (`gpu_softmax_autodiff`).
        #[cfg(feature = "wgpu")]
        autodiff_softmax_matches_on(
            crate::device::create(crate::device::DeviceChoice::Wgpu)
                .unwrap()
                .autodiff(),
        );
    }

    fn autodiff_softmax_matches_on(device: Device) {
        let on_gpu = !matches!(
            device.clone().inner().as_dispatch(),
            DispatchDevice::Flex(_)
        );
        for (row, scale) in [(196usize, 1.0f32), (37, 1.0), (196, SCALE), (37, SCALE)] {
            let shape = [2, 90, row];
            let n: usize = shape.iter().product();
            let xv = sample(n, 30.0);
            let wv = sample(n, 3.0);
            // Build x transposed and swap back: a non-contiguous view of the same values.
            let transposed = tensor(&xv, shape, &device.clone().inner()).swap_dims(1, 2);
            let base: Tensor<3> = Tensor::from_data(transposed.into_data(), &device).require_grad();
            let x = base.clone().swap_dims(1, 2);
            assert_eq!(
                softmax_autodiff::applies(&x),
                !on_gpu,
                "a tracked CPU tensor takes the CPU's fused operation"
            );
            let w = tensor(&wv, shape, &device.clone().inner()).autodiff();
            let (y, forward) =
                crate::device::kernel_profile::profile("softmax", || softmax_last_scaled(x, scale));
            let loss = (y.clone() * w.clone()).sum() + (y.clone() * w).sum().mul_scalar(0.5);
            let yv: Vec<f32> = y.into_data().try_to_vec().unwrap();
            let (grads, backward) =
                crate::device::kernel_profile::profile("backward", || loss.backward());
            if on_gpu {
                // The strided input made contiguous, then the softmax kernel; its backward one
                // kernel (beside the weightings' and sums' own).
                let (stage, kernels) = (&forward.stages[0], forward.stages[0].names());
                assert!(
                    stage.launches <= 2 && kernels.contains(&"SoftmaxKernel"),
                    "{kernels:?}"
                );
                let kernels = backward.stages[0].names();
                assert!(kernels.contains(&"BackwardKernel"), "{kernels:?}");
            }
            let g: Vec<f32> = base
                .grad(&grads)
                .expect("gradient reaches x")
                .swap_dims(1, 2)
                .into_data()
                .try_to_vec()
                .unwrap();
            let after: Vec<f32> = base.swap_dims(1, 2).into_data().try_to_vec().unwrap();
            assert_eq!(after, xv, "the input must not be overwritten");
            for r in 0..n / row {
                let xr = &xv[r * row..(r + 1) * row];
                let wr = &wv[r * row..(r + 1) * row];
                let (c, m) = (scale as f64, max(xr));
                let z: f64 = xr.iter().map(|&v| (c * (v as f64 - m)).exp()).sum();
                let s: Vec<f64> = xr.iter().map(|&v| (c * (v as f64 - m)).exp() / z).collect();
                let ws: f64 = wr.iter().zip(&s).map(|(&w, s)| w as f64 * s).sum();
                for k in 0..row {
                    let i = r * row + k;
                    // On a GPU, Vulkan's `exp` bound (3 + 2|argument| ulp) and the row's sum.
                    let centred = xr[k] as f64 - m;
                    let tol = if on_gpu {
                        (5.0 + 2.0 * (c * centred).abs() + row as f64) * 2f64.powi(-23)
                    } else {
                        scaled_tolerance(scale, centred)
                    } * s[k]
                        + 1e-37;
                    assert!((yv[i] as f64 - s[k]).abs() <= tol, "value {}: {}", i, yv[i]);
                    // 1.5 × scale × (w − Σ w s) s; terms of size |w| ≤ 3 summed over the row
                    // in f32.
                    let want = 1.5 * c * s[k] * (wr[k] as f64 - ws);
                    let tol = 1e-5 * (1.0 + s[k] * 3.0);
                    assert!(
                        (g[i] as f64 - want).abs() <= tol,
                        "grad {i}: {} vs {want}",
                        g[i]
                    );
                }
            }
        }
    }

    #[test]
    fn autodiff_tensors_keep_their_gradient() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex().autodiff();
        let x: Tensor<3> =
            Tensor::random([2, 3, 5], Distribution::Normal(0.0, 2.0), &device).require_grad();
        let y = swish(x.clone()).sum() + softmax_last(x.clone()).powi_scalar(2).sum();
        let grads = y.backward();
        let g = x.grad(&grads).expect("gradient reaches x");
        // d/dx swish = σ(x)(1 + x(1 − σ(x))); the softmax part's gradient sums to 0 per row.
        let xv: Vec<f32> = x.clone().into_data().try_to_vec().unwrap();
        let sv: Vec<f32> = softmax(x.clone().detach(), 2)
            .into_data()
            .try_to_vec()
            .unwrap();
        let gv: Vec<f32> = g.into_data().try_to_vec().unwrap();
        for (row, (xr, sr)) in xv.chunks(5).zip(sv.chunks(5)).enumerate() {
            let gr = &gv[row * 5..row * 5 + 5];
            let dot: f64 = sr.iter().map(|&s| (s as f64).powi(2)).sum();
            for ((&xi, &si), &gi) in xr.iter().zip(sr).zip(gr) {
                let xi = xi as f64;
                let sig = 1.0 / (1.0 + (-xi).exp());
                let d_swish = sig * (1.0 + xi * (1.0 - sig));
                let d_soft = 2.0 * si as f64 * (si as f64 - dot);
                let want = d_swish + d_soft;
                assert!(
                    (gi as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{gi} vs {want}"
                );
            }
        }
    }
}
