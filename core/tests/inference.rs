//! The public inference API: image in; map at the image's resolution, score, verdict and class
//! out. Checked against independent host computations, across backends and through save/load.

mod common;

use std::io::Cursor;

use burn::tensor::Device;
use common::*;
use hvq::config::{BackboneConfig, HvqConfig, ModelConfig};
use hvq::detector::Calibration;
use hvq::{ClassChoice, Detector, HvqError, Inspector};
use image::DynamicImage;

fn small_config() -> ModelConfig {
    let backbone = BackboneConfig::efficientnet_lite0();
    let mut hvq = HvqConfig::official(
        backbone.feature_channels(),
        vec!["mono".into(), "poly".into()],
    );
    hvq.embed_dim = 16;
    hvq.heads = 2;
    hvq.ffn_dim = 32;
    hvq.codes = 8;
    ModelConfig { backbone, hvq }
}

/// [`small_config`] with the paper's class-predicting head.
fn classifier_config() -> ModelConfig {
    let mut config = small_config();
    config.hvq.classifier = Some(hvq::config::ClassifierConfig {
        hidden: 8,
        weight: 1.0,
    });
    config
}

/// Weights of a model with the embedded Lite0 backbone and a random reconstruction network.
fn random_weights() -> hvq::weights::TensorMap {
    random_weights_of(small_config())
}

/// [`random_weights`] for another architecture: the same weights on every run (drawn from the
/// seeded generator, one model at a time), so that a test's choice of images (which classes
/// they get) holds from run to run.
fn random_weights_of(config: ModelConfig) -> hvq::weights::TensorMap {
    static DRAWING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = DRAWING.lock().unwrap_or_else(|e| e.into_inner());
    Device::flex().seed(7);
    let mut d = Detector::new(config, &Device::flex()).unwrap();
    d.backbone = hvq::pretrained::lite0_tensors()
        .unwrap()
        .load_into(d.backbone)
        .unwrap();
    d.to_tensors()
}

/// A model on `device` from given weights, with a threshold.
fn detector_from(map: &hvq::weights::TensorMap, device: &Device) -> Detector {
    detector_of(small_config(), map, device)
}

/// [`detector_from`] for another architecture.
fn detector_of(config: ModelConfig, map: &hvq::weights::TensorMap, device: &Device) -> Detector {
    let mut d = Detector::from_tensors(config, map, device).unwrap();
    d.calibration = Some(Calibration {
        threshold: 50.0,
        source: "test".into(),
        normal_score: None,
    });
    d
}

fn detector(device: &Device) -> Detector {
    detector_from(&random_weights(), device)
}

fn chelsea() -> DynamicImage {
    hvq::preprocess::load(&repo_root().join("core/tests/data/chelsea.png")).unwrap()
}

/// Max over 16×16 stride-1 average pooling, computed on the host in f64.
fn pooled_max(map: &[f32], size: usize, k: usize) -> f64 {
    let mut best = f64::MIN;
    for y in 0..=size - k {
        for x in 0..=size - k {
            let mut s = 0.0f64;
            for dy in 0..k {
                for dx in 0..k {
                    s += map[(y + dy) * size + x + dx] as f64;
                }
            }
            best = best.max(s / (k * k) as f64);
        }
    }
    best
}

/// Largest elementwise difference of two maps.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn encode(img: &DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn inspection_outputs_are_consistent() {
    let inspector = Inspector::new(detector(&Device::flex()), Device::flex());
    let img = chelsea();
    let r = inspector
        .inspect(&img, &ClassChoice::Name("poly".into()))
        .unwrap();
    assert_eq!((r.width, r.height), (img.width(), img.height()));
    assert_eq!(r.map.len(), (img.width() * img.height()) as usize);
    assert_eq!(r.model_map.len(), 224 * 224);
    assert_eq!((r.class_index, r.class_name.as_str()), (1, "poly"));
    let host = pooled_max(&r.model_map, 224, 16);
    assert!(
        ((r.score as f64) - host).abs() <= 1e-5 * host.abs(),
        "score {} vs host {host}",
        r.score
    );
    assert_eq!(r.anomalous, Some(r.score > 50.0));
    // Resizing to the photo keeps the map's range and (nearly) its mean.
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let (m1, m2) = (mean(&r.map), mean(&r.model_map));
    assert!((m1 - m2).abs() <= 0.01 * m2.abs(), "mean {m1} vs {m2}");
    let max = |v: &[f32]| v.iter().cloned().fold(f32::MIN, f32::max);
    assert!(max(&r.map) <= max(&r.model_map) + 1e-4);
}

#[test]
fn auto_picks_the_best_reconstructing_class() {
    let inspector = Inspector::new(detector(&Device::flex()), Device::flex());
    let img = chelsea();
    let scores: Vec<f32> = (0..2)
        .map(|c| {
            inspector
                .inspect(&img, &ClassChoice::Index(c))
                .unwrap()
                .score
        })
        .collect();
    let auto = inspector.inspect(&img, &ClassChoice::Auto).unwrap();
    let expect = if scores[0] <= scores[1] { 0 } else { 1 };
    assert_eq!(auto.class_index, expect, "scores {scores:?}");
    assert!((auto.score - scores[expect]).abs() <= 1e-4 * scores[expect].abs());
}

#[test]
fn unknown_class_and_bad_bytes_are_errors() {
    let inspector = Inspector::new(detector(&Device::flex()), Device::flex());
    let err = inspector
        .inspect(&chelsea(), &ClassChoice::Name("wood".into()))
        .unwrap_err();
    assert!(matches!(err, HvqError::UnknownClass { .. }), "{err}");
    assert!(
        inspector
            .inspect(&chelsea(), &ClassChoice::Index(2))
            .is_err()
    );
    let err = inspector
        .inspect_bytes(b"not an image", "upload.png", &ClassChoice::Auto)
        .unwrap_err();
    assert!(err.to_string().contains("upload.png"), "{err}");
    let png = encode(&chelsea());
    let err = inspector
        .inspect_bytes(&png[..png.len() / 3], "cut.png", &ClassChoice::Auto)
        .unwrap_err();
    assert!(err.to_string().contains("cut.png"), "{err}");
}

#[test]
fn gray_alpha_and_16_bit_images_work() {
    let inspector = Inspector::new(detector(&Device::flex()), Device::flex());
    let img = chelsea();
    let rgb = inspector.inspect(&img, &ClassChoice::Index(0)).unwrap();
    for (what, variant) in [
        ("gray", DynamicImage::ImageLuma8(img.to_luma8())),
        ("rgba", DynamicImage::ImageRgba8(img.to_rgba8())),
        ("rgb16", DynamicImage::ImageRgb16(img.to_rgb16())),
        ("1x1", img.crop_imm(10, 10, 1, 1)),
    ] {
        let r = inspector
            .inspect_bytes(&encode(&variant), what, &ClassChoice::Index(0))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            r.map.len(),
            (variant.width() * variant.height()) as usize,
            "{what}"
        );
        assert!(r.score.is_finite(), "{what}");
        if what == "rgba" || what == "rgb16" {
            // Same pixels, different container: same result.
            assert!(
                (r.score - rgb.score).abs() <= 1e-3,
                "{what}: {} vs {}",
                r.score,
                rgb.score
            );
        }
    }
}

#[test]
fn wgpu_gives_the_cpu_result() {
    let img = chelsea();
    // One set of weights on both backends (tests run in parallel and share the RNG, so two
    // random initialisations would differ).
    let weights = random_weights();
    let cpu = Inspector::new(detector_from(&weights, &Device::flex()), Device::flex());
    let gpu_device = device("wgpu");
    let gpu = Inspector::new(detector_from(&weights, &gpu_device), gpu_device);
    let a = cpu.inspect(&img, &ClassChoice::Index(1)).unwrap();
    let b = gpu.inspect(&img, &ClassChoice::Index(1)).unwrap();
    let d = max_diff(&a.model_map, &b.model_map);
    println!(
        "cpu score {} wgpu score {} max map diff {d:e}",
        a.score, b.score
    );
    // Lite0 + the network in f32 on two backends: measured 9e-5 on values around 200 (5e-7
    // relative); 1e-4 relative of the map's scale leaves room for other drivers.
    let scale = a.model_map.iter().cloned().fold(0f32, f32::max);
    assert!(d <= 1e-4 * scale, "map differs by {d} (scale {scale})");
    assert!((a.score - b.score).abs() <= 1e-4 * scale);
}

#[test]
fn saved_model_directory_round_trips() {
    let d = detector(&Device::flex());
    let dir = std::env::temp_dir().join(format!("hvq-model-{}", std::process::id()));
    d.save_dir(&dir).unwrap();
    let back = Detector::load_dir(&dir, &Device::flex()).unwrap();
    assert_eq!(back.config, d.config);
    assert_eq!(back.calibration, d.calibration);
    let img = chelsea();
    let a = Inspector::new(d, Device::flex())
        .inspect(&img, &ClassChoice::Auto)
        .unwrap();
    let b = Inspector::new(back, Device::flex())
        .inspect(&img, &ClassChoice::Auto)
        .unwrap();
    assert_eq!(a.model_map, b.model_map);
    // A model directory from another configuration is refused with the tensor named.
    let mut other = small_config();
    other.hvq.codes = 16;
    let saved = hvq::detector::SavedModel {
        model: other,
        calibration: None,
        tiling: None,
    };
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&saved).unwrap(),
    )
    .unwrap();
    let err = Detector::load_dir(&dir, &Device::flex()).unwrap_err();
    assert!(matches!(err, HvqError::ShapeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("quantize_list"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cmyk_jpeg_decodes_to_the_right_colours() {
    // cmyk.jpg: chelsea.png resized to 64×48 and saved as a CMYK JPEG by Pillow.
    let bytes = std::fs::read(repo_root().join("core/tests/data/cmyk.jpg")).unwrap();
    let img = hvq::preprocess::decode(&bytes, "cmyk.jpg").unwrap();
    let rgb = hvq::preprocess::to_rgb(&img);
    let reference = chelsea()
        .resize_exact(64, 48, image::imageops::FilterType::Triangle)
        .to_rgb8();
    assert_eq!(rgb.dimensions(), reference.dimensions());
    for c in 0..3 {
        let mean =
            |im: &image::RgbImage| im.pixels().map(|p| p.0[c] as f64).sum::<f64>() / (64.0 * 48.0);
        let (a, b) = (mean(&rgb), mean(&reference));
        // JPEG and CMYK round trips move means by a few levels; an inverted or garbled decode by 50+.
        assert!((a - b).abs() < 12.0, "channel {c}: mean {a} vs {b}");
    }
    let inspector = Inspector::new(detector(&Device::flex()), Device::flex());
    let r = inspector
        .inspect_bytes(&bytes, "cmyk.jpg", &ClassChoice::Auto)
        .unwrap();
    assert_eq!((r.width, r.height), (64, 48));
}

#[test]
fn shipped_default_model_scores_the_samples() {
    let device = Device::flex();
    let d = hvq::app::ModelSource::Shipped
        .load(&device)
        .expect("embedded default model loads");
    assert_eq!(d.config.hvq.class_names, ["mono", "poly"]);
    let threshold = d.calibration.as_ref().expect("calibrated").threshold;
    let inspector = Inspector::new(d, device);
    let score = |name: &str| {
        let img = hvq::preprocess::load(&repo_root().join("samples").join(name)).unwrap();
        inspector.inspect(&img, &ClassChoice::Auto).unwrap()
    };
    let defect = score("mono-defect-cell0001.png");
    let normal = score("mono-normal-cell0369.png");
    assert_eq!(
        (defect.class_name.as_str(), normal.class_name.as_str()),
        ("mono", "mono")
    );
    // The model card's figures: the cracked mono cell is flagged, the normal one is not.
    assert!(
        defect.score > threshold && normal.score < threshold,
        "{} / {} vs {threshold}",
        defect.score,
        normal.score
    );
    assert_eq!(defect.anomalous, Some(true));
    assert_eq!((defect.width, defect.height), (300, 300));
}

#[test]
fn model_resolution_inspection_and_separate_backbone_file_match() {
    // What the web page does: the model from three downloaded files (config, network, backbone),
    // the map only at 224×224, read back asynchronously. Same numbers as the CLI's path.
    let device = Device::flex();
    let embedded = Inspector::new(
        hvq::app::ModelSource::Shipped.load(&device).unwrap(),
        device.clone(),
    );
    let root = repo_root();
    let read = |p: &str| std::fs::read(root.join(p)).unwrap();
    let parts = Detector::from_parts(
        &std::fs::read_to_string(root.join("weights/elpv-lite0/config.json")).unwrap(),
        &read("weights/elpv-lite0/model.safetensors"),
        "model.safetensors",
        &read("weights/efficientnet-lite0.safetensors"),
        "efficientnet-lite0.safetensors",
        &device,
    )
    .unwrap();
    assert_eq!(parts.calibration, embedded.detector.calibration);
    let web = Inspector::new(parts, device);
    let img = hvq::preprocess::load(&root.join("samples/poly-defect-cell0068.png")).unwrap();
    let full = embedded.inspect(&img, &ClassChoice::Auto).unwrap();
    let small = burn::tensor::try_read_sync(web.inspect_with(
        &img,
        &ClassChoice::Auto,
        hvq::MapResolution::Model,
    ))
    .expect("the CPU backend never waits")
    .unwrap();
    assert!(
        small.map.is_empty(),
        "no image-resolution map was asked for"
    );
    assert_eq!(small.model_map, full.model_map);
    assert_eq!(
        (small.score, small.class_index),
        (full.score, full.class_index)
    );
    // A missing backbone tensor names the backbone file.
    let err = Detector::from_parts(
        &std::fs::read_to_string(root.join("weights/elpv-lite0/config.json")).unwrap(),
        &read("weights/elpv-lite0/model.safetensors"),
        "model.safetensors",
        &hvq::weights::TensorMap::new("x").to_safetensors(&Default::default()),
        "efficientnet-lite0.safetensors",
        &Device::flex(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("efficientnet-lite0.safetensors"), "{err}");
}

/// PNG bytes whose header declares `w × h` pixels, with no real pixel data behind it.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
        out
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &[0; 16]));
    png.extend(chunk(b"IEND", &[]));
    png
}

#[test]
fn oversized_images_are_refused_before_decoding() {
    use hvq::preprocess::{DecodeLimits, decode_with};
    let bomb = png_header_only(20_000, 20_000);
    let err = decode_with(&bomb, "bomb.png", DecodeLimits::BROWSER)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bomb.png") && err.contains("too large (20000×20000)"),
        "{err}"
    );
    // 9000×9000 is within the browser's side limit but over its pixel budget.
    let err = decode_with(
        &png_header_only(9_000, 9_000),
        "wide.png",
        DecodeLimits::BROWSER,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("too large"), "{err}");
    // Natively the same header passes the size check and fails on its (absent) pixels instead.
    let err = decode_with(
        &png_header_only(9_000, 9_000),
        "wide.png",
        DecodeLimits::NATIVE,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot decode") && !err.contains("too large"),
        "{err}"
    );
}

/// A batch through the model gives each image what inspecting it alone gives: the rows of a
/// batch do not mix (class choice per image under Auto, maps in order, sizes per image).
fn batch_matches_single_images(inspector: &Inspector) {
    let mut images = vec![chelsea(), chelsea().grayscale()];
    for name in ["mono-defect-cell0001.png", "poly-normal-cell0065.png"] {
        images.push(hvq::preprocess::load(&repo_root().join("samples").join(name)).unwrap());
    }
    images.push(DynamicImage::new_rgb8(97, 41));
    let refs: Vec<&DynamicImage> = images.iter().collect();
    for class in [ClassChoice::Auto, ClassChoice::Index(0)] {
        let batch = inspector
            .inspect_batch(&refs, &class, hvq::app::MapResolution::Image)
            .unwrap();
        assert_eq!(batch.len(), images.len());
        for (img, b) in images.iter().zip(batch) {
            let b = b.unwrap();
            let a = inspector.inspect(img, &class).unwrap();
            assert_eq!(
                (a.class_index, a.width, a.height),
                (b.class_index, b.width, b.height)
            );
            let scale = a.model_map.iter().cloned().fold(0f32, f32::max);
            let d = max_diff(&a.model_map, &b.model_map);
            println!(
                "{class:?}: score {} vs {}, map diff {d:e} (scale {scale})",
                a.score, b.score
            );
            // Same arithmetic, other batch shapes in the matrix products: rounding only.
            assert!(d <= 1e-5 * scale, "map differs by {d} (scale {scale})");
            assert!((a.score - b.score).abs() <= 1e-5 * scale);
            assert_eq!(a.map.len(), b.map.len());
        }
    }
    let none = inspector
        .inspect_batch(&[], &ClassChoice::Auto, hvq::app::MapResolution::Image)
        .unwrap();
    assert!(none.is_empty());
    let unknown = inspector.inspect_batch(
        &refs,
        &ClassChoice::Name("cat".into()),
        hvq::app::MapResolution::Model,
    );
    assert!(
        matches!(unknown, Err(HvqError::UnknownClass { .. })),
        "{unknown:?}"
    );
}

#[test]
fn a_batch_gives_each_image_its_single_result_on_the_cpu() {
    batch_matches_single_images(&Inspector::new(detector(&Device::flex()), Device::flex()));
}

#[test]
fn a_batch_gives_each_image_its_single_result_on_wgpu() {
    let gpu = device("wgpu");
    batch_matches_single_images(&Inspector::new(detector(&gpu), gpu));
}

/// A tiled model: a photo larger than a tile is inspected tile by tile and the maps stitched on
/// a canvas at the tiles' scale; where one tile alone covers the canvas, the stitched map is
/// that tile's own map (inspected alone, untiled), and the score is the 16×16-window maximum of
/// the stitched map, computed here on the host.
#[test]
fn a_tiled_model_inspects_large_photos_tile_by_tile() {
    let weights = random_weights();
    let device = Device::flex();
    let mut tiled = detector_from(&weights, &device);
    let tiling = hvq::tiling::Tiling {
        tile: 128,
        overlap: 0.25,
    };
    tiled.tiling = Some(tiling);
    let tiled = Inspector::new(tiled, device.clone());
    let whole = Inspector::new(detector_from(&weights, &device), device.clone());
    let photo = DynamicImage::ImageRgb8(image::RgbImage::from_fn(300, 200, |x, y| {
        image::Rgb([
            (x % 97) as u8 * 2,
            (y * 3 % 251) as u8,
            ((x + y) % 60) as u8 * 4,
        ])
    }));
    let r = tiled.inspect(&photo, &ClassChoice::Index(1)).unwrap();
    assert_eq!(r.tiles, tiling.grid(300, 200).len());
    assert_eq!(r.tiles, 6, "3 × 2 tiles of 128 with stride 96");
    // 224 / 128 map pixels per image pixel: 525 × 350.
    assert_eq!((r.model_width, r.model_height), (525, 350));
    assert_eq!(r.map.len(), 300 * 200);
    let host = hvq::tiling::pooled_max(&r.model_map, 525, 350, 16);
    assert!(
        (r.score - host).abs() <= 1e-6 * host.abs(),
        "{} vs {host}",
        r.score
    );
    // The corners: covered by one tile each (the top-left and the bottom-right one).
    let scale = 224.0 / 128.0;
    for tile in [
        tiling.grid(300, 200)[0],
        *tiling.grid(300, 200).last().unwrap(),
    ] {
        let crop = photo.crop_imm(tile.x, tile.y, tile.width, tile.height);
        let alone = whole.inspect(&crop, &ClassChoice::Index(1)).unwrap();
        let (cx, cy) = if tile.x == 0 {
            (0usize, 0usize)
        } else {
            (524, 349)
        };
        let (px, py) = ((cx as f32 + 0.5) / scale, (cy as f32 + 0.5) / scale);
        let u = (px - tile.x as f32) / tile.width as f32;
        let v = (py - tile.y as f32) / tile.height as f32;
        let want = hvq::overlay::sample_bilinear(&alone.model_map, 224, 224, u, v);
        let got = r.model_map[cy * 525 + cx];
        assert!(
            (got - want).abs() <= 1e-4 * want.abs(),
            "({cx},{cy}): {got} vs {want}"
        );
    }
    // Auto picks the class once, from the photo inspected whole.
    let auto = tiled.inspect(&photo, &ClassChoice::Auto).unwrap();
    let chosen = whole.inspect(&photo, &ClassChoice::Auto).unwrap();
    assert_eq!(auto.class_index, chosen.class_index);
    // A photo no larger than a tile is inspected whole, as without tiling.
    let small = photo.crop_imm(0, 0, 128, 100);
    let (a, b) = (
        tiled.inspect(&small, &ClassChoice::Index(0)).unwrap(),
        whole.inspect(&small, &ClassChoice::Index(0)).unwrap(),
    );
    assert_eq!((a.tiles, a.score, a.model_width), (0, b.score, 224));
    // The tiling is part of the model directory.
    let dir = std::env::temp_dir().join(format!("hvq-tiled-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    tiled.detector.save_dir(&dir).unwrap();
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(text.contains("\"tiling\""), "{text}");
    let back = Detector::load_dir(&dir, &device).unwrap();
    assert_eq!(back.tiling, Some(tiling));
    std::fs::remove_dir_all(dir).ok();
}

/// A camera frame handed over as raw RGBA pixels (the web page's live mode) is inspected exactly
/// as the same pixels saved to a PNG file; wrong lengths and sizes are refused with the frame's
/// name in the message.
#[test]
fn raw_rgba_pixels_inspect_as_their_png() {
    use hvq::preprocess::{DecodeLimits, decode_with, from_rgba};
    let device = Device::flex();
    let inspector = Inspector::new(detector(&device), device);
    let frame = DynamicImage::ImageRgba8(chelsea().to_rgba8());
    let (w, h) = (frame.width(), frame.height());
    let png = encode(&frame);
    let from_file = inspector
        .inspect(
            &decode_with(&png, "frame.png", DecodeLimits::BROWSER).unwrap(),
            &ClassChoice::Auto,
        )
        .unwrap();
    let raw = from_rgba(
        frame.to_rgba8().into_raw(),
        w,
        h,
        "camera",
        DecodeLimits::BROWSER,
    )
    .unwrap();
    let from_pixels = inspector.inspect(&raw, &ClassChoice::Auto).unwrap();
    assert_eq!(from_pixels.model_map, from_file.model_map);
    assert_eq!(from_pixels.score, from_file.score);

    let short = from_rgba(vec![0; 10], 4, 4, "camera frame 3", DecodeLimits::BROWSER)
        .unwrap_err()
        .to_string();
    assert!(
        short.contains("camera frame 3") && short.contains("expected 64"),
        "{short}"
    );
    let huge = from_rgba(vec![], 20_000, 20_000, "camera", DecodeLimits::BROWSER)
        .unwrap_err()
        .to_string();
    assert!(huge.contains("too large (20000×20000)"), "{huge}");
    let empty = from_rgba(vec![], 0, 5, "camera", DecodeLimits::BROWSER)
        .unwrap_err()
        .to_string();
    assert!(empty.contains("zero width"), "{empty}");
}

/// Normalised images `[b, 3, 224, 224]` as values, different for each `seed`.
fn image_values(b: usize, seed: f32) -> Vec<f32> {
    (0..b * 3 * 224 * 224)
        .map(|i| (i as f32 * 0.0137 + seed).sin() * 1.7)
        .collect()
}

/// A pass recorded once and replayed for new images gives, batch after batch, the values of
/// the pass run on those images: on wgpu replaying the recorded launches (the recording must
/// succeed there: lavapipe's cubecl keeps them as a software graph), on the CPU running the
/// pass again (nothing to record). Three ways to class a batch: given (a mixed-class batch, so
/// the codebook and expert selections are part of the recording), and left to the model, by
/// its classifier or, without one, by every class's score (the choice is then recorded too, and
/// each replay must choose again for its own images: the batches are picked so that the classes
/// chosen differ between them). Each is checked against the pass computed with the choice made
/// on the host (the logits or scores read back, the images scored under the classes read).
/// Two different batches in turn, so a replay that kept reading the recorded images would fail.
#[test]
fn replayed_inference_gives_the_pass_values() {
    use hvq::class_choice::BatchClasses;

    let given = BatchClasses::Given(vec![1, 0]);
    let cases = [
        ("given", small_config(), random_weights(), given.clone()),
        (
            "every class",
            small_config(),
            random_weights(),
            BatchClasses::ByModel,
        ),
        (
            "classifier",
            classifier_config(),
            balanced_classifier(),
            BatchClasses::ByModel,
        ),
    ];
    for (case, config, weights, classes) in cases {
        // The second batch: one the model (on the CPU) classes otherwise than the first.
        let on_cpu = detector_of(config.clone(), &weights, &Device::flex());
        let chosen = |seed: f32| on_cpu_classes(&on_cpu, seed);
        let seed_b = (3..40)
            .map(|k| k as f32 * 0.5)
            .find(|&seed| classes == given || chosen(seed) != chosen(1.0))
            .unwrap_or_else(|| panic!("{case}: every batch gets the classes {:?}", chosen(1.0)));
        for (name, records) in [("wgpu", true), ("cpu", false)] {
            let detector = detector_of(config.clone(), &weights, &device(name));
            replay_case(
                &detector,
                &format!("{case} on {name}"),
                &classes,
                records,
                seed_b,
            );
        }
    }
}

/// The classes the model chooses for the batch `image_values(2, seed)`.
fn on_cpu_classes(detector: &Detector, seed: f32) -> Vec<usize> {
    let features = detector.features(image_tensor(&image_values(2, seed), &detector.device()));
    let none = [None, None];
    let chosen = detector.score_choosing(features, &none, hvq::map::ScoreKind::Max);
    burn::tensor::try_read_sync(chosen)
        .unwrap()
        .unwrap()
        .classes
}

/// `[2, 3, 224, 224]` images from their values.
fn image_tensor(values: &[f32], device: &Device) -> burn::tensor::Tensor<4> {
    let data = burn::tensor::TensorData::new(values.to_vec(), [2, 3, 224, 224]);
    burn::tensor::Tensor::from_data(data, device)
}

/// Weights of [`classifier_config`] whose classifier splits the test's images between the two
/// classes: a random head prefers one class for all of them (the images differ little), so its
/// second class's bias is moved by the median of the logits' difference over those images.
fn balanced_classifier() -> hvq::weights::TensorMap {
    use burn::module::Param;

    let config = classifier_config();
    let mut d = detector_of(config.clone(), &random_weights_of(config), &Device::flex());
    let mut differences: Vec<f32> = (0..40)
        .flat_map(|k| {
            let features = d.features(image_tensor(
                &image_values(2, k as f32 * 0.5),
                &Device::flex(),
            ));
            let logits = host(d.hvq.classify(features).unwrap()).data;
            [logits[1] - logits[0], logits[3] - logits[2]]
        })
        .collect();
    differences.sort_by(f32::total_cmp);
    let median = differences[differences.len() / 2];
    let head = d.hvq.classifier.as_mut().unwrap();
    let bias =
        head.fc2.bias.val() - burn::tensor::Tensor::from_floats([0.0, median], &Device::flex());
    head.fc2.bias = Param::from_tensor(bias);
    d.to_tensors()
}

/// One case of [`replayed_inference_gives_the_pass_values`].
fn replay_case(
    detector: &Detector,
    name: &str,
    classes: &hvq::class_choice::BatchClasses,
    records: bool,
    seed_b: f32,
) {
    use burn::tensor::{Tensor, TensorData};
    use hvq::class_choice::{BatchClasses, first_minimum_rows, last_maximum_rows};
    use hvq::replay::ReplayedInference;

    let device = detector.device();
    let tensor = |v: &[f32]| image_tensor(v, &device);
    // A pass that fails while warming up (a class the model does not have) is an error, and
    // leaves the device's stream able to record the next one.
    let refused = ReplayedInference::record(
        detector.clone(),
        tensor(&image_values(2, 0.0)),
        &BatchClasses::Given(vec![1, 99]),
    );
    assert!(refused.is_err(), "{name}: class 99 recorded");
    let mut replayed =
        ReplayedInference::record(detector.clone(), tensor(&image_values(2, 0.0)), classes)
            .unwrap();
    assert_eq!(
        replayed.recorded(),
        records,
        "{name}: not recorded because {:?}",
        replayed.not_recorded()
    );
    // The index tensors the pass selected with (kept by `hvq::model` for later batches, and
    // dropped once 32 other lists came after them) are held by the recording: a replay reads
    // their buffers.
    assert!(
        !records || replayed.held_index_tensors() > 0,
        "{name}: the recording holds no index tensor"
    );
    let n = detector.config.hvq.num_classes;
    let mut seen = Vec::new();
    for seed in [1.0, seed_b, 1.0] {
        let values = image_values(2, seed);
        let got = replayed.run(&values).unwrap();
        let (got_classes, got_scores) = burn::tensor::try_read_sync(got.read()).unwrap().unwrap();
        let got_map = host(got.maps).data;
        // The reference: the choice made on the host from values read back.
        let features = detector.features(tensor(&values));
        let (want_classes, want_map, want_scores) = match classes {
            BatchClasses::Given(given) => {
                let (_, s) = detector.score(features, given).unwrap();
                (given.clone(), host(s.map).data, host(s.image).data)
            }
            BatchClasses::ByModel => match detector.hvq.classify(features.clone()) {
                Some(logits) => {
                    let chosen = last_maximum_rows(&host(logits).data, n);
                    let (_, s) = detector.score(features, &chosen).unwrap();
                    (chosen, host(s.map).data, host(s.image).data)
                }
                None => {
                    let rows = Tensor::<1, burn::tensor::Int>::from_data(
                        TensorData::new((0..2 * n as i64).map(|r| r / n as i64).collect(), [2 * n]),
                        &device,
                    );
                    let every: Vec<usize> = (0..2).flat_map(|_| 0..n).collect();
                    let (_, s) = detector.score(features.select(0, rows), &every).unwrap();
                    let (maps, scores) = (host(s.map).data, host(s.image).data);
                    let chosen = first_minimum_rows(&scores, n);
                    let pixels = maps.len() / (2 * n);
                    let row = |i: usize| i * n + chosen[i];
                    let map = (0..2)
                        .flat_map(|i| maps[row(i) * pixels..(row(i) + 1) * pixels].to_vec())
                        .collect();
                    (
                        chosen.clone(),
                        map,
                        (0..2).map(|i| scores[row(i)]).collect(),
                    )
                }
            },
        };
        assert_eq!(got_classes, want_classes, "{name}, images {seed}: classes");
        // Bit for bit: the same kernels on the same values (a short message, not the map).
        let same = |a: &[f32], b: &[f32]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        };
        assert!(
            same(&got_map, &want_map),
            "{name}, images {seed}: the map differs by up to {}",
            max_diff(&got_map, &want_map)
        );
        assert!(
            same(&got_scores, &want_scores),
            "{name}, images {seed}: image scores {got_scores:?}, with the host's choice {want_scores:?}"
        );
        seen.push((got_classes, got_scores));
    }
    assert_ne!(seen[0].1, seen[1].1, "{name}: two batches, one result");
    assert_eq!(seen[0], seen[2], "{name}: the same batch twice");
    if *classes == BatchClasses::ByModel {
        assert_ne!(
            seen[0].0, seen[1].0,
            "{name}: the second batch's classes, chosen on the CPU, differ from the first's"
        );
    }
}

/// An inspector replaying repeated batches gives every image the result of one that runs each
/// batch directly, bit for bit: the first batch of a shape and class list runs directly, its
/// repeat records the pass (wgpu: recorded) and later ones replay it, with new images each
/// time; another class list runs directly beside the recording, and classes left to the
/// model, repeated, are recorded in turn (the class chosen on the device for each batch).
/// On the CPU nothing can be recorded: the first repeat stops replaying, with the reason.
#[test]
fn an_inspector_replays_repeated_batches_with_the_same_results() {
    use hvq::MapResolution;
    use hvq::app::ReplayState;

    let weights = random_weights();
    let (a, b) = (chelsea(), chelsea().fliph());
    let c = chelsea().rotate180();
    let fixed = ClassChoice::Index(1);
    let auto = ClassChoice::Auto;
    let steps: [(&[&DynamicImage], &ClassChoice, &str); 8] = [
        (&[&a, &b], &fixed, "idle"),
        (&[&b, &c], &fixed, "recorded"),
        (&[&c, &a], &fixed, "recorded"),
        (&[&a, &b], &ClassChoice::Index(0), "recorded"),
        (&[&b], &fixed, "recorded"),
        (&[&b, &a], &auto, "recorded"),
        // Classes left to the model, repeated: recorded (the choice made on the device), then
        // replayed.
        (&[&a, &c], &auto, "recorded"),
        (&[&c, &b], &auto, "recorded"),
    ];
    for (name, recordable) in [("wgpu", true), ("cpu", false)] {
        let device = device(name);
        let direct =
            Inspector::new(detector_from(&weights, &device), device.clone()).with_replay(false);
        let replaying =
            Inspector::new(detector_from(&weights, &device), device.clone()).with_replay(true);
        for (step, (images, class, state)) in steps.iter().enumerate() {
            let got = replaying
                .inspect_batch(images, class, MapResolution::Image)
                .unwrap();
            let want = direct
                .inspect_batch(images, class, MapResolution::Image)
                .unwrap();
            for (g, w) in got.iter().zip(&want) {
                let (g, w) = (g.as_ref().unwrap(), w.as_ref().unwrap());
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(g.score.to_bits(), w.score.to_bits(), "{name} step {step}");
                assert_eq!(g.class_index, w.class_index, "{name} step {step}");
                assert!(
                    bits(&g.model_map) == bits(&w.model_map) && bits(&g.map) == bits(&w.map),
                    "{name} step {step}: maps differ by up to {}",
                    max_diff(&g.model_map, &w.model_map)
                );
            }
            let now = replaying.replay_state();
            match (recordable, step, &now) {
                (true, _, _) if *state == "idle" => assert_eq!(now, ReplayState::Idle),
                (true, _, _) => assert_eq!(now, ReplayState::Recorded, "{name} step {step}"),
                (false, 0, _) => assert_eq!(now, ReplayState::Idle),
                (false, _, ReplayState::Stopped(why)) => assert!(!why.is_empty()),
                (false, _, other) => panic!("cpu step {step}: {other:?}"),
            }
        }
    }
}
