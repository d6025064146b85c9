//! Post-norm transformer encoder: `x = LN1(x + MHA(q=k=x+pos, v=x)); x = LN2(x + W2·ReLU(W1·x))`.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::attention::MultiheadAttention;
use super::layers::{LayerNorm, Linear, add_residual, dropout};
use crate::kernels::Activation;

/// One encoder layer, with `nn.TransformerEncoderLayer`'s dropouts (given per call: 0 at inference).
#[derive(Module, Debug)]
pub struct EncoderLayer {
    /// Self-attention.
    pub self_attn: MultiheadAttention,
    /// FFN in.
    pub linear1: Linear,
    /// FFN out.
    pub linear2: Linear,
    /// After attention.
    pub norm1: LayerNorm,
    /// After FFN.
    pub norm2: LayerNorm,
}

impl EncoderLayer {
    /// Random init.
    pub fn new(dim: usize, heads: usize, ffn: usize, device: &Device) -> Self {
        Self {
            self_attn: MultiheadAttention::new(dim, heads, device),
            linear1: Linear::new_xavier(dim, ffn, device),
            linear2: Linear::new_xavier(ffn, dim, device),
            norm1: LayerNorm::new(dim, device),
            norm2: LayerNorm::new(dim, device),
        }
    }

    /// `[B, L, C]` → `[B, L, C]`; `pos` is `[1, L, C]`; dropout probability `p`.
    pub fn forward(&self, x: Tensor<3>, pos: Tensor<3>, p: f64) -> Tensor<3> {
        let attended = add_residual(x.clone(), p, |r| self.self_attn.forward_self(x, pos, p, r));
        let x = self.norm1.forward(attended);
        let hidden = dropout(
            self.linear1.forward_then(x.clone(), Activation::Relu, None),
            p,
        );
        let ff = add_residual(x, p, |r| {
            self.linear2.forward_then(hidden, Activation::Identity, r)
        });
        self.norm2.forward(ff)
    }
}

/// The encoder stack.
#[derive(Module, Debug)]
pub struct Encoder {
    /// Layers in order.
    pub layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// Random init.
    pub fn new(layers: usize, dim: usize, heads: usize, ffn: usize, device: &Device) -> Self {
        Self {
            layers: (0..layers)
                .map(|_| EncoderLayer::new(dim, heads, ffn, device))
                .collect(),
        }
    }

    /// Every layer's output h1..hN (dropout probability `p`: 0 at inference).
    pub fn forward(&self, src: Tensor<3>, pos: Tensor<3>, p: f64) -> Vec<Tensor<3>> {
        let mut x = src;
        let mut outs = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            x = layer.forward(x, pos.clone(), p);
            outs.push(x.clone());
        }
        outs
    }
}
