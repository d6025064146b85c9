//! The regions a defect covers: irregular blobs and curved strokes, rasterised to exact pixel
//! masks (a pixel is in or out; the defect painters change exactly the pixels that are in).

use std::f32::consts::PI;

use super::Draw;

/// Which pixels of a `width`×`height` image a defect covers.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Mask {
    pub width: usize,
    pub height: usize,
    pub inside: Vec<bool>,
}

impl Mask {
    fn empty(width: usize, height: usize) -> Mask {
        Mask {
            width,
            height,
            inside: vec![false; width * height],
        }
    }

    /// Number of pixels covered.
    pub fn area(&self) -> usize {
        self.inside.iter().filter(|&&b| b).count()
    }

    /// Smallest box holding every covered pixel: [x0, y0, x1, y1], inclusive; None when empty.
    pub fn bounding_box(&self) -> Option<[usize; 4]> {
        let mut bbox: Option<[usize; 4]> = None;
        for (i, _) in self.inside.iter().enumerate().filter(|(_, b)| **b) {
            let (x, y) = (i % self.width, i / self.width);
            bbox = Some(match bbox {
                None => [x, y, x, y],
                Some([x0, y0, x1, y1]) => [x0.min(x), y0.min(y), x1.max(x), y1.max(y)],
            });
        }
        bbox
    }

    /// The mask as an 8-bit picture (255 inside), MVTec's ground-truth convention.
    pub fn pixels(&self) -> Vec<u8> {
        self.inside
            .iter()
            .map(|&b| if b { 255 } else { 0 })
            .collect()
    }
}

/// An irregular blob of mean radius `radius` centred at (`cx`, `cy`): the radius along each
/// direction θ is `radius·(1 + Σₖ aₖ·cos(kθ + φₖ))` for k = 2, 3, 5 with random amplitudes
/// (≤ 0.18 each) and phases, so no two blobs share an outline and none is a plain disc.
pub(super) fn blob(
    draw: &mut Draw,
    width: usize,
    height: usize,
    cx: f32,
    cy: f32,
    radius: f32,
) -> Mask {
    let harmonics: Vec<(f32, f32, f32)> = [2.0, 3.0, 5.0]
        .iter()
        .map(|&k| (k, draw.uniform(0.0, 0.18), draw.uniform(0.0, 2.0 * PI)))
        .collect();
    let mut mask = Mask::empty(width, height);
    for y in 0..height {
        for x in 0..width {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            let theta = dy.atan2(dx);
            let edge = radius
                * (1.0
                    + harmonics
                        .iter()
                        .map(|(k, a, phi)| a * (k * theta + phi).cos())
                        .sum::<f32>());
            mask.inside[y * width + x] = dx * dx + dy * dy <= edge * edge;
        }
    }
    mask
}

/// A stroke `width` pixels wide along a quadratic Bézier curve of about `length` pixels that
/// starts at (`x0`, `y0`) in direction `angle` and bends by up to a quarter of its length.
#[allow(clippy::too_many_arguments)]
pub(super) fn stroke(
    draw: &mut Draw,
    image_width: usize,
    image_height: usize,
    x0: f32,
    y0: f32,
    angle: f32,
    length: f32,
    width: f32,
) -> Mask {
    let (ux, uy) = (angle.cos(), angle.sin());
    let bend = draw.uniform(-0.25, 0.25) * length;
    let p0 = (x0, y0);
    let p2 = (x0 + ux * length, y0 + uy * length);
    // The control point sits off the chord's middle, along its normal.
    let p1 = (
        (p0.0 + p2.0) / 2.0 - uy * bend,
        (p0.1 + p2.1) / 2.0 + ux * bend,
    );
    let steps = (length * 2.0).ceil() as usize + 1;
    let points: Vec<(f32, f32)> = (0..=steps)
        .map(|i| {
            let t = i as f32 / steps as f32;
            let (a, b, c) = ((1.0 - t) * (1.0 - t), 2.0 * (1.0 - t) * t, t * t);
            (
                a * p0.0 + b * p1.0 + c * p2.0,
                a * p0.1 + b * p1.1 + c * p2.1,
            )
        })
        .collect();
    let half = width / 2.0;
    let mut mask = Mask::empty(image_width, image_height);
    for pair in points.windows(2) {
        let ((ax, ay), (bx, by)) = (pair[0], pair[1]);
        let lo_x = (ax.min(bx) - half).floor().max(0.0) as usize;
        let hi_x = ((ax.max(bx) + half).ceil() as usize).min(image_width);
        let lo_y = (ay.min(by) - half).floor().max(0.0) as usize;
        let hi_y = ((ay.max(by) + half).ceil() as usize).min(image_height);
        for y in lo_y..hi_y {
            for x in lo_x..hi_x {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                if distance_to_segment(px, py, ax, ay, bx, by) <= half {
                    mask.inside[y * image_width + x] = true;
                }
            }
        }
    }
    mask
}

/// Euclidean distance from (px, py) to the segment a–b.
fn distance_to_segment(px: f32, py: f32, ax: f32, ay: f32, bx: f32, by: f32) -> f32 {
    let (vx, vy) = (bx - ax, by - ay);
    let len2 = vx * vx + vy * vy;
    let t = if len2 > 0.0 {
        (((px - ax) * vx + (py - ay) * vy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (dx, dy) = (px - (ax + t * vx), py - (ay + t * vy));
    (dx * dx + dy * dy).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob's area is near the disc of its mean radius (the harmonics average out over θ,
    /// their squares add ≤ Σ aₖ²/2 ≈ 5 %), and it stays inside radius·(1 + Σ aₖ).
    #[test]
    fn blob_area_and_extent_follow_the_radius() {
        let mut draw = Draw::new(3);
        for radius in [6.0f32, 15.0, 30.0] {
            let mask = blob(&mut draw, 128, 128, 64.0, 64.0, radius);
            let disc = PI * radius * radius;
            let area = mask.area() as f32;
            assert!(
                (area / disc - 1.0).abs() < 0.2,
                "radius {radius}: area {area} vs disc {disc}"
            );
            let [x0, y0, x1, y1] = mask.bounding_box().unwrap();
            let reach = radius * 1.54 + 1.0;
            assert!(64.0 - x0 as f32 <= reach && x1 as f32 + 1.0 - 64.0 <= reach);
            assert!(64.0 - y0 as f32 <= reach && y1 as f32 + 1.0 - 64.0 <= reach);
        }
    }

    /// A straight stroke (no bend possible at length ≈ 0 bend) covers about length × width.
    #[test]
    fn stroke_area_is_length_times_width() {
        let mut draw = Draw::new(5);
        let mask = stroke(&mut draw, 200, 200, 20.0, 100.0, 0.0, 150.0, 3.0);
        let area = mask.area() as f32;
        // The curve is at least as long as its chord (150) and at most ~1.16× for the largest bend.
        assert!(
            (150.0 * 3.0 * 0.95..=150.0 * 1.2 * 3.0 + 3.0 * 3.0).contains(&area),
            "{area}"
        );
        assert_eq!(distance_to_segment(1.0, 1.0, 0.0, 0.0, 2.0, 0.0), 1.0);
        assert_eq!(distance_to_segment(-3.0, 4.0, 0.0, 0.0, 2.0, 0.0), 5.0);
    }
}
