//! The triangle-filter ("bilinear", antialiased when shrinking) resize of 8-bit gray and RGB
//! images: `image::imageops::resize` with `FilterType::Triangle`, specialised to their channels.
//!
//! `image`'s generic resize carries every pixel through four f32 channels whatever the image
//! has, through generic pixel accessors: for the official 300² gray cell to 224² that was 3.1 ms
//! of the 3.5 ms preprocessing in the test profile (1.8 ms release), PyTorch's whole
//! preprocessing 1.1 ms. Here each output row's and column's taps are computed once and the
//! passes run over the raw channels. Every value is the f32 expression `image` computes, in its
//! order: the weights of an output pixel are the triangle at `(i − centre)/scale` divided by
//! their sum; the vertical pass first, its products added tap by tap from zero and kept in f32;
//! then the horizontal one over those, clamped to [0, 255] and rounded. So the result is
//! `image`'s, bit for bit (the tests compare them), and nothing downstream changes.

/// One output pixel's inputs along an axis: the first and the normalised weights.
struct Taps {
    first: usize,
    weights: Vec<f32>,
}

/// The taps of every output position of an axis `from` long resized to `to`, as `image` places
/// them (the filter widened by the ratio when shrinking).
fn taps(from: usize, to: usize) -> Vec<Taps> {
    let ratio = from as f32 / to as f32;
    let scale = if ratio < 1.0 { 1.0 } else { ratio };
    // The triangle's support is 1, widened by the scale.
    let support = scale;
    (0..to)
        .map(|out| {
            let centre = (out as f32 + 0.5) * ratio;
            let left = ((centre - support).floor() as i64).clamp(0, from as i64 - 1);
            let right = ((centre + support).ceil() as i64).clamp(left + 1, from as i64);
            // The kernel takes a pixel's centre as 0.
            let centre = centre - 0.5;
            let mut weights: Vec<f32> = (left..right)
                .map(|i| triangle((i as f32 - centre) / scale))
                .collect();
            let mut sum = 0.0;
            for w in &weights {
                sum += w;
            }
            for w in &mut weights {
                *w /= sum;
            }
            Taps {
                first: left as usize,
                weights,
            }
        })
        .collect()
}

fn triangle(x: f32) -> f32 {
    if x.abs() < 1.0 { 1.0 - x.abs() } else { 0.0 }
}

/// `pixels` (`height` rows of `width` pixels of `C` 8-bit channels, row-major) resized to
/// `new_width × new_height` as `image::imageops::resize(…, FilterType::Triangle)` does it.
pub fn triangle_resize<const C: usize>(
    pixels: &[u8],
    [width, height]: [usize; 2],
    [new_width, new_height]: [usize; 2],
) -> Vec<u8> {
    debug_assert_eq!(pixels.len(), width * height * C);
    if width == 0 || height == 0 {
        return vec![0; new_width * new_height * C];
    }
    if (width, height) == (new_width, new_height) {
        return pixels.to_vec();
    }
    // The vertical pass: `new_height` rows of `width` pixels, in f32.
    let mut rows = vec![0f32; new_height * width * C];
    for (y, taps) in taps(height, new_height).iter().enumerate() {
        let out = &mut rows[y * width * C..(y + 1) * width * C];
        for (x, pixel) in out.chunks_exact_mut(C).enumerate() {
            for (c, value) in pixel.iter_mut().enumerate() {
                let mut t = 0.0f32;
                for (i, w) in taps.weights.iter().enumerate() {
                    t += pixels[((taps.first + i) * width + x) * C + c] as f32 * w;
                }
                *value = t;
            }
        }
    }
    // The horizontal pass over them, rounded back to 8 bits.
    let mut out = vec![0u8; new_height * new_width * C];
    let columns = taps(width, new_width);
    for y in 0..new_height {
        let row = &rows[y * width * C..(y + 1) * width * C];
        let out_row = &mut out[y * new_width * C..(y + 1) * new_width * C];
        for (taps, pixel) in columns.iter().zip(out_row.chunks_exact_mut(C)) {
            for (c, value) in pixel.iter_mut().enumerate() {
                let mut t = 0.0f32;
                for (i, w) in taps.weights.iter().enumerate() {
                    t += row[(taps.first + i) * C + c] * w;
                }
                *value = t.clamp(0.0, 255.0).round() as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops::FilterType;
    use image::{GrayImage, RgbImage};

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 56) as u8
            })
            .collect()
    }

    /// Bit for bit `image`'s triangle resize, gray and RGB: shrinking (the official 300² cell to
    /// 224², by more than 2, to one pixel), enlarging, one axis each way, odd sizes, a one-pixel
    /// source, the same size; random pixels and hard edges (0/255 stripes: the clamp).
    #[test]
    fn equals_the_image_crates_resize() {
        let sizes = [
            ([300, 300], [224, 224]),
            ([640, 480], [224, 224]),
            ([97, 41], [224, 224]),
            ([5, 300], [224, 13]),
            ([1, 1], [7, 3]),
            ([224, 224], [224, 224]),
            ([33, 17], [1, 1]),
            ([1000, 3], [9, 2]),
        ];
        for (k, ([w, h], [nw, nh])) in sizes.into_iter().enumerate() {
            for stripes in [false, true] {
                let pixels = |channels: usize| {
                    if stripes {
                        (0..w * h * channels)
                            .map(|i| {
                                if (i / channels / 3).is_multiple_of(2) {
                                    255
                                } else {
                                    0
                                }
                            })
                            .collect()
                    } else {
                        noise(w * h * channels, k as u64 + 1)
                    }
                };
                let gray = GrayImage::from_raw(w as u32, h as u32, pixels(1)).unwrap();
                let want =
                    image::imageops::resize(&gray, nw as u32, nh as u32, FilterType::Triangle);
                let got = triangle_resize::<1>(gray.as_raw(), [w, h], [nw, nh]);
                assert_eq!(&got, want.as_raw(), "gray {w}x{h} -> {nw}x{nh}");
                let rgb = RgbImage::from_raw(w as u32, h as u32, pixels(3)).unwrap();
                let want =
                    image::imageops::resize(&rgb, nw as u32, nh as u32, FilterType::Triangle);
                let got = triangle_resize::<3>(rgb.as_raw(), [w, h], [nw, nh]);
                assert_eq!(&got, want.as_raw(), "rgb {w}x{h} -> {nw}x{nh}");
            }
        }
    }
}
