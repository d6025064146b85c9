//! Image → model input: decode, RGB, resize to the model size, normalise. The one place where
//! this happens, for every front end.

use burn::tensor::{Device, Tensor, TensorData};
use image::{DynamicImage, RgbImage};

use crate::config::InputNorm;
use crate::error::{HvqError, Result};

/// Largest accepted image side, to refuse decompression bombs with a clear message.
pub const MAX_SIDE: u32 = 16_384;

/// Decode an image file's bytes; `name` is used in error messages.
pub fn decode(bytes: &[u8], name: &str) -> Result<DynamicImage> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| HvqError::Image {
            path: name.to_string(),
            reason: e.to_string(),
        })?;
    if reader.format().is_none() {
        return Err(HvqError::Image {
            path: name.to_string(),
            reason: "not a recognised image format (PNG or JPEG expected)".into(),
        });
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    let mut reader = reader;
    reader.limits(limits);
    let img = reader.decode().map_err(|e| HvqError::Image {
        path: name.to_string(),
        reason: format!("cannot decode: {e}"),
    })?;
    if img.width() == 0 || img.height() == 0 {
        return Err(HvqError::Image {
            path: name.to_string(),
            reason: "image has zero width or height".into(),
        });
    }
    Ok(img)
}

/// Read and decode an image file.
pub fn load(path: &std::path::Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| HvqError::io(path, e))?;
    decode(&bytes, &path.display().to_string())
}

/// Convert to 8-bit RGB: gray is replicated, alpha dropped, 16-bit scaled down.
pub fn to_rgb(img: &DynamicImage) -> RgbImage {
    img.to_rgb8()
}

/// Resize (triangle filter, antialiased when shrinking, like PIL's BILINEAR used by the reference
/// data pipeline) to `size`×`size` and normalise into a `[1, 3, size, size]` tensor.
pub fn to_input(img: &DynamicImage, size: usize, norm: &InputNorm, device: &Device) -> Tensor<4> {
    let rgb = to_rgb(img);
    let resized = if rgb.width() as usize == size && rgb.height() as usize == size {
        rgb
    } else {
        image::imageops::resize(
            &rgb,
            size as u32,
            size as u32,
            image::imageops::FilterType::Triangle,
        )
    };
    Tensor::from_data(
        TensorData::new(normalise(&resized, norm), [1, 3, size, size]),
        device,
    )
}

/// Planar CHW floats from an RGB image.
pub fn normalise(rgb: &RgbImage, norm: &InputNorm) -> Vec<f32> {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let mut out = vec![0f32; 3 * w * h];
    for (x, y, p) in rgb.enumerate_pixels() {
        for c in 0..3 {
            let v = p.0[c] as f32 / 255.0;
            out[c * w * h + y as usize * w + x as usize] = (v - norm.mean[c]) / norm.std[c];
        }
    }
    out
}
