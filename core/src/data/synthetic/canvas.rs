//! A small image in f32 (0–255 per channel, row-major, channels interleaved): what the defect
//! painters work on before the result is rounded back to 8 bits.

use std::path::Path;

use crate::error::{HvqError, Result};

/// An image being generated.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Canvas {
    pub width: usize,
    pub height: usize,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    pub data: Vec<f32>,
}

impl Canvas {
    /// Decode a texture photograph; gray stays gray (one channel), anything else becomes RGB.
    pub fn open(path: &Path) -> Result<Canvas> {
        let image = image::open(path).map_err(|e| HvqError::Image {
            path: path.display().to_string(),
            reason: format!("cannot be decoded as a texture: {e}"),
        })?;
        let gray = matches!(
            image.color(),
            image::ColorType::L8 | image::ColorType::L16 | image::ColorType::La8
        );
        let (width, height) = (image.width() as usize, image.height() as usize);
        let (channels, data) = if gray {
            (1, image.to_luma8().into_raw())
        } else {
            (3, image.to_rgb8().into_raw())
        };
        Ok(Canvas {
            width,
            height,
            channels,
            data: data.into_iter().map(f32::from).collect(),
        })
    }

    /// The `size`×`size` window at (`x0`, `y0`), mirrored as asked (an orientation-preserving
    /// variation: a texture's grain stays horizontal or vertical).
    pub fn crop(&self, x0: usize, y0: usize, size: usize, flip_x: bool, flip_y: bool) -> Canvas {
        let c = self.channels;
        let mut data = Vec::with_capacity(size * size * c);
        for y in 0..size {
            let sy = y0 + if flip_y { size - 1 - y } else { y };
            for x in 0..size {
                let sx = x0 + if flip_x { size - 1 - x } else { x };
                let at = (sy * self.width + sx) * c;
                data.extend_from_slice(&self.data[at..at + c]);
            }
        }
        Canvas {
            width: size,
            height: size,
            channels: c,
            data,
        }
    }

    /// The window turned a quarter turn clockwise: grain that ran across now runs down.
    pub fn rotated(&self) -> Canvas {
        let (w, h, c) = (self.width, self.height, self.channels);
        let mut data = vec![0.0; w * h * c];
        for y in 0..h {
            for x in 0..w {
                // (x, y) goes to (h − 1 − y, x) in a canvas h wide.
                let to = (x * h + (h - 1 - y)) * c;
                let from = (y * w + x) * c;
                data[to..to + c].copy_from_slice(&self.data[from..from + c]);
            }
        }
        Canvas {
            width: h,
            height: w,
            channels: c,
            data,
        }
    }

    /// The same image in `channels` channels (gray replicated, or RGB averaged).
    pub fn with_channels(&self, channels: usize) -> Canvas {
        if channels == self.channels {
            return self.clone();
        }
        let data = self
            .data
            .chunks(self.channels)
            .flat_map(|px| {
                let mean = px.iter().sum::<f32>() / px.len() as f32;
                if channels == 1 {
                    vec![mean]
                } else {
                    vec![px[0]; channels]
                }
            })
            .collect();
        Canvas {
            channels,
            data,
            ..*self
        }
    }

    /// Box blur of radius `r` (a (2r+1)² mean, borders clamped), run twice: close to a Gaussian
    /// of σ ≈ 0.8·r, enough to wipe out a texture's grain.
    pub fn blurred(&self, r: usize) -> Canvas {
        let once = |src: &Canvas, horizontal: bool| {
            let (w, h, c) = (src.width, src.height, src.channels);
            let mut out = vec![0.0; src.data.len()];
            let n = (2 * r + 1) as f32;
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..c {
                        let mut sum = 0.0;
                        for d in -(r as isize)..=(r as isize) {
                            let (sx, sy) = if horizontal {
                                ((x as isize + d).clamp(0, w as isize - 1) as usize, y)
                            } else {
                                (x, (y as isize + d).clamp(0, h as isize - 1) as usize)
                            };
                            sum += src.data[(sy * w + sx) * c + ch];
                        }
                        out[(y * w + x) * c + ch] = sum / n;
                    }
                }
            }
            Canvas {
                data: out,
                ..src.clone()
            }
        };
        let mut out = self.clone();
        for _ in 0..2 {
            out = once(&once(&out, true), false);
        }
        out
    }

    /// Mean of each channel over the pixels where `inside` holds.
    pub fn mean_where(&self, inside: &[bool]) -> Vec<f32> {
        let c = self.channels;
        let mut sum = vec![0.0f64; c];
        let mut n = 0usize;
        for (px, &keep) in self.data.chunks(c).zip(inside) {
            if keep {
                n += 1;
                for (s, &v) in sum.iter_mut().zip(px) {
                    *s += v as f64;
                }
            }
        }
        sum.iter().map(|s| (s / n.max(1) as f64) as f32).collect()
    }

    /// Rounded to 8 bits and encoded as PNG (gray or RGB).
    pub fn png(&self) -> Result<Vec<u8>> {
        let bytes: Vec<u8> = self
            .data
            .iter()
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect();
        let color = if self.channels == 1 {
            image::ExtendedColorType::L8
        } else {
            image::ExtendedColorType::Rgb8
        };
        encode_png(&bytes, self.width, self.height, color)
    }
}

/// PNG bytes of raw 8-bit pixels.
pub(super) fn encode_png(
    bytes: &[u8],
    width: usize,
    height: usize,
    color: image::ExtendedColorType,
) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(bytes, width as u32, height as u32, color)
        .map_err(|e| HvqError::Image {
            path: "generated image".into(),
            reason: format!("PNG encoding failed: {e}"),
        })?;
    Ok(png)
}
