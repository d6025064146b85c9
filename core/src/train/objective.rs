//! The official objective: `MSE(rec, feature) + commitment_weight · latent`.

use burn::tensor::Tensor;

use crate::model::HvqOutput;

/// The loss and its parts (all `[1]`, on the autodiff graph when training).
#[derive(Clone, Debug)]
pub struct LossTerms {
    /// `MSE(rec, feature)`.
    pub feature: Tensor<1>,
    /// Σ over levels of the batch-mean commitment.
    pub latent: Tensor<1>,
    /// `feature + weight · latent`.
    pub total: Tensor<1>,
}

/// The released code's loss.
pub fn official_loss(out: &HvqOutput, feature: Tensor<4>, commitment_weight: f32) -> LossTerms {
    // Reduce one axis at a time: a single f32 sum over B·F·H·W values loses ~1e-4 relative on
    // some backends, the nested means keep each partial sum short.
    let feature_loss = (out.rec.clone() - feature)
        .powi_scalar(2)
        .mean_dim(3)
        .mean_dim(2)
        .mean_dim(1)
        .mean();
    let latent = out.latent.clone();
    let total = feature_loss.clone() + latent.clone().mul_scalar(commitment_weight as f64);
    LossTerms {
        feature: feature_loss,
        latent,
        total,
    }
}
