//! Area under the ROC curve, as scikit-learn's `roc_auc_score` computes it.

use super::ranking::ScoreRanking;

impl ScoreRanking {
    /// Area under the ROC curve; `None` unless both classes are present.
    ///
    /// The curve has one point per distinct score (tied samples move together, so a tie between
    /// a positive and a negative counts one half) and is integrated with trapezoids, as
    /// scikit-learn does. The area is accumulated in integers (twice the area in units of one
    /// false positive × one true positive) and divided once, so it carries no summation error.
    pub fn auroc(&self) -> Option<f64> {
        let (positives, negatives) = (self.positives(), self.negatives());
        if positives == 0 || negatives == 0 {
            return None;
        }
        let mut twice_area = 0u128;
        let (mut prev_tp, mut prev_fp) = (0u64, 0u64);
        for point in self.curve() {
            let width = u128::from(point.false_positives - prev_fp);
            twice_area += width * u128::from(point.true_positives + prev_tp);
            prev_tp = point.true_positives;
            prev_fp = point.false_positives;
        }
        Some(twice_area as f64 / (2.0 * positives as f64 * negatives as f64))
    }
}

/// Area under the ROC curve of `scores` for `labels` (`true` = anomalous), equal to
/// scikit-learn's `roc_auc_score` including its handling of tied scores.
///
/// `None` when only one class is present (the ROC curve is undefined), when the lengths differ
/// or when a score is NaN. Runs in O(n) after an O(n) radix sort, so millions of pixels are fine;
/// to read several metrics from the same scores, rank them once with [`ScoreRanking`].
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    ScoreRanking::new(scores, labels)?.auroc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_count_half() {
        assert_eq!(auroc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(auroc(&[0.1, 0.5, 0.5], &[false, false, true]), Some(0.75));
    }

    #[test]
    fn undefined_cases() {
        assert_eq!(auroc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(auroc(&[], &[]), None);
        assert_eq!(auroc(&[0.1, f32::NAN], &[true, false]), None);
        assert_eq!(auroc(&[0.1], &[true, false]), None);
    }
}
