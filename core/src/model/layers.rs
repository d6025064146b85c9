//! Small layers in PyTorch parameter layout (weights `(out, in)`), so gradients and checkpoints
//! compare one to one with the reference.

use burn::module::{Module, Param};
use burn::tensor::module::{layer_norm, linear};
use burn::tensor::{Device, Distribution, Tensor};

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
        layer_norm(x, self.weight.val(), Some(self.bias.val()), 1e-5)
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
