//! Small layers in PyTorch parameter layout (weights `(out, in)`), so gradients and checkpoints
//! compare one to one with the reference.

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};

use crate::kernels::products::linear;
use crate::kernels::{Activation, linear_fused};

/// `y = x·Wᵀ + b` with `W` stored `(out, in)` as in PyTorch.
#[derive(Module, Debug)]
pub struct Linear {
    /// `(out, in)`.
    pub weight: Param<Tensor<2>>,
    /// `(out)`.
    pub bias: Param<Tensor<1>>,
}

impl Linear {
    /// PyTorch's default init: U(−1/√in, 1/√in) for weight and bias.
    pub fn new(d_in: usize, d_out: usize, device: &Device) -> Self {
        let b = 1.0 / (d_in as f64).sqrt();
        Self {
            weight: Param::from_tensor(Tensor::random(
                [d_out, d_in],
                Distribution::Uniform(-b, b),
                device,
            )),
            bias: Param::from_tensor(Tensor::random(
                [d_out],
                Distribution::Uniform(-b, b),
                device,
            )),
        }
    }

    /// Xavier-uniform weight, zero bias (what `nn.Transformer` layers get in the official code).
    pub fn new_xavier(d_in: usize, d_out: usize, device: &Device) -> Self {
        let b = (6.0 / (d_in + d_out) as f64).sqrt();
        Self {
            weight: Param::from_tensor(Tensor::random(
                [d_out, d_in],
                Distribution::Uniform(-b, b),
                device,
            )),
            bias: Param::from_tensor(Tensor::zeros([d_out], device)),
        }
    }

    /// Apply to `[..., in]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(x, self.weight.val().transpose(), Some(self.bias.val()))
    }

    /// `activation(self(x)) + residual` (the residual optional): on a GPU at inference one
    /// kernel after the product ([`linear_fused`]).
    pub fn forward_then<const D: usize>(
        &self,
        x: Tensor<D>,
        activation: Activation,
        residual: Option<Tensor<D>>,
    ) -> Tensor<D> {
        // Training on a GPU: one autodiff operation (its weight gradient already in this
        // layer's layout).
        if let Some(y) = crate::kernels::linear_trained(
            &x,
            &self.weight.val(),
            &self.bias.val(),
            activation,
            residual.as_ref(),
        ) {
            return y;
        }
        linear_fused(
            x,
            self.weight.val().transpose(),
            self.bias.val(),
            activation,
            residual,
        )
    }
}

/// `x + dropout(f(None), p)`, as a transformer layer adds a sub-block's output to its input;
/// without dropout (`p = 0`: inference) the residual is handed to `f` instead, whose last linear
/// step adds it in the kernel after its product ([`Linear::forward_then`]). The same sum either
/// way (`x + y` is `y + x` in floating point; composed, the residual stays the left operand).
pub fn add_residual(
    x: Tensor<3>,
    p: f64,
    f: impl FnOnce(Option<Tensor<3>>) -> Tensor<3>,
) -> Tensor<3> {
    if p > 0.0 {
        x + dropout(f(None), p)
    } else {
        f(Some(x))
    }
}

/// Inverted dropout as `nn.Dropout` computes it in training: each element is zeroed with
/// probability `p` and the others scaled by `1/(1−p)`, so the expectation is unchanged. `p = 0`
/// returns `x` untouched (no random draw). The mask comes from the device's seeded generator.
pub fn dropout<const D: usize>(x: Tensor<D>, p: f64) -> Tensor<D> {
    if p <= 0.0 {
        return x;
    }
    let device = x.device();
    match crate::kernels::dropout_mask(x.shape(), 1.0 - p, &device) {
        // CPU: one pass from a counter-based generator seeded by the device's.
        Some(mask) => x * mask,
        None => {
            let keep: Tensor<D> =
                Tensor::random(x.shape(), Distribution::Bernoulli(1.0 - p), &device);
            x * keep.div_scalar(1.0 - p)
        }
    }
}

/// LayerNorm over the last axis, eps 1e-5.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// γ.
    pub weight: Param<Tensor<1>>,
    /// β.
    pub bias: Param<Tensor<1>>,
}

impl LayerNorm {
    /// γ = 1, β = 0.
    pub fn new(d: usize, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([d], device)),
            bias: Param::from_tensor(Tensor::zeros([d], device)),
        }
    }

    /// Normalise `[..., d]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        // One fused operation under autodiff on the CPU (burn records the decomposition there).
        crate::kernels::layer_norm(x, self.weight.val(), self.bias.val(), 1e-5)
    }
}

/// A 1×1 convolution stored as PyTorch's `(out, in, 1, 1)`, applied to tokens.
#[derive(Module, Debug)]
pub struct Conv1x1 {
    /// `(out, in, 1, 1)`.
    pub weight: Param<Tensor<4>>,
    /// `(out)`.
    pub bias: Param<Tensor<1>>,
}

impl Conv1x1 {
    /// PyTorch default init.
    pub fn new(d_in: usize, d_out: usize, device: &Device) -> Self {
        let b = 1.0 / (d_in as f64).sqrt();
        Self {
            weight: Param::from_tensor(Tensor::random(
                [d_out, d_in, 1, 1],
                Distribution::Uniform(-b, b),
                device,
            )),
            bias: Param::from_tensor(Tensor::random(
                [d_out],
                Distribution::Uniform(-b, b),
                device,
            )),
        }
    }

    /// `[B, in, H, W]` → tokens `[B, H·W, out]` (row-major, l = h·W + w).
    pub fn tokens(&self, x: Tensor<4>) -> Tensor<3> {
        let [b, c, h, w] = x.dims();
        let [out, _, _, _] = self.weight.dims();
        let tokens: Tensor<3> = x.reshape([b, c, h * w]).swap_dims(1, 2);
        let weight: Tensor<2> = self.weight.val().reshape([out, c]);
        linear(tokens, weight.transpose(), Some(self.bias.val()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_zeroes_a_fraction_p_and_keeps_the_mean() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        device.seed(3);
        let n = 200_000;
        let x: Tensor<1> = Tensor::ones([n], &device);
        assert_eq!(
            dropout(x.clone(), 0.0)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
            vec![1.0; n]
        );
        let p = 0.25;
        let y: Vec<f32> = dropout(x, p).into_data().try_to_vec().unwrap();
        let zeros = y.iter().filter(|&&v| v == 0.0).count() as f64;
        // Binomial(n, p): 5 standard deviations.
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (zeros - n as f64 * p).abs() < 5.0 * sd,
            "{zeros} zeros of {n}"
        );
        let scale = (1.0 / (1.0 - p)) as f32;
        assert!(y.iter().all(|&v| v == 0.0 || (v - scale).abs() < 1e-6));
    }
}
