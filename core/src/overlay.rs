//! Presentation on the CPU: the heat-map colormap and its blend over the photo, used by `predict`.
//! The WGSL shader in `shaders/` implements the same formulas for the web page and desktop app.

use image::{Rgb, RgbImage};

/// Map `t ∈ [0, 1]` to the "jet" colormap (blue → cyan → yellow → red), as piecewise-linear
/// ramps so the shader can reproduce it exactly.
pub fn jet(t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0);
    let r = (1.5 - (4.0 * t - 3.0).abs()).clamp(0.0, 1.0);
    let g = (1.5 - (4.0 * t - 2.0).abs()).clamp(0.0, 1.0);
    let b = (1.5 - (4.0 * t - 1.0).abs()).clamp(0.0, 1.0);
    [r, g, b]
}

/// How strongly the colormap covers the photo at a pixel whose map value sits at `t` on the
/// scale (0 at `lo`, 1 at `hi`). The shader implements the same three rules (`weighting`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Weighting {
    /// `opacity` everywhere: the whole photo is tinted, blue where the map is low.
    #[default]
    Uniform,
    /// `opacity` from `lo` up, the photo as it is below.
    HideBelowLo,
    /// Rising from nothing at `lo` to `opacity` at `hi`: where the map stays at the level of normal
    /// images the photo shows as it is, and colour appears only as a region approaches the
    /// threshold.
    Fade,
}

impl Weighting {
    /// The colormap's weight over the photo at scale position `t`.
    pub fn weight(self, t: f32, opacity: f32) -> f32 {
        match self {
            Weighting::Uniform => opacity,
            Weighting::HideBelowLo if t < 0.0 => 0.0,
            Weighting::HideBelowLo => opacity,
            Weighting::Fade => opacity * t.clamp(0.0, 1.0),
        }
    }

    /// The shader's `weighting` value.
    pub fn code(self) -> u32 {
        match self {
            Weighting::Uniform => 0,
            Weighting::HideBelowLo => 1,
            Weighting::Fade => 2,
        }
    }

    /// The inverse of [`Weighting::code`] (the web page passes the code through JavaScript).
    pub fn from_code(code: u32) -> Option<Self> {
        [Weighting::Uniform, Weighting::HideBelowLo, Weighting::Fade]
            .into_iter()
            .find(|w| w.code() == code)
    }
}

/// An overlay's colour scale: map values from `lo` (blue) to `hi` (red), and how the colormap's
/// weight varies along it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColorScale {
    /// Map value at the bottom of the scale.
    pub lo: f32,
    /// Map value drawn red (and everything above).
    pub hi: f32,
    /// The colormap's weight along the scale.
    pub weighting: Weighting,
}

impl ColorScale {
    /// Position of `value` on the scale: 0 at `lo`, 1 at `hi` (not clamped).
    pub fn position(&self, value: f32) -> f32 {
        (value - self.lo) / (self.hi - self.lo).max(1e-6)
    }

    /// One pixel: the photo's `base` colour (0..=1) blended with the colormap at `value`.
    pub fn blend_pixel(&self, base: [f32; 3], value: f32, opacity: f32) -> [u8; 3] {
        let t = self.position(value);
        let c = jet(t);
        let weight = self.weighting.weight(t, opacity);
        std::array::from_fn(|k| {
            ((base[k] + (c[k] - base[k]) * weight) * 255.0)
                .round()
                .clamp(0.0, 255.0) as u8
        })
    }
}

/// Blend the colormapped `map` (row-major, the image's size) over `photo` with `scale`.
pub fn blend(photo: &RgbImage, map: &[f32], scale: &ColorScale, opacity: f32) -> RgbImage {
    let (w, h) = photo.dimensions();
    assert_eq!(map.len(), (w * h) as usize, "map and photo sizes differ");
    let mut out = RgbImage::new(w, h);
    for (x, y, p) in photo.enumerate_pixels() {
        let base = p.0.map(|c| c as f32 / 255.0);
        let px = scale.blend_pixel(base, map[(y * w + x) as usize], opacity);
        out.put_pixel(x, y, Rgb(px));
    }
    out
}

/// The colour scale every front end uses (CLI overlays, reports, the desktop app, the web page).
///
/// A calibrated model (its `threshold`, and `normal_score`, the median score of the normal
/// images it was calibrated on) gets a scale anchored to the model, the same for every image:
/// colour fades in from the typical normal image's level and is full red at the threshold
/// ([`Weighting::Fade`]), so a normal image looks like its photo and a defect stands out in red.
/// Without those two numbers (or with a threshold moved below the normal level) the scale is the
/// image's own: from the smallest value of the model-resolution map (blue) to the larger of the
/// score and the threshold (red), over the whole photo.
pub fn color_scale(
    model_map: &[f32],
    score: f32,
    threshold: Option<f32>,
    normal_score: Option<f32>,
) -> ColorScale {
    match (threshold, normal_score) {
        (Some(hi), Some(lo)) if lo.is_finite() && hi.is_finite() && lo < hi => ColorScale {
            lo,
            hi,
            weighting: Weighting::Fade,
        },
        _ => ColorScale {
            lo: scale_bottom(model_map),
            hi: scale_top(score, threshold),
            weighting: Weighting::Uniform,
        },
    }
}

/// The blue end of an image's own scale: the smallest value of the model-resolution map (0 if
/// empty).
pub fn scale_bottom(model_map: &[f32]) -> f32 {
    let lo = model_map.iter().cloned().fold(f32::INFINITY, f32::min);
    if lo.is_finite() { lo } else { 0.0 }
}

/// The red end of an image's own scale: the larger of the image score and the threshold.
pub fn scale_top(score: f32, threshold: Option<f32>) -> f32 {
    threshold.unwrap_or(score).max(score)
}

/// Bilinear value of a row-major `mw × mh` map at normalised coordinates `(u, v)` ∈ [0, 1]²,
/// texel centres at `(i + 0.5) / size` and edges clamped: `align_corners=False` resizing, as the
/// CPU upsample and `anomaly_at` in `shaders/overlay.wgsl`.
pub fn sample_bilinear(map: &[f32], mw: usize, mh: usize, u: f32, v: f32) -> f32 {
    let px = (u * mw as f32 - 0.5).clamp(0.0, (mw - 1) as f32);
    let py = (v * mh as f32 - 0.5).clamp(0.0, (mh - 1) as f32);
    let (x0, y0) = (px.floor() as usize, py.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(mw - 1), (y0 + 1).min(mh - 1));
    let (fx, fy) = (px - x0 as f32, py - y0 as f32);
    let at = |x: usize, y: usize| map[y * mw + x];
    let top = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * fx;
    let bottom = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * fx;
    top + (bottom - top) * fy
}

/// A `mw × mh` map resized to `w × h` with [`sample_bilinear`] (burn's bilinear resize with
/// `align_corners=False`, checked against it in the tests below, and the overlay shader's
/// sampling). The map at an image's resolution is always this of the model's map, so a front end
/// can keep the small map and compute the large one when it needs it, identical every time.
pub fn resize_map(map: &[f32], (mw, mh): (usize, usize), (w, h): (usize, usize)) -> Vec<f32> {
    let row = |y: usize, out: &mut [f32]| {
        let v = (y as f32 + 0.5) / h as f32;
        for (x, value) in out.iter_mut().enumerate() {
            *value = sample_bilinear(map, mw, mh, (x as f32 + 0.5) / w as f32, v);
        }
    };
    let mut out = vec![0.0f32; w * h];
    if w == 0 || h == 0 || mw == 0 || mh == 0 || map.len() != mw * mh {
        return out;
    }
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(w)
            .enumerate()
            .for_each(|(y, r)| row(y, r));
    }
    #[cfg(not(feature = "parallel"))]
    for (y, r) in out.chunks_mut(w).enumerate() {
        row(y, r);
    }
    out
}

/// The overlay shader's fragment stage on the CPU, for displays without WebGPU: blend the jet
/// colormap of a `mw × mh` map (resampled to the photo) over an RGBA photo of `w × h`, in place,
/// with `scale`.
#[allow(clippy::too_many_arguments)]
pub fn blend_rgba_resampled(
    rgba: &mut [u8],
    w: usize,
    h: usize,
    map: &[f32],
    (mw, mh): (usize, usize),
    scale: &ColorScale,
    opacity: f32,
) {
    for y in 0..h {
        for x in 0..w {
            let value = sample_bilinear(
                map,
                mw,
                mh,
                (x as f32 + 0.5) / w as f32,
                (y as f32 + 0.5) / h as f32,
            );
            let px = &mut rgba[(y * w + x) * 4..(y * w + x) * 4 + 4];
            let base = [px[0], px[1], px[2]].map(|c| c as f32 / 255.0);
            px[..3].copy_from_slice(&scale.blend_pixel(base, value, opacity));
            px[3] = 255;
        }
    }
}

/// Write a row-major f32 map as a NumPy `.npy` file (shape `(h, w)`, little-endian float32).
pub fn npy_bytes(map: &[f32], h: usize, w: usize) -> Vec<u8> {
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({h}, {w}), }}");
    // Pad so that magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header = format!("{header}{}\n", " ".repeat(pad));
    let mut out = Vec::with_capacity(10 + header.len() + map.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in map {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_endpoints_and_middle() {
        assert_eq!(jet(0.0), [0.0, 0.0, 0.5]);
        assert_eq!(jet(1.0), [0.5, 0.0, 0.0]);
        assert_eq!(jet(0.5), [0.5, 1.0, 0.5]);
    }

    #[test]
    fn npy_header_is_aligned() {
        let b = npy_bytes(&[1.0, 2.0], 1, 2);
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        assert_eq!(b.len(), 10 + hl + 8);
    }

    #[test]
    fn bilinear_sampling_matches_burns_resize() {
        // The CPU overlay resamples the 224 map as `Inspector` resizes it to the photo (burn's
        // bilinear resize, align_corners=False); an independent implementation, so compare.
        use burn::tensor::module::interpolate;
        use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
        use burn::tensor::{Device, Tensor, TensorData};
        let (mw, mh, w, h) = (7usize, 5usize, 23usize, 11usize);
        let map: Vec<f32> = (0..mw * mh).map(|i| ((i * 37) % 11) as f32 - 3.5).collect();
        let t = Tensor::<4>::from_data(
            TensorData::new(map.clone(), [1, 1, mh, mw]),
            &Device::flex(),
        );
        let options = InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([h, w]);
        let resized = crate::device::read_back(interpolate(t, options)).unwrap();
        for y in 0..h {
            for x in 0..w {
                let u = (x as f32 + 0.5) / w as f32;
                let v = (y as f32 + 0.5) / h as f32;
                let got = sample_bilinear(&map, mw, mh, u, v);
                let want = resized[y * w + x];
                assert!((got - want).abs() <= 1e-5, "({x},{y}): {got} vs {want}");
            }
        }
    }

    #[test]
    fn resize_map_is_bilinear_sampling_at_pixel_centres() {
        let (mw, mh, w, h) = (5usize, 3usize, 13usize, 8usize);
        let map: Vec<f32> = (0..mw * mh).map(|i| (i * i) as f32 * 0.25).collect();
        let resized = resize_map(&map, (mw, mh), (w, h));
        assert_eq!(resized.len(), w * h);
        for y in 0..h {
            for x in 0..w {
                let u = (x as f32 + 0.5) / w as f32;
                let v = (y as f32 + 0.5) / h as f32;
                assert_eq!(resized[y * w + x], sample_bilinear(&map, mw, mh, u, v));
            }
        }
        // Same size: the map itself.
        assert_eq!(resize_map(&map, (mw, mh), (mw, mh)), map);
    }

    #[test]
    fn resampled_rgba_blend_equals_the_rgb_blend_of_the_resized_map() {
        let (mw, w, h) = (4usize, 9usize, 6usize);
        let map: Vec<f32> = (0..mw * mw).map(|i| i as f32).collect();
        let photo = RgbImage::from_fn(w as u32, h as u32, |x, y| {
            Rgb([x as u8 * 20, y as u8 * 30, 77])
        });
        let resized: Vec<f32> = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                sample_bilinear(
                    &map,
                    mw,
                    mw,
                    (x as f32 + 0.5) / w as f32,
                    (y as f32 + 0.5) / h as f32,
                )
            })
            .collect();
        let fade = ColorScale {
            lo: 2.0,
            hi: 12.0,
            weighting: Weighting::Fade,
        };
        let uniform = ColorScale {
            weighting: Weighting::Uniform,
            ..fade
        };
        let want = blend(&photo, &resized, &uniform, 0.6);
        let mut rgba: Vec<u8> = photo
            .pixels()
            .flat_map(|p| [p.0[0], p.0[1], p.0[2], 9])
            .collect();
        blend_rgba_resampled(&mut rgba, w, h, &map, (mw, mw), &uniform, 0.6);
        for (i, p) in want.pixels().enumerate() {
            for k in 0..3 {
                let d = (rgba[i * 4 + k] as i32 - p.0[k] as i32).abs();
                assert!(
                    d <= 1,
                    "pixel {i} channel {k}: {} vs {}",
                    rgba[i * 4 + k],
                    p.0[k]
                );
            }
            assert_eq!(rgba[i * 4 + 3], 255);
        }
        // Fading: the same as the RGB blend of the resized map.
        let want = blend(&photo, &resized, &fade, 0.6);
        let mut rgba: Vec<u8> = photo
            .pixels()
            .flat_map(|p| [p.0[0], p.0[1], p.0[2], 9])
            .collect();
        blend_rgba_resampled(&mut rgba, w, h, &map, (mw, mw), &fade, 0.6);
        for (i, p) in want.pixels().enumerate() {
            assert_eq!(&rgba[i * 4..i * 4 + 3], &p.0, "pixel {i}");
        }
        // Hiding and fading keep the photo where the map is under the scale.
        let mut kept: Vec<u8> = photo
            .pixels()
            .flat_map(|p| [p.0[0], p.0[1], p.0[2], 255])
            .collect();
        let original = kept.clone();
        for weighting in [Weighting::HideBelowLo, Weighting::Fade] {
            let high = ColorScale {
                lo: 100.0,
                hi: 200.0,
                weighting,
            };
            blend_rgba_resampled(&mut kept, w, h, &map, (mw, mw), &high, 0.6);
            assert_eq!(kept, original, "{weighting:?}");
        }
    }

    #[test]
    fn colour_scale_of_an_uncalibrated_model_is_the_images_own() {
        let own = |lo, hi| ColorScale {
            lo,
            hi,
            weighting: Weighting::Uniform,
        };
        let map = [3.0, 1.0, 2.0];
        assert_eq!(color_scale(&map, 5.0, Some(4.0), None), own(1.0, 5.0));
        assert_eq!(color_scale(&map, 5.0, Some(9.0), None), own(1.0, 9.0));
        assert_eq!(color_scale(&map, 5.0, None, None), own(1.0, 5.0));
        assert_eq!(color_scale(&[], 5.0, None, None), own(0.0, 5.0));
        // A normal level without a threshold, or a threshold moved below it: the image's own.
        assert_eq!(color_scale(&map, 5.0, None, Some(2.5)), own(1.0, 5.0));
        assert_eq!(color_scale(&map, 5.0, Some(2.0), Some(2.5)), own(1.0, 5.0));
    }

    #[test]
    fn colour_scale_of_a_calibrated_model_runs_from_normal_to_threshold() {
        let anchored = ColorScale {
            lo: 2.5,
            hi: 4.0,
            weighting: Weighting::Fade,
        };
        // The same for every image, whatever its map and score.
        assert_eq!(
            color_scale(&[3.0, 1.0], 5.0, Some(4.0), Some(2.5)),
            anchored
        );
        assert_eq!(
            color_scale(&[0.0, -7.0], 0.5, Some(4.0), Some(2.5)),
            anchored
        );
    }

    #[test]
    fn fading_leaves_normal_pixels_alone_and_is_full_red_at_the_threshold() {
        let scale = ColorScale {
            lo: 100.0,
            hi: 130.0,
            weighting: Weighting::Fade,
        };
        let gray = [0.5, 0.5, 0.5];
        let photo = [128, 128, 128];
        // At or below the normal level: the photo.
        assert_eq!(scale.blend_pixel(gray, 60.0, 0.7), photo);
        assert_eq!(scale.blend_pixel(gray, 100.0, 0.7), photo);
        // At and above the threshold: jet's red end (0.5, 0, 0) at the full opacity: green and
        // blue 0.5 + (0 - 0.5) × 0.7 = 0.15 → 38.
        let red = [128, 38, 38];
        assert_eq!(scale.blend_pixel(gray, 130.0, 0.7), red);
        assert_eq!(scale.blend_pixel(gray, 500.0, 0.7), red);
        // In between, the weight grows with the value.
        let distance = |v: f32| {
            let p = scale.blend_pixel(gray, v, 0.7);
            (0..3).map(|k| (p[k] as i32 - 128).abs()).sum::<i32>()
        };
        assert!(distance(105.0) < distance(115.0) && distance(115.0) < distance(125.0));
        assert_eq!(Weighting::Fade.weight(0.5, 0.8), 0.4);
        for w in [Weighting::Uniform, Weighting::HideBelowLo, Weighting::Fade] {
            assert_eq!(Weighting::from_code(w.code()), Some(w));
        }
    }
}
