//! One image of a dataset: where its pixels come from, its labels, and its optional mask.

use std::path::PathBuf;
use std::sync::Arc;

use image::{DynamicImage, GrayImage, ImageBuffer, imageops::FilterType};

use crate::error::{HvqError, Result};

/// Where a sample's pixels come from.
#[derive(Clone)]
pub enum ImageSource {
    /// An image file (PNG or JPEG), decoded on demand so a dataset costs no memory until used.
    File(PathBuf),
    /// Pixels already in memory (the binary CIFAR-10 and IDX releases store them this way).
    Pixels {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// 1 (gray) or 3 (RGB).
        channels: u8,
        /// Row-major, channel-interleaved bytes (`y * width * channels + x * channels + c`),
        /// exactly `width * height * channels` of them. Shared, so cloning a sample is cheap.
        data: Arc<[u8]>,
    },
    /// A rectangle of another source (a tile of a high-resolution image).
    Crop {
        /// The whole image.
        source: Box<ImageSource>,
        /// Left edge, pixels.
        x: u32,
        /// Top edge, pixels.
        y: u32,
        /// Width, pixels.
        width: u32,
        /// Height, pixels.
        height: u32,
    },
}

impl std::fmt::Debug for ImageSource {
    // Written by hand so that printing a sample does not dump thousands of pixel bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageSource::File(p) => f.debug_tuple("File").field(p).finish(),
            ImageSource::Pixels {
                width,
                height,
                channels,
                ..
            } => f
                .debug_struct("Pixels")
                .field("width", width)
                .field("height", height)
                .field("channels", channels)
                .finish_non_exhaustive(),
            ImageSource::Crop {
                source,
                x,
                y,
                width,
                height,
            } => f
                .debug_struct("Crop")
                .field("source", source)
                .field("at", &(x, y))
                .field("size", &(width, height))
                .finish(),
        }
    }
}

/// One image with its labels.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Unique, human-readable name, e.g. `bottle/test/broken_large/000.png` or
    /// `data_batch_1.bin#00042`; used in reports and error messages.
    pub id: String,
    /// Where the pixels come from.
    pub source: ImageSource,
    /// Index into [`super::Dataset::class_names`]. For the anomalous test samples of the semantic
    /// datasets (cifar10, fashion-mnist) the true class is not one of the normal classes, so there
    /// is no right value: it is 0 and evaluation must choose the class itself (classifier/auto).
    pub class: usize,
    /// True for a defective (or, for semantic datasets, out-of-split) image.
    pub anomalous: bool,
    /// Defect type: `good` for normal images, otherwise the defect folder name (MVTec-like trees),
    /// `bad` (VisA), `defective` (ELPV) or the true class name (semantic datasets).
    pub defect: String,
    /// Ground-truth mask file, when the dataset has one for this image. Normal images have none
    /// (their mask is all zero).
    pub mask: Option<PathBuf>,
}

impl Sample {
    /// Decode the image. Grayscale stays gray and RGB stays RGB: callers convert (e.g. with
    /// [`crate::preprocess::to_rgb`]), so a gray dataset does not cost three times the memory here.
    pub fn load_image(&self) -> Result<DynamicImage> {
        self.load_source(&self.source)
    }

    /// The image's size without decoding its pixels (a file's header is read).
    pub fn image_size(&self) -> Result<(u32, u32)> {
        match &self.source {
            ImageSource::File(path) => image::image_dimensions(path).map_err(|e| HvqError::Image {
                path: path.display().to_string(),
                reason: format!("cannot read its size: {e}"),
            }),
            ImageSource::Pixels { width, height, .. } | ImageSource::Crop { width, height, .. } => {
                Ok((*width, *height))
            }
        }
    }

    fn load_source(&self, source: &ImageSource) -> Result<DynamicImage> {
        match source {
            ImageSource::Crop {
                source,
                x,
                y,
                width,
                height,
            } => {
                let whole = self.load_source(source)?;
                if x + width > whole.width() || y + height > whole.height() {
                    return Err(HvqError::Image {
                        path: self.id.clone(),
                        reason: format!(
                            "tile {width}x{height} at ({x}, {y}) lies outside the {}x{} image",
                            whole.width(),
                            whole.height()
                        ),
                    });
                }
                Ok(whole.crop_imm(*x, *y, *width, *height))
            }
            ImageSource::File(path) => crate::preprocess::load(path),
            ImageSource::Pixels {
                width,
                height,
                channels,
                data,
            } => {
                let bad = |reason: String| HvqError::Image {
                    path: self.id.clone(),
                    reason,
                };
                let expected = *width as usize * *height as usize * *channels as usize;
                if data.len() != expected || expected == 0 {
                    return Err(bad(format!(
                        "in-memory image holds {} bytes, {width}x{height}x{channels} needs {expected}",
                        data.len()
                    )));
                }
                match channels {
                    1 => ImageBuffer::from_raw(*width, *height, data.to_vec())
                        .map(DynamicImage::ImageLuma8),
                    3 => ImageBuffer::from_raw(*width, *height, data.to_vec())
                        .map(DynamicImage::ImageRgb8),
                    _ => None,
                }
                .ok_or_else(|| bad(format!("unsupported channel count {channels} (1 or 3)")))
            }
        }
    }

    /// Load the ground-truth mask, resized (nearest neighbour, so no new grey levels appear) to
    /// `width`×`height` and binarised: any non-zero pixel becomes 255. `Ok(None)` when the sample
    /// has no mask file; for a normal sample that means an all-zero mask.
    pub fn load_mask(&self, width: u32, height: u32) -> Result<Option<GrayImage>> {
        let Some(path) = &self.mask else {
            return Ok(None);
        };
        if width == 0 || height == 0 {
            return Err(HvqError::Image {
                path: path.display().to_string(),
                reason: format!("cannot resize a mask to {width}x{height}"),
            });
        }
        let gray = crate::preprocess::load(path)?.to_luma8();
        let mut mask = if gray.width() == width && gray.height() == height {
            gray
        } else {
            image::imageops::resize(&gray, width, height, FilterType::Nearest)
        };
        for p in mask.pixels_mut() {
            p.0[0] = if p.0[0] > 0 { 255 } else { 0 };
        }
        Ok(Some(mask))
    }
}
