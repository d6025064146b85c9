//! Decision thresholds from normal images' scores.

use crate::detector::{Calibration, Detector};
use crate::error::{HvqError, Result};
use crate::features::FeatureSet;

/// The threshold at the `q`-quantile of the image scores of `normals` (features of known-good
/// images, each scored with its own class): what `train` stores at its end and `calibrate`
/// recomputes.
pub fn calibrate(detector: &Detector, normals: &FeatureSet, q: f64) -> Result<Calibration> {
    let device = detector.device();
    let mut scores = Vec::with_capacity(normals.len());
    let idx: Vec<usize> = (0..normals.len()).collect();
    for chunk in idx.chunks(32) {
        let classes: Vec<usize> = chunk.iter().map(|&i| normals.classes[i]).collect();
        let (_, s) = detector.score(normals.batch(chunk, &device), &classes)?;
        scores.extend(crate::device::read_back(s.image)?);
    }
    from_scores(&scores, q)
}

/// The `q` quantile of normal images' scores as a calibration (non-finite scores left out).
pub fn from_scores(scores: &[f32], q: f64) -> Result<Calibration> {
    let threshold = percentile(scores, q).ok_or_else(|| {
        HvqError::Training("no finite normal-image score to calibrate the threshold from".into())
    })?;
    Ok(Calibration {
        threshold,
        normal_score: percentile(scores, 0.5),
        source: format!(
            "{} percentile of the image scores of the {} training images",
            ordinal_percent(q),
            scores.len()
        ),
    })
}

/// `0.99` → `"99th"`, `0.995` → `"99.5th"`.
fn ordinal_percent(q: f64) -> String {
    let p = q * 100.0;
    let p = if (p - p.round()).abs() < 1e-9 {
        format!("{}", p.round() as i64)
    } else {
        format!("{p}")
    };
    let suffix = match p.as_str() {
        s if s.ends_with('1') && !s.ends_with("11") => "st",
        s if s.ends_with('2') && !s.ends_with("12") => "nd",
        s if s.ends_with('3') && !s.ends_with("13") => "rd",
        _ => "th",
    };
    format!("{p}{suffix}")
}

/// The `q`-quantile (0..=1) with linear interpolation between order statistics, as
/// `numpy.percentile(..., method="linear")`. NaNs are ignored; `None` for no finite value.
pub fn percentile(values: &[f32], q: f64) -> Option<f32> {
    let mut v: Vec<f32> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some((v[lo] as f64 * (1.0 - frac) + v[hi] as f64 * frac) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4], 99) = 3.97
        assert!((percentile(&[4.0, 1.0, 3.0, 2.0], 0.99).unwrap() - 3.97).abs() < 1e-6);
        assert_eq!(percentile(&[5.0], 0.5), Some(5.0));
        assert_eq!(percentile(&[f32::NAN], 0.5), None);
    }

    #[test]
    fn calibration_keeps_the_median_normal_score_as_the_normal_level() {
        let scores = [9.0, 1.0, 5.0, 3.0, 7.0, f32::NAN];
        let c = from_scores(&scores, 0.75).unwrap();
        assert_eq!(c.normal_score, Some(5.0));
        assert_eq!(c.threshold, 7.0);
        // It survives config.json, and older files without it still load.
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Calibration>(&json).unwrap(), c);
        let old: Calibration =
            serde_json::from_str(r#"{"threshold": 2.0, "source": "x"}"#).unwrap();
        assert_eq!(old.normal_score, None);
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal_percent(0.99), "99th");
        assert_eq!(ordinal_percent(0.995), "99.5th");
        assert_eq!(ordinal_percent(0.91), "91st");
        assert_eq!(ordinal_percent(0.92), "92nd");
        assert_eq!(ordinal_percent(0.11), "11th");
    }
}
