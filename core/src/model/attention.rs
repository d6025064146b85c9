//! Multi-head attention with PyTorch's packed parameters (`in_proj_weight` = [W_q; W_k; W_v]).

use burn::module::{Module, Param};
use burn::tensor::module::linear;
use burn::tensor::{Device, Distribution, Tensor};

use super::layers::{Linear, dropout};

/// `nn.MultiheadAttention` (no dropout at inference, no mask), batch-first tensors.
#[derive(Module, Debug)]
pub struct MultiheadAttention {
    /// `(3E, E)`: rows [W_q; W_k; W_v].
    pub in_proj_weight: Param<Tensor<2>>,
    /// `(3E)`.
    pub in_proj_bias: Param<Tensor<1>>,
    /// Output projection.
    pub out_proj: Linear,
    #[module(skip)]
    heads: usize,
}

impl MultiheadAttention {
    /// Xavier-uniform packed projection, zero biases (PyTorch's init).
    pub fn new(embed: usize, heads: usize, device: &Device) -> Self {
        let b = (6.0 / (embed + 3 * embed) as f64).sqrt();
        let mut out_proj = Linear::new(embed, embed, device);
        out_proj.bias = Param::from_tensor(Tensor::zeros([embed], device));
        Self {
            in_proj_weight: Param::from_tensor(Tensor::random(
                [3 * embed, embed],
                Distribution::Uniform(-b, b),
                device,
            )),
            in_proj_bias: Param::from_tensor(Tensor::zeros([3 * embed], device)),
            out_proj,
            heads,
        }
    }

    fn project(&self, x: Tensor<3>, part: usize) -> Tensor<3> {
        let [e3, _] = self.in_proj_weight.dims();
        let e = e3 / 3;
        let w = self.in_proj_weight.val().narrow(0, part * e, e);
        let b = self.in_proj_bias.val().narrow(0, part * e, e);
        linear(x, w.transpose(), Some(b))
    }

    /// Attention of `query [B, Lq, E]` over `key [B, Lk, E]` / `value [B, Lk, E]` → `[B, Lq, E]`,
    /// with dropout `p` on the attention weights (0 at inference).
    pub fn forward(&self, query: Tensor<3>, key: Tensor<3>, value: Tensor<3>, p: f64) -> Tensor<3> {
        let [b, lq, e] = query.dims();
        let [_, lk, _] = key.dims();
        let h = self.heads;
        let hd = e / h;
        let scale = 1.0 / (hd as f64).sqrt();
        let split =
            |t: Tensor<3>, l: usize| -> Tensor<4> { t.reshape([b, l, h, hd]).swap_dims(1, 2) };
        // PyTorch scales q before the product.
        let q = split(self.project(query, 0), lq).mul_scalar(scale);
        let k = split(self.project(key, 1), lk);
        let v = split(self.project(value, 2), lk);
        let attn = dropout(crate::kernels::softmax_last(q.matmul(k.swap_dims(2, 3))), p);
        let out = attn.matmul(v).swap_dims(1, 2).reshape([b, lq, e]);
        self.out_proj.forward(out)
    }
}
