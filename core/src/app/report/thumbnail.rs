//! A gallery image: the anomaly map blended over the photo, small, with the defect's outline
//! drawn where a ground-truth mask exists.

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, Rgb, RgbImage};

use crate::app::Inspection;
use crate::error::{HvqError, Result};
use crate::overlay::{blend, resize_map};

/// Longest side of a gallery image, pixels.
pub const THUMBNAIL_SIDE: u32 = 256;

/// Outline colour of the ground-truth defect.
const OUTLINE: Rgb<u8> = Rgb([0, 255, 0]);

/// One gallery image, PNG-encoded.
#[derive(Clone, Debug)]
pub struct Thumbnail {
    /// What it shows (file, class, score, verdict).
    pub caption: String,
    /// PNG bytes.
    pub png: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Thumbnail {
    /// The overlay of `inspection` on `photo` at most `side` pixels on its longest side (colour
    /// scale as every overlay: `overlay::color_scale`), with `mask`'s outline in green.
    pub fn overlay(
        photo: &DynamicImage,
        inspection: &Inspection,
        mask: Option<&GrayImage>,
        side: u32,
        caption: String,
    ) -> Result<Self> {
        let (w, h) = fit(photo.width(), photo.height(), side);
        let small = crate::preprocess::to_rgb(&photo.resize_exact(w, h, FilterType::Triangle));
        let model = (inspection.model_width, inspection.model_height);
        let map = resize_map(&inspection.model_map, model, (w as usize, h as usize));
        let mut image = blend(&small, &map, &inspection.color_scale(), 0.5);
        if let Some(mask) = mask {
            let mask = image::imageops::resize(mask, w, h, FilterType::Nearest);
            draw_outline(&mut image, &mask);
        }
        let mut png = std::io::Cursor::new(Vec::new());
        image
            .write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| HvqError::Image {
                path: caption.clone(),
                reason: format!("encoding the report's image: {e}"),
            })?;
        Ok(Self {
            caption,
            png: png.into_inner(),
            width: w,
            height: h,
        })
    }
}

/// The size that fits `side` on the longest side, keeping the aspect ratio (never upscaled).
fn fit(w: u32, h: u32, side: u32) -> (u32, u32) {
    let longest = w.max(h).max(1);
    if longest <= side {
        return (w.max(1), h.max(1));
    }
    let scale =
        |v: u32| ((v as u64 * side as u64 + longest as u64 / 2) / longest as u64).max(1) as u32;
    (scale(w), scale(h))
}

/// Paint the mask's boundary: defect pixels with a non-defect 4-neighbour (or on the border).
fn draw_outline(image: &mut RgbImage, mask: &GrayImage) {
    let (w, h) = mask.dimensions();
    let inside = |x: i64, y: i64| {
        x >= 0
            && y >= 0
            && x < w as i64
            && y < h as i64
            && mask.get_pixel(x as u32, y as u32)[0] > 127
    };
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            let edge = inside(x, y)
                && [(1, 0), (-1, 0), (0, 1), (0, -1)]
                    .iter()
                    .any(|(dx, dy)| !inside(x + dx, y + dy));
            if edge {
                image.put_pixel(x as u32, y as u32, OUTLINE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_the_aspect_and_never_upscales() {
        assert_eq!(fit(2500, 2000, 256), (256, 205));
        assert_eq!(fit(2000, 2500, 256), (205, 256));
        assert_eq!(fit(100, 50, 256), (100, 50));
        assert_eq!(fit(5000, 1, 256), (256, 1));
    }

    #[test]
    fn the_outline_is_the_masks_boundary() {
        let mut mask = GrayImage::new(6, 6);
        for y in 1..5 {
            for x in 1..5 {
                mask.put_pixel(x, y, image::Luma([255]));
            }
        }
        let mut image = RgbImage::new(6, 6);
        draw_outline(&mut image, &mask);
        let green: Vec<(u32, u32)> = image
            .enumerate_pixels()
            .filter(|(_, _, p)| **p == OUTLINE)
            .map(|(x, y, _)| (x, y))
            .collect();
        // The 4×4 square's 12 boundary pixels; its 2×2 inside and the outside stay.
        assert_eq!(green.len(), 12);
        assert!(!green.contains(&(2, 2)) && !green.contains(&(0, 0)));
        assert!(green.contains(&(1, 1)) && green.contains(&(4, 2)));
    }
}
