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

/// Blend the colormapped `map` (row-major, the image's size) over `photo`.
/// Values are scaled linearly from `lo` (transparent end of the scale) to `hi`.
pub fn blend(photo: &RgbImage, map: &[f32], lo: f32, hi: f32, opacity: f32) -> RgbImage {
    let (w, h) = photo.dimensions();
    assert_eq!(map.len(), (w * h) as usize, "map and photo sizes differ");
    let span = (hi - lo).max(f32::EPSILON);
    let mut out = RgbImage::new(w, h);
    for (x, y, p) in photo.enumerate_pixels() {
        let v = map[(y * w + x) as usize];
        let c = jet((v - lo) / span);
        let mut px = [0u8; 3];
        for k in 0..3 {
            let base = p.0[k] as f32 / 255.0;
            px[k] = ((base * (1.0 - opacity) + c[k] * opacity) * 255.0)
                .round()
                .clamp(0.0, 255.0) as u8;
        }
        out.put_pixel(x, y, Rgb(px));
    }
    out
}

/// The display scale every front end uses: from the smallest value of the model-resolution map
/// (the blue end) to the larger of the image score and the threshold (the red end), so a normal
/// image never shows saturated red and an anomalous one reaches red at its worst region.
pub fn color_scale(model_map: &[f32], score: f32, threshold: Option<f32>) -> (f32, f32) {
    (scale_bottom(model_map), scale_top(score, threshold))
}

/// The blue end of [`color_scale`]: the smallest value of the model-resolution map (0 if empty).
pub fn scale_bottom(model_map: &[f32]) -> f32 {
    let lo = model_map.iter().cloned().fold(f32::INFINITY, f32::min);
    if lo.is_finite() { lo } else { 0.0 }
}

/// The red end of [`color_scale`]: the larger of the image score and the threshold.
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
/// colormap of a `mw × mh` map (resampled to the photo) over an RGBA photo of `w × h`, in place.
/// Pixels below `lo` keep the photo when `hide_below_lo` is set.
#[allow(clippy::too_many_arguments)]
pub fn blend_rgba_resampled(
    rgba: &mut [u8],
    w: usize,
    h: usize,
    map: &[f32],
    (mw, mh): (usize, usize),
    (lo, hi): (f32, f32),
    opacity: f32,
    hide_below_lo: bool,
) {
    let span = (hi - lo).max(1e-6);
    for y in 0..h {
        for x in 0..w {
            let value = sample_bilinear(
                map,
                mw,
                mh,
                (x as f32 + 0.5) / w as f32,
                (y as f32 + 0.5) / h as f32,
            );
            let t = (value - lo) / span;
            let weight = if hide_below_lo && t < 0.0 {
                0.0
            } else {
                opacity
            };
            let c = jet(t);
            let px = &mut rgba[(y * w + x) * 4..(y * w + x) * 4 + 4];
            for k in 0..3 {
                let base = px[k] as f32 / 255.0;
                px[k] = ((base + (c[k] - base) * weight) * 255.0)
                    .round()
                    .clamp(0.0, 255.0) as u8;
            }
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
        let want = blend(&photo, &resized, 2.0, 12.0, 0.6);
        let mut rgba: Vec<u8> = photo
            .pixels()
            .flat_map(|p| [p.0[0], p.0[1], p.0[2], 9])
            .collect();
        blend_rgba_resampled(&mut rgba, w, h, &map, (mw, mw), (2.0, 12.0), 0.6, false);
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
        // hide_below_lo keeps the photo where the map is under the scale.
        let mut kept: Vec<u8> = photo
            .pixels()
            .flat_map(|p| [p.0[0], p.0[1], p.0[2], 255])
            .collect();
        blend_rgba_resampled(&mut kept, w, h, &map, (mw, mw), (100.0, 200.0), 0.6, true);
        let original: Vec<u8> = photo
            .pixels()
            .flat_map(|p| [p.0[0], p.0[1], p.0[2], 255])
            .collect();
        assert_eq!(kept, original);
    }

    #[test]
    fn colour_scale_runs_from_the_map_minimum_to_score_or_threshold() {
        assert_eq!(color_scale(&[3.0, 1.0, 2.0], 5.0, Some(4.0)), (1.0, 5.0));
        assert_eq!(color_scale(&[3.0, 1.0, 2.0], 5.0, Some(9.0)), (1.0, 9.0));
        assert_eq!(color_scale(&[3.0, 1.0, 2.0], 5.0, None), (1.0, 5.0));
        assert_eq!(color_scale(&[], 5.0, None), (0.0, 5.0));
    }
}
