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
}
