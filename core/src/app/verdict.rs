//! The verdict on one image, in the one vocabulary every front end and every result file uses.

use serde::{Deserialize, Serialize};

/// What a result row says about an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Score at or below the threshold.
    Normal,
    /// Score above the threshold.
    Anomalous,
    /// Inspected, but no threshold is known.
    Uncalibrated,
    /// Not inspected yet (the desktop list).
    Pending,
    /// Could not be read or inspected.
    Error,
}

impl Verdict {
    /// `score > threshold` is anomalous (the official protocol's direction); no threshold, no
    /// verdict.
    ///
    /// ```
    /// use hvq::app::Verdict;
    ///
    /// assert_eq!(Verdict::of(0.9, Some(0.5)), Verdict::Anomalous);
    /// assert_eq!(Verdict::of(0.5, Some(0.5)).as_str(), "normal");
    /// assert_eq!(Verdict::of(0.9, None).label(), "uncalibrated");
    /// ```
    pub fn of(score: f32, threshold: Option<f32>) -> Self {
        match threshold {
            Some(t) if score > t => Verdict::Anomalous,
            Some(_) => Verdict::Normal,
            None => Verdict::Uncalibrated,
        }
    }

    /// The word in result files: `normal`, `anomalous`, `uncalibrated`, `pending`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Normal => "normal",
            Verdict::Anomalous => "anomalous",
            Verdict::Uncalibrated => "uncalibrated",
            Verdict::Pending => "pending",
            Verdict::Error => "error",
        }
    }

    /// The same word as a badge on screen: the two decisions in capitals.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Normal => "NORMAL",
            Verdict::Anomalous => "ANOMALOUS",
            other => other.as_str(),
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_score_above_the_threshold_is_anomalous_and_equal_is_normal() {
        assert_eq!(Verdict::of(5.0, Some(4.0)), Verdict::Anomalous);
        assert_eq!(Verdict::of(4.0, Some(4.0)), Verdict::Normal);
        assert_eq!(Verdict::of(f32::NAN, None), Verdict::Uncalibrated);
        // serde and as_str agree.
        for v in [Verdict::Normal, Verdict::Anomalous, Verdict::Error] {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
    }
}
