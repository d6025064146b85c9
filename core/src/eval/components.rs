//! Connected components of a binary mask: the ground-truth defect regions for PRO.

/// Labels the connected regions of a row-major `width`×`height` mask with 8-connectivity
/// (diagonal neighbours belong to the same region), as anomalib and the MVTec AD evaluation code
/// do (`scipy.ndimage.label` with a full 3×3 structure). scipy's default is 4-connectivity; it
/// would split a defect whose pixels touch only at corners into several regions.
///
/// Returns one label per pixel (0 = background, regions numbered `1..=count` in raster order of
/// their first pixel, like scipy) and the number of regions. `None` when
/// `mask.len() != width * height`.
pub fn connected_components(mask: &[bool], width: usize, height: usize) -> Option<(Vec<u32>, u32)> {
    if width.checked_mul(height) != Some(mask.len()) {
        return None;
    }
    let mut labels = vec![0u32; mask.len()];
    let mut count = 0u32;
    // Explicit stack: a recursive fill would overflow on a large defect.
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        count += 1;
        labels[start] = count;
        stack.push(start);
        while let Some(pixel) = stack.pop() {
            let (x, y) = (pixel % width, pixel / width);
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let n = ny * width + nx;
                    if mask[n] && labels[n] == 0 {
                        labels[n] = count;
                        stack.push(n);
                    }
                }
            }
        }
    }
    Some((labels, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_touch_is_one_region() {
        #[rustfmt::skip]
        let mask = [
            true,  false, false, false,
            false, true,  false, true,
            false, false, false, true,
        ];
        let (labels, count) = connected_components(&mask, 4, 3).unwrap_or_default();
        assert_eq!(count, 2);
        assert_eq!(labels, [1, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 2]);
    }

    #[test]
    fn shape_mismatch_and_empty() {
        assert!(connected_components(&[true; 5], 2, 2).is_none());
        assert_eq!(connected_components(&[], 0, 0), Some((vec![], 0)));
    }
}
