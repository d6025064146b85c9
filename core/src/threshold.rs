//! Decision thresholds from normal images' scores.

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
}
