//! Post-norm decoder at width 2C that cross-attends one quantised memory level per layer.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::attention::MultiheadAttention;
use super::layers::{LayerNorm, Linear, add_residual, dropout};
use crate::kernels::Activation;

/// `t = LN1(t + SA(t+pos)); t = LN2(t + CA(q=t+pos, k=mem+pos, v=mem)); t = LN3(t + FFN(t))`.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Self-attention.
    pub self_attn: MultiheadAttention,
    /// Cross-attention to the memory level.
    pub multihead_attn: MultiheadAttention,
    /// FFN in.
    pub linear1: Linear,
    /// FFN out.
    pub linear2: Linear,
    /// After self-attention.
    pub norm1: LayerNorm,
    /// After cross-attention.
    pub norm2: LayerNorm,
    /// After FFN.
    pub norm3: LayerNorm,
}

impl DecoderLayer {
    /// Random init.
    pub fn new(dim: usize, heads: usize, ffn: usize, device: &Device) -> Self {
        Self {
            self_attn: MultiheadAttention::new(dim, heads, device),
            multihead_attn: MultiheadAttention::new(dim, heads, device),
            linear1: Linear::new_xavier(dim, ffn, device),
            linear2: Linear::new_xavier(ffn, dim, device),
            norm1: LayerNorm::new(dim, device),
            norm2: LayerNorm::new(dim, device),
            norm3: LayerNorm::new(dim, device),
        }
    }

    /// `[B, L, 2C]` with memory `[B, L, 2C]` and `pos` `[1, L, 2C]`; dropout probability `p`
    /// (0 at inference) where `nn.TransformerDecoderLayer` has its dropouts.
    pub fn forward(&self, t: Tensor<3>, memory: Tensor<3>, pos: Tensor<3>, p: f64) -> Tensor<3> {
        let attended = add_residual(t.clone(), p, |r| {
            self.self_attn.forward_self(t, pos.clone(), p, r)
        });
        let t = self.norm1.forward(attended);
        let attended = add_residual(t.clone(), p, |r| {
            self.multihead_attn.forward_cross(t, memory, pos, p, r)
        });
        let t = self.norm2.forward(attended);
        let hidden = dropout(
            self.linear1.forward_then(t.clone(), Activation::Relu, None),
            p,
        );
        let ff = add_residual(t, p, |r| {
            self.linear2.forward_then(hidden, Activation::Identity, r)
        });
        self.norm3.forward(ff)
    }
}

/// The decoder stack and its final LayerNorm.
#[derive(Module, Debug)]
pub struct Decoder {
    /// Layers in order; layer i attends memory level i.
    pub layers: Vec<DecoderLayer>,
    /// Final LayerNorm.
    pub norm: LayerNorm,
}

impl Decoder {
    /// Random init.
    pub fn new(layers: usize, dim: usize, heads: usize, ffn: usize, device: &Device) -> Self {
        Self {
            layers: (0..layers)
                .map(|_| DecoderLayer::new(dim, heads, ffn, device))
                .collect(),
            norm: LayerNorm::new(dim, device),
        }
    }

    /// Start from `memories[0]` (no learned queries) and attend `memories[i]` in layer i
    /// (dropout probability `p`: 0 at inference).
    pub fn forward(&self, memories: &[Tensor<3>], pos: Tensor<3>, p: f64) -> Tensor<3> {
        let mut t = memories[0].clone();
        for (layer, memory) in self.layers.iter().zip(memories) {
            t = layer.forward(t, memory.clone(), pos.clone(), p);
        }
        self.norm.forward(t)
    }
}
