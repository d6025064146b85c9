//! Image → model input: decode, RGB, resize to the model size, normalise. The one place where
//! this happens, for every front end.

use burn::tensor::{Device, Tensor, TensorData};
use image::{DynamicImage, RgbImage};

use crate::config::InputNorm;
use crate::error::{HvqError, Result};

mod resize;
pub use resize::triangle_resize;

/// Largest accepted image side, to refuse decompression bombs with a clear message.
pub const MAX_SIDE: u32 = 16_384;

/// How large an image may be before decoding is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest width or height.
    pub max_side: u32,
    /// Largest width × height.
    pub max_pixels: u64,
}

impl DecodeLimits {
    /// Native front ends: any image up to [`MAX_SIDE`] on a side.
    pub const NATIVE: Self = Self {
        max_side: MAX_SIDE,
        max_pixels: MAX_SIDE as u64 * MAX_SIDE as u64,
    };
    /// A browser tab: a wasm page has at most 4 GiB of memory, and the photo is also decoded by
    /// the browser for display; 50 megapixels covers industrial cameras.
    pub const BROWSER: Self = Self {
        max_side: 12_000,
        max_pixels: 50_000_000,
    };
}

/// Decode an image file's bytes; `name` is used in error messages.
pub fn decode(bytes: &[u8], name: &str) -> Result<DynamicImage> {
    decode_with(bytes, name, DecodeLimits::NATIVE)
}

/// [`decode`] with explicit size limits.
pub fn decode_with(bytes: &[u8], name: &str, max: DecodeLimits) -> Result<DynamicImage> {
    let fail = |reason: String| HvqError::Image {
        path: name.to_string(),
        reason,
    };
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| fail(e.to_string()))
    };
    if reader()?.format().is_none() {
        return Err(fail(
            "not a recognised image format (PNG or JPEG expected)".into(),
        ));
    }
    // Read the header first so an oversized image is refused before any pixel is allocated.
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| fail(format!("cannot decode: {e}")))?;
    if w > max.max_side || h > max.max_side || w as u64 * h as u64 > max.max_pixels {
        return Err(fail(format!(
            "image is too large ({w}×{h}); the limit here is {} pixels a side and {} megapixels",
            max.max_side,
            max.max_pixels / 1_000_000
        )));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(max.max_side);
    limits.max_image_height = Some(max.max_side);
    let mut reader = reader()?;
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| fail(format!("cannot decode: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(fail("image has zero width or height".into()));
    }
    Ok(img)
}

/// An image from raw RGBA8 pixels (a camera frame or a canvas), checked as [`decode_with`]
/// checks a file: the length must be `width × height × 4` and the size within `max`. `name`
/// is used in error messages. The alpha channel is kept (and dropped by [`to_rgb`], like a PNG's).
pub fn from_rgba(
    rgba: Vec<u8>,
    width: u32,
    height: u32,
    name: &str,
    max: DecodeLimits,
) -> Result<DynamicImage> {
    let fail = |reason: String| HvqError::Image {
        path: name.to_string(),
        reason,
    };
    if width == 0 || height == 0 {
        return Err(fail("image has zero width or height".into()));
    }
    if width > max.max_side
        || height > max.max_side
        || width as u64 * height as u64 > max.max_pixels
    {
        return Err(fail(format!(
            "image is too large ({width}×{height}); the limit here is {} pixels a side and {} megapixels",
            max.max_side,
            max.max_pixels / 1_000_000
        )));
    }
    let expected = width as u64 * height as u64 * 4;
    if rgba.len() as u64 != expected {
        return Err(fail(format!(
            "{} bytes of pixels for {width}×{height} RGBA (expected {expected})",
            rgba.len()
        )));
    }
    let img = image::RgbaImage::from_raw(width, height, rgba)
        .ok_or_else(|| fail("pixel buffer does not match its size".into()))?;
    Ok(DynamicImage::ImageRgba8(img))
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

/// The RGB image at `size`×`size` (triangle filter, antialiased when shrinking), unnormalised.
pub fn resize_rgb(img: &DynamicImage, size: usize) -> RgbImage {
    let rgb = to_rgb(img);
    if rgb.width() as usize == size && rgb.height() as usize == size {
        rgb
    } else {
        let from = [rgb.width() as usize, rgb.height() as usize];
        let resized = triangle_resize::<3>(rgb.as_raw(), from, [size, size]);
        RgbImage::from_raw(size as u32, size as u32, resized).expect("size² RGB pixels")
    }
}

/// Resize (triangle filter, antialiased when shrinking, like PIL's BILINEAR used by the reference
/// data pipeline) to `size`×`size` and normalise into a `[1, 3, size, size]` tensor.
pub fn to_input(img: &DynamicImage, size: usize, norm: &InputNorm, device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(input_values(img, size, norm), [1, 3, size, size]),
        device,
    )
}

/// The planar CHW values `to_input` uploads: resized to `size`×`size` and normalised.
///
/// An 8-bit grayscale image (the common case in inspection) is resized as one channel and
/// replicated afterwards: the filter treats channels independently, so this is exactly the
/// resize of its RGB conversion, at a third of the work and without the conversion.
pub fn input_values(img: &DynamicImage, size: usize, norm: &InputNorm) -> Vec<f32> {
    let mut out = vec![0f32; 3 * size * size];
    write_input(img, size, norm, &mut out);
    out
}

/// [`input_values`] into `out` (length `3·size·size`).
fn write_input(img: &DynamicImage, size: usize, norm: &InputNorm, out: &mut [f32]) {
    match img {
        DynamicImage::ImageLuma8(gray) => {
            let same = gray.width() as usize == size && gray.height() as usize == size;
            let resized;
            let gray: &[u8] = if same {
                gray.as_raw()
            } else {
                let from = [gray.width() as usize, gray.height() as usize];
                resized = triangle_resize::<1>(gray.as_raw(), from, [size, size]);
                &resized
            };
            let plane = size * size;
            for (c, channel) in out.chunks_exact_mut(plane).enumerate() {
                for (v, &p) in channel.iter_mut().zip(gray) {
                    *v = normalised(p, c, norm);
                }
            }
        }
        _ => normalise_into(&resize_rgb(img, size), norm, out),
    }
}

/// A `[N, 3, size, size]` batch of the images `load` gives for `items` (decoding included):
/// each image is decoded, resized and normalised on the host, in parallel where the build has
/// threads, into one buffer that is uploaded once. The first error, in item order, is returned.
pub fn batch_input<T: Sync>(
    items: &[T],
    load: impl Fn(&T) -> Result<DynamicImage> + Sync,
    size: usize,
    norm: &InputNorm,
    device: &Device,
) -> Result<Tensor<4>> {
    let values = batch_values(items, load, size, norm)?;
    Ok(upload(values, items.len(), size, device))
}

/// The host half of [`batch_input`]: `items.len()` planar images `[3, size, size]` in one
/// buffer, for [`upload`] (preparing the next batch on another thread while the device runs).
pub fn batch_values<T: Sync>(
    items: &[T],
    load: impl Fn(&T) -> Result<DynamicImage> + Sync,
    size: usize,
    norm: &InputNorm,
) -> Result<Vec<f32>> {
    fill_batch(items, size, |item, out| {
        write_input(&load(item)?, size, norm, out);
        Ok(())
    })
}

/// A `[N, 3, size, size]` batch of decoded images (resized and normalised on the host, in
/// parallel where the build has threads; uploaded once).
pub fn batch_of(
    images: &[&DynamicImage],
    size: usize,
    norm: &InputNorm,
    device: &Device,
) -> Tensor<4> {
    upload(
        host_batch_of(images, size, norm),
        images.len(),
        size,
        device,
    )
}

/// [`batch_of`]'s values on the host, `[N, 3, size, size]` row-major (a recorded pass takes them
/// into its own input buffer, `crate::replay`).
pub fn host_batch_of(images: &[&DynamicImage], size: usize, norm: &InputNorm) -> Vec<f32> {
    let values = fill_batch(images, size, |img, out| {
        write_input(img, size, norm, out);
        Ok::<(), std::convert::Infallible>(())
    });
    let Ok(values) = values;
    values
}

/// Decode image files, in parallel where the build has threads; one result per path, in order.
pub fn load_all(paths: &[std::path::PathBuf]) -> Vec<Result<DynamicImage>> {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        paths.par_iter().map(|p| load(p)).collect()
    }
    #[cfg(not(feature = "parallel"))]
    {
        paths.iter().map(|p| load(p)).collect()
    }
}

/// `n` planar images `[3, size, size]` from one host buffer, uploaded as one `[n, 3, size, size]`
/// tensor.
pub fn upload(values: Vec<f32>, n: usize, size: usize, device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values, [n, 3, size, size]), device)
}

/// One host buffer of `items.len()` planar images, each written by `fill`; the first error, in
/// item order, is returned.
fn fill_batch<T: Sync, E: Send>(
    items: &[T],
    size: usize,
    fill: impl Fn(&T, &mut [f32]) -> std::result::Result<(), E> + Sync,
) -> std::result::Result<Vec<f32>, E> {
    let per_image = 3 * size * size;
    let mut values = vec![0f32; items.len() * per_image];
    #[cfg(feature = "parallel")]
    let results: Vec<std::result::Result<(), E>> = {
        use rayon::prelude::*;
        items
            .par_iter()
            .zip(values.par_chunks_mut(per_image))
            .map(|(item, out)| fill(item, out))
            .collect()
    };
    #[cfg(not(feature = "parallel"))]
    let results: Vec<std::result::Result<(), E>> = items
        .iter()
        .zip(values.chunks_mut(per_image))
        .map(|(item, out)| fill(item, out))
        .collect();
    results
        .into_iter()
        .collect::<std::result::Result<Vec<()>, E>>()?;
    Ok(values)
}

/// Planar CHW floats from an RGB image.
pub fn normalise(rgb: &RgbImage, norm: &InputNorm) -> Vec<f32> {
    let mut out = vec![0f32; 3 * rgb.width() as usize * rgb.height() as usize];
    normalise_into(rgb, norm, &mut out);
    out
}

fn normalise_into(rgb: &RgbImage, norm: &InputNorm, out: &mut [f32]) {
    let plane = rgb.width() as usize * rgb.height() as usize;
    for (i, p) in rgb.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = normalised(p[c], c, norm);
        }
    }
}

/// One 8-bit value of channel `c`, scaled to [0, 1] and normalised: the formula both routes share.
#[inline(always)]
fn normalised(value: u8, c: usize, norm: &InputNorm) -> f32 {
    (value as f32 / 255.0 - norm.mean[c]) / norm.std[c]
}
