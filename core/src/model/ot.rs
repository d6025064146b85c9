//! Transport between tokens and a class's prototypes (codebook entries).
//!
//! * The OT score of the released code, a one-sided conditional transport from each level-1
//!   token to the prototypes: `ot(x) = Σ_k softmax_k(x·e_k / τ) · (1 − cos(x, e_k))`, τ = K.
//! * The POT loss of the paper (not released): our reading is the two-sided conditional
//!   transport of `docs/hvq-trans.md` §4, with cost `1 − cos`, forward plan `softmax_k(x·e/τ)`,
//!   backward plan `softmax_n(x·e/τ)`: `L = mean_n Σ_k π→ c + mean_k Σ_n π← c`. Its τ defaults to
//!   K as well (configurable), so both transports see the same plan sharpness.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

/// Dot products `[B, L, K]` and cosines of tokens `x [B, L, D]` with prototypes `e [B, D, K]`.
/// Cosines follow scikit-learn's `cosine_similarity`: a zero vector has cosine 0.
fn dots_and_cosines(x: Tensor<3>, embeds: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
    let [b, l, _] = x.dims();
    let [_, _, k] = embeds.dims();
    let dots = x.clone().matmul(embeds.clone());
    let x_norm = x.powi_scalar(2).sum_dim(2).sqrt(); // [B, L, 1]
    let e_norm = embeds.powi_scalar(2).sum_dim(1).sqrt(); // [B, 1, K]
    let denom =
        (x_norm.expand([b, l, k]) * e_norm.expand([b, l, k])).clamp_min(f32::MIN_POSITIVE as f64);
    let cos = dots.clone() / denom;
    (dots, cos)
}

/// OT score per token: `x [B, L, D]`, `embeds [B, D, K]` → `[B, L]`.
///
/// The softmax is the stable (max-subtracted) one; the reference's plain `exp` is mathematically
/// equal.
pub fn ot_score(x: Tensor<3>, embeds: Tensor<3>, temperature: f32) -> Tensor<2> {
    let [b, l, _] = x.dims();
    let (dots, cos) = dots_and_cosines(x, embeds);
    let p = softmax(dots.div_scalar(temperature as f64), 2);
    (p * cos.neg().add_scalar(1.0)).sum_dim(2).reshape([b, l])
}

/// POT loss per sample, `[B]`, for tokens `x [B, L, D]` (gradient flows into x) and the
/// prototypes `embeds [B, D, K]` of each sample's class (constants: codebooks follow the EMA).
pub fn pot_loss(x: Tensor<3>, embeds: Tensor<3>, temperature: f32) -> Tensor<1> {
    let [b, _, _] = x.dims();
    let (dots, cos) = dots_and_cosines(x, embeds.detach());
    let logits = dots.div_scalar(temperature as f64);
    let cost = cos.neg().add_scalar(1.0);
    let forward = softmax(logits.clone(), 2); // π→(k|n): each token spreads over prototypes
    let backward = softmax(logits, 1); // π←(n|k): each prototype spreads over tokens
    let to_prototypes = (forward * cost.clone()).sum_dim(2).mean_dim(1); // [B, 1, 1]
    let to_tokens = (backward * cost).sum_dim(1).mean_dim(2); // [B, 1, 1]
    (to_prototypes + to_tokens).reshape([b])
}
