//! Precision–recall metrics: average precision and the best F1 over thresholds, on the
//! precision–recall curve of scikit-learn's `precision_recall_curve`.

use super::ranking::{CurvePoint, ScoreRanking};

/// Precision and recall at a curve point. Precision with no predicted positives is 0 (as
/// scikit-learn sets it); the caller guarantees `positives > 0`.
fn precision_recall(point: &CurvePoint, positives: u64) -> (f64, f64) {
    let predicted = point.true_positives + point.false_positives;
    let precision = if predicted == 0 {
        0.0
    } else {
        point.true_positives as f64 / predicted as f64
    };
    (precision, point.true_positives as f64 / positives as f64)
}

impl ScoreRanking {
    /// Average precision: `Σ (Rₖ − Rₖ₋₁) Pₖ` over the distinct thresholds by descending score,
    /// the step-wise (not interpolated) area of scikit-learn's `average_precision_score`.
    /// `None` without positives (recall is undefined); with no negatives it is 1.
    pub fn average_precision(&self) -> Option<f64> {
        let positives = self.positives();
        if positives == 0 {
            return None;
        }
        let mut sum = 0.0;
        let mut prev_tp = 0u64;
        for point in self.curve() {
            // Only points that add recall contribute; skipping the others avoids adding zeros.
            if point.true_positives > prev_tp {
                let (precision, _) = precision_recall(&point, positives);
                let recall_step = (point.true_positives - prev_tp) as f64 / positives as f64;
                sum += recall_step * precision;
                prev_tp = point.true_positives;
            }
        }
        Some(sum)
    }

    /// The best F1 score `2PR / (P + R)` over the thresholds of the precision–recall curve
    /// (0 where `P + R = 0`), with the threshold reaching it: predict anomalous for scores
    /// `>= threshold`. Ties between thresholds go to the lowest one, as `argmax` over
    /// scikit-learn's ascending thresholds does. `None` without positives.
    pub fn f1_max(&self) -> Option<(f64, f32)> {
        let positives = self.positives();
        if positives == 0 {
            return None;
        }
        let mut best: Option<(f64, f32)> = None;
        for point in self.curve() {
            let (precision, recall) = precision_recall(&point, positives);
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            // `>=`: the sweep goes by descending threshold, so on equal F1 the later (lower)
            // threshold wins.
            if best.is_none_or(|(b, _)| f1 >= b) {
                best = Some((f1, point.threshold));
            }
        }
        best
    }
}

/// Average precision of `scores` for `labels` (`true` = anomalous), equal to scikit-learn's
/// `average_precision_score` (step-wise sum over distinct thresholds, no interpolation).
///
/// `None` without positive labels, when the lengths differ or when a score is NaN.
pub fn average_precision(scores: &[f32], labels: &[bool]) -> Option<f64> {
    ScoreRanking::new(scores, labels)?.average_precision()
}

/// The maximum F1 score over the thresholds of scikit-learn's `precision_recall_curve` (the
/// metric anomalib calls `F1Max`), and the score threshold that reaches it.
///
/// `None` without positive labels, when the lengths differ or when a score is NaN.
pub fn f1_max(scores: &[f32], labels: &[bool]) -> Option<(f64, f32)> {
    ScoreRanking::new(scores, labels)?.f1_max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cases() {
        // Ranked: 0.9 (+), 0.8 (-), 0.7 (+): AP = 1/2 · 1 + 1/2 · 2/3.
        let scores = [0.7, 0.9, 0.8];
        let labels = [true, true, false];
        let ap = average_precision(&scores, &labels).unwrap_or(f64::NAN);
        assert!((ap - (0.5 + 1.0 / 3.0)).abs() < 1e-15);
        // F1 at 0.9: P=1, R=1/2 → 2/3; at 0.7: P=2/3, R=1 → 0.8.
        let (f1, t) = f1_max(&scores, &labels).unwrap_or((f64::NAN, f32::NAN));
        assert!((f1 - 0.8).abs() < 1e-15);
        assert_eq!(t, 0.7);
    }

    #[test]
    fn undefined_without_positives() {
        assert_eq!(average_precision(&[0.1, 0.2], &[false, false]), None);
        assert_eq!(f1_max(&[0.1, 0.2], &[false, false]), None);
        assert_eq!(average_precision(&[0.1, 0.2], &[true, true]), Some(1.0));
    }
}
