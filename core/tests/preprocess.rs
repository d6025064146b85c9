//! Image → model input on the host: the 8-bit grayscale shortcut (resize one channel, replicate)
//! must equal the general route through an RGB conversion bit for bit, and a batch built in one
//! buffer must equal the images uploaded one by one.

mod common;

use burn::tensor::{Device, Tensor};
use common::*;
use hvq::HvqError;
use hvq::config::InputNorm;
use hvq::preprocess;
use image::{DynamicImage, GrayImage};

/// A gray image with structure at every scale, so any difference in filtering would show.
fn pattern(w: u32, h: u32) -> GrayImage {
    GrayImage::from_fn(w, h, |x, y| {
        image::Luma([((x * 37 + y * 11 + (x * y) % 23) % 256) as u8])
    })
}

fn values(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn gray_shortcut_equals_the_rgb_route() {
    let norm = InputNorm::imagenet();
    let sample = preprocess::load(&repo_root().join("samples/mono-defect-cell0001.png")).unwrap();
    assert!(
        matches!(sample, DynamicImage::ImageLuma8(_)),
        "the sample cell is 8-bit gray"
    );
    for (what, gray) in [
        ("sample cell, 300 → 224", sample),
        ("already 224", DynamicImage::ImageLuma8(pattern(224, 224))),
        (
            "upscaled 100×80 → 224",
            DynamicImage::ImageLuma8(pattern(100, 80)),
        ),
        ("1×1", DynamicImage::ImageLuma8(pattern(1, 1))),
    ] {
        // The general route, written out: RGB conversion, resize, normalise.
        let rgb = DynamicImage::ImageRgb8(gray.to_rgb8());
        let want = preprocess::normalise(&preprocess::resize_rgb(&rgb, 224), &norm);
        assert_eq!(preprocess::input_values(&gray, 224, &norm), want, "{what}");
        assert_eq!(
            preprocess::input_values(&rgb, 224, &norm),
            want,
            "{what} as RGB"
        );
    }
}

#[test]
fn a_batch_equals_the_images_one_by_one() {
    let device = Device::flex();
    let norm = InputNorm::imagenet();
    let gray = DynamicImage::ImageLuma8(pattern(300, 300));
    let images = vec![
        gray.clone(),
        DynamicImage::ImageRgb8(gray.to_rgb8()),
        DynamicImage::ImageRgb16(DynamicImage::ImageLuma8(pattern(64, 90)).to_rgb16()),
        DynamicImage::ImageLuma8(pattern(224, 224)),
        DynamicImage::ImageRgba8(DynamicImage::ImageLuma8(pattern(500, 120)).to_rgba8()),
    ];
    let batch =
        preprocess::batch_input(&images, |img| Ok(img.clone()), 224, &norm, &device).unwrap();
    assert_eq!(batch.dims(), [images.len(), 3, 224, 224]);
    let one_by_one: Vec<Tensor<4>> = images
        .iter()
        .map(|img| preprocess::to_input(img, 224, &norm, &device))
        .collect();
    assert_eq!(values(batch), values(Tensor::cat(one_by_one, 0)));

    // The first failing item's error comes back (not a panic, not a later item's error).
    let err = preprocess::batch_input(
        &[0, 1, 2, 3],
        |&i| match i {
            1 | 3 => Err(HvqError::Image {
                path: format!("item{i}.png"),
                reason: "broken".into(),
            }),
            _ => Ok(gray.clone()),
        },
        224,
        &norm,
        &device,
    )
    .unwrap_err();
    assert!(err.to_string().contains("item1.png"), "{err}");
}
