//! AUPRO: area under the per-region-overlap curve up to a false positive rate limit, the
//! segmentation metric of the MVTec AD paper (Bergmann et al.), as its evaluation code computes
//! it.

use super::components::connected_components;
use super::ranking::{Groups, pack, payload, sort_packed};

/// The FPR limit of the MVTec AD benchmark (and anomalib's `AUPRO` default).
pub const DEFAULT_FPR_LIMIT: f64 = 0.3;

/// Area under the PRO curve for FPR in `[0, fpr_limit]`, divided by `fpr_limit` (so 1 is
/// perfect), of anomaly `maps` against ground-truth `masks` (row-major `width`×`height` each,
/// `true` = defect).
///
/// Regions are the 8-connected components of each mask (see [`connected_components`]). At a
/// threshold `t` a pixel is predicted anomalous when its score is `>= t`; the PRO is the mean
/// over all regions of the fraction of the region predicted anomalous, and the FPR the fraction
/// of all normal pixels predicted anomalous. The curve has one point per distinct score (the
/// exact sweep of the MVTec AD code), starts at (0, 0), and is integrated with trapezoids; the
/// segment crossing the limit is cut there by linear interpolation.
///
/// `None` when there is no defect region or no normal pixel (the curve is undefined), when the
/// counts or sizes of maps and masks disagree, when a score is NaN, or when `fpr_limit` is not in
/// `(0, 1]`. Runs in O(n) for n pixels after an O(n) radix sort.
pub fn aupro(
    maps: &[&[f32]],
    masks: &[&[bool]],
    width: usize,
    height: usize,
    fpr_limit: f64,
) -> Option<f64> {
    if maps.len() != masks.len() || !(fpr_limit > 0.0 && fpr_limit <= 1.0) {
        return None;
    }
    let pixels = width.checked_mul(height)?;
    // Region ids are global over the images; 0 marks a normal pixel. `inverse_area[id]` is what
    // a pixel of region `id` adds to the sum of per-region overlaps when it crosses the threshold.
    let mut inverse_area = vec![0.0f64];
    let mut normal = 0u64;
    let mut packed = Vec::with_capacity(maps.len().checked_mul(pixels)?);
    for (map, mask) in maps.iter().zip(masks) {
        if map.len() != pixels {
            return None;
        }
        let (labels, count) = connected_components(mask, width, height)?;
        let base = u32::try_from(inverse_area.len() - 1).ok()?;
        let mut areas = vec![0u64; count as usize];
        for &l in &labels {
            if l != 0 {
                areas[l as usize - 1] += 1;
            }
        }
        inverse_area.extend(areas.iter().map(|&a| 1.0 / a as f64));
        for (&score, &l) in map.iter().zip(&labels) {
            let id = if l == 0 {
                normal += 1;
                0
            } else {
                base.checked_add(l)?
            };
            packed.push(pack(score, id)?);
        }
    }
    let regions = inverse_area.len() - 1;
    if regions == 0 || normal == 0 {
        return None;
    }
    sort_packed(&mut packed);

    let mut false_positives = 0u64;
    // Σ over regions of (covered pixels / area), updated pixel by pixel.
    let mut overlap_sum = 0.0f64;
    let (mut prev_fpr, mut prev_pro) = (0.0f64, 0.0f64);
    let mut area = 0.0f64;
    for (_, group) in Groups::new(&packed) {
        for &k in group {
            match payload(k) {
                0 => false_positives += 1,
                id => overlap_sum += inverse_area[id as usize],
            }
        }
        let fpr = false_positives as f64 / normal as f64;
        // Rounding in the running sum can overshoot 1 by an ulp; the MVTec code clips it too.
        let pro = (overlap_sum / regions as f64).min(1.0);
        if fpr > fpr_limit {
            // `fpr > fpr_limit >= prev_fpr`, so the segment has width and can be interpolated.
            let pro_at_limit =
                prev_pro + (pro - prev_pro) * (fpr_limit - prev_fpr) / (fpr - prev_fpr);
            area += 0.5 * (prev_pro + pro_at_limit) * (fpr_limit - prev_fpr);
            return Some(area / fpr_limit);
        }
        area += 0.5 * (prev_pro + pro) * (fpr - prev_fpr);
        prev_fpr = fpr;
        prev_pro = pro;
    }
    // The last point holds every pixel, so its FPR is exactly 1 >= fpr_limit: the limit was
    // reached inside the loop or on that point.
    Some(area / fpr_limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_inverted() {
        let map = [0.9, 0.8, 0.1, 0.2];
        let mask = [true, true, false, false];
        assert_eq!(aupro(&[&map], &[&mask], 2, 2, 0.3), Some(1.0));
        let inverted = [0.1, 0.2, 0.9, 0.8];
        assert_eq!(aupro(&[&inverted], &[&mask], 2, 2, 0.3), Some(0.0));
    }

    #[test]
    fn undefined_cases() {
        let map = [0.5f32; 4];
        assert_eq!(aupro(&[&map], &[&[false; 4]], 2, 2, 0.3), None);
        assert_eq!(aupro(&[&map], &[&[true; 4]], 2, 2, 0.3), None);
        assert_eq!(
            aupro(&[&map], &[&[true, false, false, false]], 2, 2, 0.0),
            None
        );
        assert_eq!(
            aupro(&[&map[..3]], &[&[true, false, false]], 2, 2, 0.3),
            None
        );
    }

    #[test]
    fn all_equal_scores_is_the_diagonal() {
        // One point (1, 1): the line from (0, 0); its area up to 0.3 is 0.045, normalised 0.15.
        let map = [0.5f32; 4];
        let got = aupro(&[&map], &[&[true, false, false, false]], 2, 2, 0.3).unwrap_or(f64::NAN);
        assert!((got - 0.15).abs() < 1e-15, "{got}");
    }
}
