//! Defect painters: each draws one defect of a kind and size class into a normal crop and returns
//! the exact mask of the pixels it changed. The kinds mimic what inspection of surfaces meets:
//! scratches, holes, stains, smeared (out-of-focus or worn) patches and foreign material.

use serde::Serialize;

use super::Draw;
use super::canvas::Canvas;
use super::shapes::{Mask, blob, stroke};

/// What kind of defect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefectKind {
    /// A thin curved line, much darker or brighter than the surface.
    Scratch,
    /// A blob filled with a flat dark or bright tone: a hole, a burn, a drop of paint.
    Hole,
    /// A blob whose tone is shifted but whose texture stays: a discolouration.
    Stain,
    /// A blob where the texture is smoothed away: wear, a smear, a dent out of focus.
    Blur,
    /// A blob filled with another material (another texture, or this one turned a quarter
    /// turn), of the surface's own mean tone: the hardest to see by brightness alone.
    Foreign,
}

impl DefectKind {
    /// Every kind, in the order the folders are written.
    pub const ALL: [DefectKind; 5] = [
        DefectKind::Scratch,
        DefectKind::Hole,
        DefectKind::Stain,
        DefectKind::Blur,
        DefectKind::Foreign,
    ];

    /// Folder name (MVTec's `test/<defect>`).
    pub fn name(self) -> &'static str {
        match self {
            DefectKind::Scratch => "scratch",
            DefectKind::Hole => "hole",
            DefectKind::Stain => "stain",
            DefectKind::Blur => "blur",
            DefectKind::Foreign => "foreign",
        }
    }
}

/// Size class of a defect, relative to the crop's side S: blobs of mean radius 2.5–4.5 %,
/// 6–10 % or 13–20 % of S; scratches 12–22 %, 30–50 % or 60–85 % of S long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefectSize {
    /// About one cell of the model's 14×14 grid or less.
    Small,
    /// A few cells.
    Medium,
    /// A large part of the image.
    Large,
}

impl DefectSize {
    /// The size classes in turn: image i of a kind gets `CYCLE[i % 3]`.
    pub const CYCLE: [DefectSize; 3] = [DefectSize::Small, DefectSize::Medium, DefectSize::Large];

    /// Blob mean radius range, as fractions of the crop side.
    pub(super) fn radius(self) -> (f32, f32) {
        match self {
            DefectSize::Small => (0.025, 0.045),
            DefectSize::Medium => (0.06, 0.10),
            DefectSize::Large => (0.13, 0.20),
        }
    }

    /// Scratch length range, as fractions of the crop side.
    pub(super) fn length(self) -> (f32, f32) {
        match self {
            DefectSize::Small => (0.12, 0.22),
            DefectSize::Medium => (0.30, 0.50),
            DefectSize::Large => (0.60, 0.85),
        }
    }

    /// Scratch width range in pixels at a 192-pixel crop (scaled with the crop).
    pub(super) fn stroke_width(self) -> (f32, f32) {
        match self {
            DefectSize::Small => (1.5, 2.5),
            DefectSize::Medium => (2.0, 3.5),
            DefectSize::Large => (3.0, 5.0),
        }
    }
}

/// Paint one defect into `canvas` and return the mask of the pixels changed. `donor` supplies
/// the foreign material (same channel count, at least as large as the canvas).
pub(super) fn paint(
    kind: DefectKind,
    size: DefectSize,
    canvas: &mut Canvas,
    donor: &Canvas,
    draw: &mut Draw,
) -> Mask {
    let (w, h) = (canvas.width, canvas.height);
    let side = w.min(h) as f32;
    if kind == DefectKind::Scratch {
        let (lo, hi) = size.length();
        let length = draw.uniform(lo, hi) * side;
        let (wlo, whi) = size.stroke_width();
        let width = draw.uniform(wlo, whi) * side / 192.0;
        let angle = draw.uniform(0.0, std::f32::consts::PI);
        let (ux, uy) = (angle.cos(), angle.sin());
        // Keep the whole curve (chord, bend of ≤ ¼ length at its middle, half the width) inside.
        let margin = |u: f32, extent: usize| {
            let m = u.abs() * length / 2.0 + 0.13 * length + width;
            (
                m.min(extent as f32 / 2.0),
                (extent as f32 - m).max(extent as f32 / 2.0),
            )
        };
        let (x_lo, x_hi) = margin(ux, w);
        let (y_lo, y_hi) = margin(uy, h);
        let (cx, cy) = (draw.uniform(x_lo, x_hi), draw.uniform(y_lo, y_hi));
        let mask = stroke(
            draw,
            w,
            h,
            cx - ux * length / 2.0,
            cy - uy * length / 2.0,
            angle,
            length,
            width,
        );
        let tone = contrasting_tone(canvas, &mask, draw);
        fill(canvas, &mask, |_, _| tone, 8.0, draw);
        return mask;
    }
    let (lo, hi) = size.radius();
    let radius = draw.uniform(lo, hi) * side;
    // The blob's outline reaches at most 1 + 3·0.18 = 1.54 mean radii from its centre.
    let margin = 1.6 * radius;
    let cx = draw.uniform(
        margin.min(w as f32 / 2.0),
        (w as f32 - margin).max(w as f32 / 2.0),
    );
    let cy = draw.uniform(
        margin.min(h as f32 / 2.0),
        (h as f32 - margin).max(h as f32 / 2.0),
    );
    let mask = blob(draw, w, h, cx, cy, radius);
    match kind {
        DefectKind::Scratch => unreachable!("handled above"),
        DefectKind::Hole => {
            let tone = contrasting_tone(canvas, &mask, draw);
            fill(canvas, &mask, |_, _| tone, 10.0, draw);
        }
        DefectKind::Stain => {
            // Shift toward mid-grey so the change is not lost to clipping at 0 or 255; a tint
            // per channel on colour images.
            let sign = if mean_tone(canvas, &mask) > 127.5 {
                -1.0
            } else {
                1.0
            };
            let shift = sign * draw.uniform(30.0, 55.0);
            let tint: Vec<f32> = (0..canvas.channels)
                .map(|_| {
                    if canvas.channels == 1 {
                        1.0
                    } else {
                        draw.uniform(0.4, 1.0)
                    }
                })
                .collect();
            let before = canvas.clone();
            fill(
                canvas,
                &mask,
                |i, ch| before.data[i * before.channels + ch] + shift * tint[ch],
                0.0,
                draw,
            );
        }
        DefectKind::Blur => {
            let smooth = canvas.blurred(((radius / 4.0).round() as usize).max(2));
            fill(
                canvas,
                &mask,
                |i, ch| smooth.data[i * smooth.channels + ch],
                0.0,
                draw,
            );
        }
        DefectKind::Foreign => {
            let x0 = draw.below(donor.width - w + 1);
            let y0 = draw.below(donor.height - h + 1);
            let patch = donor.crop(x0, y0, w.min(h), false, false);
            // The patch takes the surface's mean tone: the material differs, not the brightness.
            let want = canvas.mean_where(&mask.inside);
            let have = patch.mean_where(&mask.inside);
            fill(
                canvas,
                &mask,
                |i, ch| patch.data[i * patch.channels + ch] - have[ch] + want[ch],
                0.0,
                draw,
            );
        }
    }
    mask
}

/// A flat tone that stands out from the surface under `mask`: dark on bright surfaces, bright
/// on dark ones.
fn contrasting_tone(canvas: &Canvas, mask: &Mask, draw: &mut Draw) -> f32 {
    if mean_tone(canvas, mask) > 127.5 {
        draw.uniform(10.0, 45.0)
    } else {
        draw.uniform(210.0, 245.0)
    }
}

/// The surface's mean grey level under `mask` (over all channels): bright or dark decides which
/// way a hole or a stain goes.
fn mean_tone(canvas: &Canvas, mask: &Mask) -> f32 {
    let mean = canvas.mean_where(&mask.inside);
    mean.iter().sum::<f32>() / mean.len() as f32
}

/// Set every masked pixel's channel `ch` to `value(pixel, ch)` plus uniform noise of ±`noise`,
/// clamped to 0–255. Pixels outside the mask are not touched.
fn fill(
    canvas: &mut Canvas,
    mask: &Mask,
    value: impl Fn(usize, usize) -> f32,
    noise: f32,
    draw: &mut Draw,
) {
    let c = canvas.channels;
    for (i, _) in mask.inside.iter().enumerate().filter(|(_, b)| **b) {
        let jitter = if noise > 0.0 {
            draw.uniform(-noise, noise)
        } else {
            0.0
        };
        for ch in 0..c {
            canvas.data[i * c + ch] = (value(i, ch) + jitter).clamp(0.0, 255.0);
        }
    }
}
