//! The OT anomaly score of the official code: a one-sided conditional transport between each
//! level-1 token and its class's prototypes,
//! `ot(x) = Σ_k softmax_k(x·e_k / τ) · (1 − cos(x, e_k))`, τ = K by default.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

/// OT score per token: `x [B, L, D]`, `embeds [B, D, K]` → `[B, L]`.
///
/// The softmax is the stable (max-subtracted) one; the reference's plain `exp` is mathematically
/// equal. Cosines follow scikit-learn's `cosine_similarity` (a zero vector has cosine 0).
pub fn ot_score(x: Tensor<3>, embeds: Tensor<3>, temperature: f32) -> Tensor<2> {
    let [b, l, _] = x.dims();
    let [_, _, k] = embeds.dims();
    let dots = x.clone().matmul(embeds.clone()); // [B, L, K]
    let p = softmax(dots.clone().div_scalar(temperature as f64), 2);
    let x_norm = x.powi_scalar(2).sum_dim(2).sqrt(); // [B, L, 1]
    let e_norm = embeds.powi_scalar(2).sum_dim(1).sqrt(); // [B, 1, K]
    let denom = x_norm.expand([b, l, k]) * e_norm.expand([b, l, k]);
    // sklearn normalises each vector (leaving zero vectors at zero), so cos = 0 there.
    let denom = denom.clamp_min(f32::MIN_POSITIVE as f64);
    let cos = dots / denom;
    (p * cos.neg().add_scalar(1.0)).sum_dim(2).reshape([b, l])
}
