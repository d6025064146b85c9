//! The threshold from known-good images.

use std::path::PathBuf;

/// How the threshold is derived from known-good scores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CalibrationRule {
    /// The largest good score: every known-good image passes.
    Max,
    /// A quantile (0..=1) of the good scores, as training calibrates (0.99).
    Quantile(f64),
}

/// Threshold from the scores of known-good images; `None` without any finite score.
pub fn calibrate(good_scores: &[f32], rule: CalibrationRule) -> Option<f32> {
    let q = match rule {
        CalibrationRule::Max => 1.0,
        CalibrationRule::Quantile(q) => q,
    };
    hvq::threshold::percentile(good_scores, q)
}

/// A calibration in progress: the known-good images sent to the worker and their scores so far.
#[derive(Clone, Debug)]
pub struct CalibrationRun {
    /// Folder of known-good images.
    pub folder: PathBuf,
    /// Images sent.
    pub total: usize,
    /// Scores received.
    pub scores: Vec<f32>,
    /// Files that failed, with their errors.
    pub errors: Vec<(PathBuf, String)>,
    /// Rule applied at the end.
    pub rule: CalibrationRule,
}

impl CalibrationRun {
    /// Answers received.
    pub fn received(&self) -> usize {
        self.scores.len() + self.errors.len()
    }

    /// All answers are in.
    pub fn finished(&self) -> bool {
        self.received() >= self.total
    }

    /// The threshold, when finished with at least one score.
    pub fn threshold(&self) -> Option<f32> {
        if self.finished() {
            calibrate(&self.scores, self.rule)
        } else {
            None
        }
    }
}
