//! Vector quantisation with EMA codebooks (the vq-vae-2 `Quantize` the official code uses).
//!
//! Codebooks receive no gradient; during training they follow an exponential moving average of the
//! vectors assigned to each code. Output is the straight-through value `x + sg(q − x)`.

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Int, Tensor};

/// One codebook: `embed` `(D, K)` (codes are columns), `embed_avg` `(D, K)`, `cluster_size` `(K)`.
#[derive(Module, Debug)]
pub struct Codebook {
    /// Code vectors as columns.
    pub embed: Param<Tensor<2>>,
    /// EMA of the sums of assigned vectors.
    pub embed_avg: Param<Tensor<2>>,
    /// EMA of the assignment counts.
    pub cluster_size: Param<Tensor<1>>,
}

/// Result of quantising a batch at one level.
#[derive(Clone, Debug)]
pub struct QuantizeOutput {
    /// Straight-through output `x + sg(q − x)`, `[B, L, D]`.
    pub quantized: Tensor<3>,
    /// Per-sample commitment `mean((sg(q) − x)²)`, `[B]`.
    pub diff: Tensor<1>,
    /// Nearest code per token, `[B, L]`.
    pub indices: Tensor<2, Int>,
    /// The selected code vectors `q` (no gradient), `[B, L, D]`.
    pub codes: Tensor<3>,
    /// The codebook each sample was quantised with (before any EMA update), `[B, D, K]`: the
    /// prototypes of the POT loss.
    pub prototypes: Tensor<3>,
}

fn buffer<const D: usize>(t: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(t).set_require_grad(false)
}

impl Codebook {
    /// Reference init: embed ~ N(0,1), embed_avg = embed, cluster_size = 0.
    pub fn new(dim: usize, codes: usize, device: &Device) -> Self {
        let embed: Tensor<2> = Tensor::random([dim, codes], Distribution::Normal(0.0, 1.0), device);
        Self {
            embed_avg: buffer(embed.clone()),
            embed: buffer(embed),
            cluster_size: buffer(Tensor::zeros([codes], device)),
        }
    }

    /// Apply one EMA step for the tokens `x [L, D]` assigned to `indices [L]`.
    pub fn ema_update(&mut self, x: Tensor<2>, indices: Tensor<1, Int>, decay: f32, eps: f32) {
        let x = x.detach().without_autodiff();
        let [dim, codes] = self.embed.dims();
        let onehot: Tensor<2> = indices.one_hot::<2>(codes).float();
        let onehot_sum: Tensor<1> = onehot.clone().sum_dim(0).reshape([codes]);
        let embed_sum = x.transpose().matmul(onehot);
        let keep = decay as f64;
        let add = 1.0 - decay as f64;
        let cluster_size =
            self.cluster_size.val().detach().mul_scalar(keep) + onehot_sum.mul_scalar(add);
        let embed_avg = self.embed_avg.val().detach().mul_scalar(keep) + embed_sum.mul_scalar(add);
        let n = cluster_size.clone().sum();
        let smoothed = (cluster_size.clone().add_scalar(eps as f64))
            .div(n.clone().add_scalar(codes as f64 * eps as f64))
            .mul(n);
        let embed = embed_avg
            .clone()
            .div(smoothed.reshape([1, codes]).expand([dim, codes]));
        self.cluster_size = buffer(cluster_size);
        self.embed_avg = buffer(embed_avg);
        self.embed = buffer(embed);
    }
}

/// Quantise `x [B, L, D]` where sample b uses codebook `embeds[b]` (`[B, D, K]`).
///
/// Distances are `‖x‖² − 2x·E + ‖E‖²` in that order (as the reference computes them), the code is
/// the first arg-min, and the output is the straight-through value.
pub fn quantize(x: Tensor<3>, embeds: Tensor<3>) -> QuantizeOutput {
    let [b, l, d] = x.dims();
    let [_, _, k] = embeds.dims();
    let x_sq = x.clone().powi_scalar(2).sum_dim(2); // [B, L, 1]
    let e_sq = embeds.clone().powi_scalar(2).sum_dim(1); // [B, 1, K]
    let dist = x_sq.expand([b, l, k]) - x.clone().matmul(embeds.clone()).mul_scalar(2.0)
        + e_sq.expand([b, l, k]);
    let indices: Tensor<3, Int> = dist.argmin(2); // [B, L, 1]
    let codes = embeds.clone().swap_dims(1, 2); // [B, K, D]
    let q = codes.gather(1, indices.clone().expand([b, l, d])).detach();
    let (quantized, diff) = straight_through(x, q.clone());
    QuantizeOutput {
        quantized,
        diff,
        indices: indices.reshape([b, l]),
        codes: q,
        prototypes: embeds.detach(),
    }
}

/// Straight-through output `x + sg(q − x)` and per-sample commitment `mean((sg(q) − x)²)` for
/// given code vectors `q [B, L, D]` (treated as constants).
pub fn straight_through(x: Tensor<3>, q: Tensor<3>) -> (Tensor<3>, Tensor<1>) {
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
