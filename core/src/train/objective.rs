//! Training objectives. The released code's: `MSE(rec, feature) + 0.25 · commitment`. The
//! paper's (appendix eq. 1) adds `α · Σ_levels POT` and the classifier's cross-entropy, with
//! commitment weight β = 0.5; which terms are on is read from the model configuration.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

use crate::config::HvqConfig;
use crate::model::{HvqOutput, pot_loss};

/// The loss and its parts (all `[1]`, on the autodiff graph when training).
#[derive(Clone, Debug)]
pub struct LossTerms {
    /// `MSE(rec, feature)`.
    pub feature: Tensor<1>,
    /// Σ over levels of the batch-mean commitment.
    pub latent: Tensor<1>,
    /// Σ over levels of the batch-mean POT loss, when its weight is non-zero.
    pub pot: Option<Tensor<1>>,
    /// Cross-entropy of the classifier, when there is one.
    pub classification: Option<Tensor<1>>,
    /// The weighted sum.
    pub total: Tensor<1>,
}

/// The mean of all of `t`'s elements, one axis at a time: a single f32 sum over B·F·H·W values
/// loses ~1e-4 relative on some backends, the nested means keep each partial sum short.
fn nested_mean(t: Tensor<4>) -> Tensor<1> {
    t.mean_dim(3).mean_dim(2).mean_dim(1).mean()
}

fn feature_mse(out: &HvqOutput, feature: Tensor<4>) -> Tensor<1> {
    // In training on a GPU one autodiff operation (the same value; burn's backward of the
    // nested means is some eighteen launches).
    if let Some(loss) = crate::kernels::mean_squared_error_trained(&out.rec, &feature, nested_mean)
    {
        return loss;
    }
    nested_mean((out.rec.clone() - feature).powi_scalar(2))
}

/// The released code's loss.
pub fn official_loss(out: &HvqOutput, feature: Tensor<4>, commitment_weight: f32) -> LossTerms {
    let feature_loss = feature_mse(out, feature);
    let latent = out.latent();
    let total = feature_loss.clone() + latent.clone().mul_scalar(commitment_weight as f64);
    LossTerms {
        feature: feature_loss,
        latent,
        pot: None,
        classification: None,
        total,
    }
}

/// Cross-entropy of logits `[B, N]` against class ids, mean over the batch.
pub fn cross_entropy(logits: Tensor<2>, classes: &[usize]) -> Tensor<1> {
    let [b, _] = logits.dims();
    let ids: Vec<i64> = classes.iter().map(|&c| c as i64).collect();
    let target: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids, [b, 1]), &logits.device());
    log_softmax(logits, 1).gather(1, target).mean().neg()
}

/// The loss the configuration asks for: the official terms, plus POT and cross-entropy when
/// they are enabled.
pub fn objective(
    out: &HvqOutput,
    feature: Tensor<4>,
    classes: &[usize],
    config: &HvqConfig,
) -> LossTerms {
    let mut terms = official_loss(out, feature, config.commitment_weight);
    if config.pot_weight != 0.0 {
        let tau = config.pot_temperature();
        let pot = out
            .levels
            .iter()
            .zip(&out.inputs)
            .map(|(level, x)| pot_loss(x.clone(), level.prototypes.clone(), tau).mean())
            .reduce(|a, b| a + b)
            .expect("at least one level");
        terms.total = terms.total + pot.clone().mul_scalar(config.pot_weight as f64);
        terms.pot = Some(pot);
    }
    if let (Some(logits), Some(head)) = (&out.class_logits, &config.classifier) {
        let ce = cross_entropy(logits.clone(), classes);
        terms.total = terms.total + ce.clone().mul_scalar(head.weight as f64);
        terms.classification = Some(ce);
    }
    terms
}
