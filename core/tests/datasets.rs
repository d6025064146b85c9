//! Dataset loaders on small trees and files written here in each format's real on-disk layout,
//! plus the real Fashion-MNIST (Debian package) and ELPV (PyPI package) files when present.

use std::io::Write;
use std::path::{Path, PathBuf};

use hvq::data::{self, Dataset, DatasetOptions, ImageSource, ScoreKind};

/// A scratch folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("hvq-data-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mkparent(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
}

/// A gray PNG of constant value.
fn png(path: &Path, w: u32, h: u32, value: u8) {
    mkparent(path);
    image::GrayImage::from_pixel(w, h, image::Luma([value]))
        .save_with_format(path, image::ImageFormat::Png)
        .unwrap();
}

/// An RGB JPEG (VisA ships `.JPG`).
fn jpeg(path: &Path, w: u32, h: u32) {
    mkparent(path);
    image::RgbImage::from_pixel(w, h, image::Rgb([10, 120, 230]))
        .save_with_format(path, image::ImageFormat::Jpeg)
        .unwrap();
}

/// An 8×8 mask whose top-left 4×4 quadrant is 1 (not 255: binarisation is tested too).
fn mask(path: &Path) {
    mkparent(path);
    let m = image::GrayImage::from_fn(8, 8, |x, y| image::Luma([u8::from(x < 4 && y < 4)]));
    m.save_with_format(path, image::ImageFormat::Png).unwrap();
}

fn write(path: &Path, bytes: &[u8]) {
    mkparent(path);
    std::fs::write(path, bytes).unwrap();
}

fn err_text(r: hvq::Result<Dataset>) -> String {
    match r {
        Ok(d) => panic!(
            "expected an error, opened {} ({} train)",
            d.name,
            d.train.len()
        ),
        Err(e) => e.to_string(),
    }
}

fn count(samples: &[hvq::data::Sample], f: impl Fn(&hvq::data::Sample) -> bool) -> usize {
    samples.iter().filter(|s| f(s)).count()
}

fn ids(samples: &[hvq::data::Sample]) -> Vec<String> {
    samples.iter().map(|s| s.id.clone()).collect()
}

// ---------------------------------------------------------------- spec parsing

#[test]
fn spec_parsing_and_score_kind_serde() {
    let (f, p, o) =
        data::parse_spec("fashion-mnist:/usr/share/datasets/fashion-mnist?split=0,2,4,6,8&seed=3")
            .unwrap();
    assert_eq!(f, "fashion-mnist");
    assert_eq!(p, PathBuf::from("/usr/share/datasets/fashion-mnist"));
    assert_eq!(o.split, Some(vec![0, 2, 4, 6, 8]));
    assert_eq!(o.seed, 3);
    assert_eq!(o.classes, None);

    let (f, p, o) = data::parse_spec("mvtec:/data/mvtec?classes=bottle,cable").unwrap();
    assert_eq!(f, "mvtec");
    assert_eq!(p, PathBuf::from("/data/mvtec"));
    assert_eq!(
        o.classes,
        Some(vec!["bottle".to_string(), "cable".to_string()])
    );
    assert_eq!(
        o,
        DatasetOptions {
            classes: o.classes.clone(),
            ..Default::default()
        }
    );

    // A `?` not followed by options is part of the path.
    let (_, p, o) = data::parse_spec("folder:/parts/what?").unwrap();
    assert_eq!(p, PathBuf::from("/parts/what?"));
    assert_eq!(o, DatasetOptions::default());

    let e = data::parse_spec("mvtec:/x?colour=red")
        .unwrap_err()
        .to_string();
    assert!(e.contains("colour"), "{e}");
    let e = data::parse_spec("cifar10:/x?split=a,b")
        .unwrap_err()
        .to_string();
    assert!(e.contains("split"), "{e}");
    let e = data::parse_spec("/just/a/path").unwrap_err().to_string();
    assert!(e.contains("FORMAT:PATH"), "{e}");
    let e = err_text(data::open("imagenet:/tmp"));
    assert!(e.contains("imagenet") && e.contains("mvtec"), "{e}");

    assert_eq!(serde_json::to_string(&ScoreKind::Max).unwrap(), "\"max\"");
    assert_eq!(
        serde_json::from_str::<ScoreKind>("\"mean\"").unwrap(),
        ScoreKind::Mean
    );
}

#[test]
fn nonexistent_path_is_named_for_every_format() {
    let missing = std::env::temp_dir().join(format!("hvq-data-nowhere-{}", std::process::id()));
    for f in data::FORMATS {
        let e = err_text(data::open(&format!("{f}:{}", missing.display())));
        assert!(e.contains(&missing.display().to_string()), "{f}: {e}");
        assert!(e.contains("does not exist"), "{f}: {e}");
    }
}

// ---------------------------------------------------------------- mvtec

/// Two classes, written out of name order; `bottle` has two defects, `zipper` one.
fn mvtec_tree(root: &Path) {
    for i in 0..3 {
        png(
            &root.join(format!("zipper/train/good/{i:03}.png")),
            8,
            8,
            50,
        );
    }
    png(&root.join("zipper/test/good/000.png"), 8, 8, 50);
    for i in 0..2 {
        png(
            &root.join(format!("zipper/test/broken_teeth/{i:03}.png")),
            8,
            8,
            90,
        );
        mask(&root.join(format!("zipper/ground_truth/broken_teeth/{i:03}_mask.png")));
    }
    for i in 0..2 {
        png(
            &root.join(format!("bottle/train/good/{i:03}.png")),
            8,
            8,
            50,
        );
        png(&root.join(format!("bottle/test/good/{i:03}.png")), 8, 8, 50);
    }
    for d in ["broken_large", "contamination"] {
        png(&root.join(format!("bottle/test/{d}/000.png")), 8, 8, 90);
        mask(&root.join(format!("bottle/ground_truth/{d}/000_mask.png")));
    }
    // Not images / not classes: ignored.
    write(&root.join("license.txt"), b"CC BY-NC-SA 4.0");
    write(&root.join("bottle/train/good/._000.png"), b"resource fork");
}

#[test]
fn mvtec_tree_counts_labels_and_masks() {
    let t = TempDir::new("mvtec");
    mvtec_tree(&t.0);
    let ds = data::open(&format!("mvtec:{}", t.0.display())).unwrap();
    assert_eq!(ds.class_names, ["bottle", "zipper"]);
    assert_eq!(ds.score_kind, ScoreKind::Max);
    assert!(ds.has_masks);
    assert_eq!(ds.train.len(), 5);
    assert_eq!(count(&ds.train, |s| s.class == 0), 2);
    assert!(
        ds.train
            .iter()
            .all(|s| !s.anomalous && s.defect == "good" && s.mask.is_none())
    );
    assert_eq!(ds.test.len(), 7);
    assert_eq!(count(&ds.test, |s| s.anomalous), 4);
    assert!(ds.test.iter().all(|s| s.anomalous == s.mask.is_some()));
    assert!(ds.test.iter().all(|s| s.anomalous == (s.defect != "good")));
    assert_eq!(
        ids(&ds.test)[..4],
        [
            "bottle/test/broken_large/000.png",
            "bottle/test/contamination/000.png",
            "bottle/test/good/000.png",
            "bottle/test/good/001.png"
        ]
    );
    let zipper_bad = ds.test.iter().find(|s| s.defect == "broken_teeth").unwrap();
    assert_eq!(zipper_bad.class, 1);

    // Image stays gray; the mask is resized by nearest neighbour and binarised to 0/255.
    let img = zipper_bad.load_image().unwrap();
    assert_eq!((img.width(), img.height()), (8, 8));
    assert!(matches!(img, image::DynamicImage::ImageLuma8(_)));
    let m = zipper_bad.load_mask(4, 4).unwrap().unwrap();
    assert_eq!((m.width(), m.height()), (4, 4));
    assert_eq!(m.get_pixel(0, 0).0[0], 255);
    assert_eq!(m.get_pixel(1, 1).0[0], 255);
    assert_eq!(m.get_pixel(3, 3).0[0], 0);
    assert!(m.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
    let good = ds.test.iter().find(|s| !s.anomalous).unwrap();
    assert!(good.load_mask(4, 4).unwrap().is_none());

    // A subset keeps the sorted order and re-indexes classes from 0.
    let sub = data::open(&format!("mvtec:{}?classes=zipper", t.0.display())).unwrap();
    assert_eq!(sub.class_names, ["zipper"]);
    assert_eq!((sub.train.len(), sub.test.len()), (3, 3));
    assert!(sub.train.iter().chain(&sub.test).all(|s| s.class == 0));
    let both = data::open(&format!("mvtec:{}?classes=zipper,bottle", t.0.display())).unwrap();
    assert_eq!(both.class_names, ["bottle", "zipper"]);

    // limit=1: per class, the first training and normal test image and as many anomalies, so
    // every class keeps both kinds (bottle's anomalies come first in the listing; a budget
    // shared by all classes would leave zipper with none and its metrics undefined).
    let one = data::open(&format!("mvtec:{}?limit=1", t.0.display())).unwrap();
    assert_eq!(one.train.len(), 2);
    for class in 0..2 {
        assert_eq!(count(&one.test, |s| s.class == class && !s.anomalous), 1);
        assert_eq!(count(&one.test, |s| s.class == class && s.anomalous), 1);
    }
    assert_eq!(
        ids(&one.test),
        [
            "bottle/test/broken_large/000.png",
            "bottle/test/good/000.png",
            "zipper/test/broken_teeth/000.png",
            "zipper/test/good/000.png"
        ]
    );

    let e = err_text(data::open(&format!("mvtec:{}?classes=nope", t.0.display())));
    assert!(e.contains("nope") && e.contains("bottle, zipper"), "{e}");
    let e = err_text(data::open(&format!("mvtec:{}?split=0,1", t.0.display())));
    assert!(e.contains("split"), "{e}");
}

#[test]
fn mvtec_missing_mask_is_an_error_naming_it() {
    let t = TempDir::new("mvtec-missing-mask");
    mvtec_tree(&t.0);
    let gone = t.0.join("zipper/ground_truth/broken_teeth/001_mask.png");
    std::fs::remove_file(&gone).unwrap();
    let e = err_text(data::open(&format!("mvtec:{}", t.0.display())));
    assert!(e.contains(&gone.display().to_string()), "{e}");
}

#[test]
fn mvtec_without_any_ground_truth_has_no_masks() {
    let t = TempDir::new("mvtec-no-gt");
    mvtec_tree(&t.0);
    std::fs::remove_dir_all(t.0.join("zipper/ground_truth")).unwrap();
    let ds = data::open(&format!("mvtec:{}", t.0.display())).unwrap();
    assert!(!ds.has_masks);
    assert!(
        ds.test
            .iter()
            .filter(|s| s.class == 1)
            .all(|s| s.mask.is_none())
    );
    assert_eq!(count(&ds.test, |s| s.mask.is_some()), 2);
}

#[test]
fn mvtec_empty_class_folder_is_named() {
    let t = TempDir::new("mvtec-empty");
    mvtec_tree(&t.0);
    std::fs::create_dir_all(t.0.join("cable/train/good")).unwrap();
    png(&t.0.join("cable/test/good/000.png"), 8, 8, 1);
    let e = err_text(data::open(&format!("mvtec:{}", t.0.display())));
    let folder = t.0.join("cable/train/good");
    assert!(e.contains(&folder.display().to_string()), "{e}");
    // Unsupported image files are refused up front, naming the file.
    let t2 = TempDir::new("mvtec-bmp");
    mvtec_tree(&t2.0);
    write(&t2.0.join("bottle/test/good/002.bmp"), b"BM");
    let e = err_text(data::open(&format!("mvtec:{}", t2.0.display())));
    assert!(e.contains("002.bmp") && e.contains("PNG"), "{e}");
    // A folder with no classes says what it expected.
    let t3 = TempDir::new("mvtec-none");
    let e = err_text(data::open(&format!("mvtec:{}", t3.0.display())));
    assert!(e.contains("no class folders"), "{e}");
}

// ---------------------------------------------------------------- visa

#[test]
fn visa_raw_release_csv() {
    let t = TempDir::new("visa-raw");
    let r = &t.0;
    let mut csv = String::from("object,split,label,image,mask\n");
    for i in 0..3 {
        let p = format!("candle/Data/Images/Normal/{i:04}.JPG");
        jpeg(&r.join(&p), 16, 12);
        csv += &format!("candle,train,normal,{p},\n");
    }
    jpeg(&r.join("candle/Data/Images/Normal/0003.JPG"), 16, 12);
    csv += "candle,test,normal,candle/Data/Images/Normal/0003.JPG,\n";
    for i in 0..2 {
        let p = format!("candle/Data/Images/Anomaly/{i:03}.JPG");
        let m = format!("candle/Data/Masks/Anomaly/{i:03}.png");
        jpeg(&r.join(&p), 16, 12);
        mask(&r.join(&m));
        csv += &format!("candle,test,anomaly,{p},{m}\n");
    }
    for i in 0..2 {
        let p = format!("capsules/Data/Images/Normal/{i:04}.JPG");
        jpeg(&r.join(&p), 16, 12);
        csv += &format!("capsules,train,normal,{p},\n");
    }
    jpeg(&r.join("capsules/Data/Images/Anomaly/000.JPG"), 16, 12);
    mask(&r.join("capsules/Data/Masks/Anomaly/000.png"));
    csv += "capsules,test,anomaly,capsules/Data/Images/Anomaly/000.JPG,capsules/Data/Masks/Anomaly/000.png\n";
    write(&r.join("split_csv/1cls.csv"), csv.as_bytes());

    let ds = data::open(&format!("visa:{}", r.display())).unwrap();
    assert_eq!(ds.class_names, ["candle", "capsules"]);
    assert_eq!(ds.train.len(), 5);
    assert_eq!(ds.test.len(), 4);
    assert_eq!(count(&ds.test, |s| s.anomalous), 3);
    assert!(ds.has_masks);
    assert!(ds.test.iter().all(|s| s.anomalous == s.mask.is_some()));
    assert!(
        ds.test
            .iter()
            .all(|s| s.defect == if s.anomalous { "bad" } else { "good" })
    );
    assert_eq!(count(&ds.train, |s| s.class == 1), 2);
    assert_eq!(ds.test[0].id, "candle/Data/Images/Normal/0003.JPG");
    let img = ds.test[0].load_image().unwrap();
    assert_eq!((img.width(), img.height()), (16, 12));
    let bad = ds.test.iter().find(|s| s.anomalous).unwrap();
    assert_eq!(
        bad.load_mask(16, 16).unwrap().unwrap().get_pixel(0, 0).0[0],
        255
    );

    // A malformed line: the error names the file and the line.
    let broken = csv.replacen(
        "candle,train,normal,candle/Data/Images/Normal/0001.JPG,",
        "candle,train,candle/Data/Images/Normal/0001.JPG,",
        1,
    );
    write(&r.join("split_csv/1cls.csv"), broken.as_bytes());
    let e = err_text(data::open(&format!("visa:{}", r.display())));
    assert!(e.contains("1cls.csv:3"), "{e}");
    // A listed mask that is missing.
    std::fs::remove_file(r.join("capsules/Data/Masks/Anomaly/000.png")).unwrap();
    write(&r.join("split_csv/1cls.csv"), csv.as_bytes());
    let e = err_text(data::open(&format!("visa:{}", r.display())));
    assert!(
        e.contains("1cls.csv:10") && e.contains("Masks/Anomaly/000.png"),
        "{e}"
    );
}

#[test]
fn visa_converted_tree() {
    let t = TempDir::new("visa-tree");
    let r = &t.0;
    for c in ["pcb1", "macaroni1"] {
        png(&r.join(format!("{c}/train/good/000.png")), 8, 8, 5);
        png(&r.join(format!("{c}/train/good/001.png")), 8, 8, 5);
        png(&r.join(format!("{c}/test/good/000.png")), 8, 8, 5);
        png(&r.join(format!("{c}/test/bad/000.png")), 8, 8, 5);
        png(&r.join(format!("{c}/test/bad/001.png")), 8, 8, 5);
    }
    // Both mask spellings are accepted.
    for c in ["pcb1", "macaroni1"] {
        mask(&r.join(format!("{c}/ground_truth/bad/000.png")));
        mask(&r.join(format!("{c}/ground_truth/bad/001_mask.png")));
    }
    let ds = data::open(&format!("visa:{}", r.display())).unwrap();
    assert_eq!(ds.name, "visa");
    assert_eq!(ds.class_names, ["macaroni1", "pcb1"]);
    assert_eq!((ds.train.len(), ds.test.len()), (4, 6));
    assert!(ds.has_masks);
    assert!(ds.test.iter().all(|s| s.anomalous == s.mask.is_some()));
    std::fs::remove_file(r.join("pcb1/ground_truth/bad/001_mask.png")).unwrap();
    let e = err_text(data::open(&format!("visa:{}", r.display())));
    assert!(e.contains("pcb1/ground_truth/bad/001_mask.png"), "{e}");
}

// ---------------------------------------------------------------- folder

#[test]
fn folder_single_part_with_optional_masks() {
    let t = TempDir::new("folder");
    let r = t.0.join("my_part");
    png(&r.join("train/good/a.png"), 8, 8, 1);
    png(&r.join("train/good/b.png"), 8, 8, 1);
    png(&r.join("test/good/c.png"), 8, 8, 1);
    png(&r.join("test/scratch/d.png"), 8, 8, 1);
    png(&r.join("test/scratch/e.png"), 8, 8, 1);
    mask(&r.join("ground_truth/scratch/d_mask.png"));
    let ds = data::open(&format!("folder:{}", r.display())).unwrap();
    assert_eq!(ds.class_names, ["my_part"]);
    assert_eq!(ds.name, "my_part");
    assert_eq!((ds.train.len(), ds.test.len()), (2, 3));
    assert_eq!(count(&ds.test, |s| s.anomalous && s.defect == "scratch"), 2);
    assert!(!ds.has_masks, "one defective image lacks a mask");
    assert_eq!(count(&ds.test, |s| s.mask.is_some()), 1);
    assert_eq!(ds.test[0].id, "test/good/c.png");
    mask(&r.join("ground_truth/scratch/e.png"));
    let ds = data::open(&format!("folder:{}", r.display())).unwrap();
    assert!(ds.has_masks);
    // Training-only folders are fine; an empty train/good is not.
    std::fs::remove_dir_all(r.join("test")).unwrap();
    assert!(
        data::open(&format!("folder:{}", r.display()))
            .unwrap()
            .test
            .is_empty()
    );
    std::fs::remove_dir_all(r.join("train/good")).unwrap();
    std::fs::create_dir_all(r.join("train/good")).unwrap();
    let e = err_text(data::open(&format!("folder:{}", r.display())));
    assert!(
        e.contains(&r.join("train/good").display().to_string()),
        "{e}"
    );
}

// ---------------------------------------------------------------- cifar10

const CIFAR_RECORD: usize = 3073;

/// A batch of `n` records; record r has label r % 10 and pixel (x=1, y=2) = (label, tag, 200),
/// tag = `tag0 + r`, every other pixel 0. Stored planar, as the release does.
fn cifar_batch(n: usize, tag0: u8) -> Vec<u8> {
    let mut out = vec![0u8; n * CIFAR_RECORD];
    for r in 0..n {
        let rec = &mut out[r * CIFAR_RECORD..(r + 1) * CIFAR_RECORD];
        let label = (r % 10) as u8;
        rec[0] = label;
        let p = 2 * 32 + 1;
        rec[1 + p] = label;
        rec[1 + 1024 + p] = tag0.wrapping_add(r as u8);
        rec[1 + 2048 + p] = 200;
    }
    out
}

fn cifar_tree(root: &Path) -> PathBuf {
    let dir = root.join("cifar-10-batches-bin");
    for b in 1..=5 {
        write(
            &dir.join(format!("data_batch_{b}.bin")),
            &cifar_batch(20, 0),
        );
    }
    write(&dir.join("test_batch.bin"), &cifar_batch(60, 0));
    write(&dir.join("batches.meta.txt"), b"airplane\nautomobile\n");
    dir
}

#[test]
fn cifar10_binary_release_protocol() {
    let t = TempDir::new("cifar");
    let dir = cifar_tree(&t.0);
    let ds = data::open(&format!("cifar10:{}", t.0.display())).unwrap();
    assert_eq!(
        ds.class_names,
        ["airplane", "automobile", "bird", "cat", "deer"]
    );
    assert_eq!(ds.score_kind, ScoreKind::Mean);
    assert!(!ds.has_masks);
    assert_eq!(ds.train.len(), 50); // 2 per class per batch × 5 classes × 5 batches
    assert!(ds.train.iter().all(|s| !s.anomalous && s.class < 5));
    assert_eq!(count(&ds.test, |s| !s.anomalous), 30);
    assert_eq!(count(&ds.test, |s| s.anomalous), 30);
    assert!(ds.test.iter().filter(|s| s.anomalous).all(|s| s.class == 0));
    assert!(ds.test.iter().any(|s| s.defect == "truck"));
    assert_eq!(ds.train[0].id, "data_batch_1.bin#00000");
    assert_eq!(ds.train[10].id, "data_batch_2.bin#00000");

    // Pixels: planar → interleaved RGB, 32×32.
    let s = ds
        .train
        .iter()
        .find(|s| s.id == "data_batch_1.bin#00013")
        .unwrap();
    assert_eq!(s.class, 3);
    let ImageSource::Pixels {
        width,
        height,
        channels,
        ..
    } = &s.source
    else {
        panic!("in-memory source expected")
    };
    assert_eq!((*width, *height, *channels), (32, 32, 3));
    let img = s.load_image().unwrap().to_rgb8();
    assert_eq!(img.get_pixel(1, 2).0, [3, 13, 200]);
    assert_eq!(img.get_pixel(2, 1).0, [0, 0, 0]);

    // The folder itself works as well as its parent, with the same result.
    let same = data::open(&format!("cifar10:{}", dir.display())).unwrap();
    assert_eq!(ids(&same.test), ids(&ds.test));

    // Class index = position of the label in the split.
    let ds = data::open(&format!("cifar10:{}?split=3,1", dir.display())).unwrap();
    assert_eq!(ds.class_names, ["cat", "automobile"]);
    let s = ds
        .train
        .iter()
        .find(|s| s.id == "data_batch_1.bin#00013")
        .unwrap();
    assert_eq!(s.class, 0);
    let s = ds
        .train
        .iter()
        .find(|s| s.id == "data_batch_1.bin#00011")
        .unwrap();
    assert_eq!(s.class, 1);
    assert_eq!(count(&ds.test, |s| s.anomalous), 12);
}

#[test]
fn cifar10_anomaly_draw_is_deterministic() {
    let t = TempDir::new("cifar-seed");
    cifar_tree(&t.0);
    let open = |seed: u64| {
        data::open(&format!(
            "cifar10:{}?split=0,1,2&seed={seed}",
            t.0.display()
        ))
        .unwrap()
    };
    let a = open(7);
    assert_eq!(count(&a.test, |s| !s.anomalous), 18);
    assert_eq!(count(&a.test, |s| s.anomalous), 18); // drawn from 42 candidates
    assert_eq!(ids(&a.test), ids(&open(7).test));
    assert_ne!(ids(&a.test), ids(&open(8).test));
    assert!(a.name.contains("seed 7"));
    // Test images are in file order, each at most once.
    let mut sorted = ids(&a.test);
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ids(&a.test));
    // The default seed is 0 and gives the same draw as seed=0.
    let d = data::open(&format!("cifar10:{}?split=0,1,2", t.0.display())).unwrap();
    assert_eq!(ids(&d.test), ids(&open(0).test));
}

#[test]
fn cifar10_errors() {
    let t = TempDir::new("cifar-bad");
    let dir = cifar_tree(&t.0);
    for split in ["0,0", "10", "0,1,2,3,4,5,6,7,8,9"] {
        let e = err_text(data::open(&format!(
            "cifar10:{}?split={split}",
            dir.display()
        )));
        assert!(e.contains("split"), "{split}: {e}");
    }
    let e = err_text(data::open(&format!(
        "cifar10:{}?classes=cat",
        dir.display()
    )));
    assert!(e.contains("split="), "{e}");
    let mut short = cifar_batch(20, 0);
    short.pop();
    write(&dir.join("data_batch_3.bin"), &short);
    let e = err_text(data::open(&format!("cifar10:{}", t.0.display())));
    assert!(
        e.contains(&dir.join("data_batch_3.bin").display().to_string()),
        "{e}"
    );
    std::fs::remove_file(dir.join("test_batch.bin")).unwrap();
    write(&dir.join("data_batch_3.bin"), &cifar_batch(20, 0));
    let e = err_text(data::open(&format!("cifar10:{}", t.0.display())));
    assert!(e.contains("test_batch.bin"), "{e}");
    let empty = TempDir::new("cifar-empty");
    let e = err_text(data::open(&format!("cifar10:{}", empty.0.display())));
    assert!(e.contains("data_batch_1.bin"), "{e}");
}

// ---------------------------------------------------------------- fashion-mnist

/// IDX bytes: magic 0x0000_08_ndims, big-endian dims, data.
fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `n` images of 4 rows × 3 columns; image i has label i % 10 and pixel (x=2, y=1) = i.
fn fashion_files(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut pixels = vec![0u8; n * 12];
    for i in 0..n {
        pixels[i * 12 + 3 + 2] = i as u8;
    }
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    (idx(&[n as u32, 4, 3], &pixels), idx(&[n as u32], &labels))
}

fn fashion_tree(root: &Path, gzipped: bool) {
    for (prefix, n) in [("train", 30), ("t10k", 20)] {
        let (images, labels) = fashion_files(n);
        let (images, labels, ext) = if gzipped {
            (gz(&images), gz(&labels), ".gz")
        } else {
            (images, labels, "")
        };
        write(
            &root.join(format!("{prefix}-images-idx3-ubyte{ext}")),
            &images,
        );
        write(
            &root.join(format!("{prefix}-labels-idx1-ubyte{ext}")),
            &labels,
        );
    }
}

#[test]
fn fashion_mnist_idx_gz_and_plain() {
    let t = TempDir::new("fashion");
    fashion_tree(&t.0, true);
    let ds = data::open(&format!("fashion-mnist:{}", t.0.display())).unwrap();
    assert_eq!(
        ds.class_names,
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
    );
    assert_eq!(ds.score_kind, ScoreKind::Mean);
    assert!(!ds.has_masks);
    assert_eq!(ds.train.len(), 15);
    assert_eq!(count(&ds.test, |s| !s.anomalous), 10);
    assert_eq!(count(&ds.test, |s| s.anomalous), 10);
    let s = ds.train.iter().find(|s| s.id == "train#00013").unwrap();
    assert_eq!(s.class, 3);
    let img = s.load_image().unwrap();
    assert!(
        matches!(img, image::DynamicImage::ImageLuma8(_)),
        "gray stays gray"
    );
    let g = img.to_luma8();
    assert_eq!((g.width(), g.height()), (3, 4));
    assert_eq!(g.get_pixel(2, 1).0[0], 13);
    assert_eq!(g.get_pixel(1, 2).0[0], 0);
    let a = ds.test.iter().find(|s| s.anomalous).unwrap();
    assert!(ds.class_names.len() == 5 && a.class == 0);

    // The uncompressed files give the same dataset.
    let plain = TempDir::new("fashion-plain");
    fashion_tree(&plain.0, false);
    let p = data::open(&format!("fashion-mnist:{}", plain.0.display())).unwrap();
    assert_eq!(ids(&p.train), ids(&ds.train));
    assert_eq!(ids(&p.test), ids(&ds.test));

    // Seeded draw: same seed same images, another seed others.
    let open = |seed: u64| {
        data::open(&format!(
            "fashion-mnist:{}?split=0,2,4&seed={seed}",
            t.0.display()
        ))
        .unwrap()
    };
    let a = open(1);
    assert_eq!(a.class_names, ["T-shirt/top", "Pullover", "Coat"]);
    assert_eq!(count(&a.test, |s| s.anomalous), 6);
    assert_eq!(ids(&a.test), ids(&open(1).test));
    assert_ne!(ids(&a.test), ids(&open(2).test));

    // The reduced protocol: the first training and normal test image of each class, as many anomalies
    // as normals, the first of the same seeded draw.
    let small = data::open(&format!(
        "fashion-mnist:{}?split=0,2,4&seed=1&limit=1",
        t.0.display()
    ))
    .unwrap();
    assert_eq!(count(&small.test, |s| !s.anomalous), 3);
    assert_eq!(count(&small.test, |s| s.anomalous), 3);
    let first_anomalies: Vec<String> = a
        .test
        .iter()
        .filter(|s| s.anomalous)
        .take(3)
        .map(|s| s.id.clone())
        .collect();
    let kept: Vec<String> = small
        .test
        .iter()
        .filter(|s| s.anomalous)
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(kept, first_anomalies);
    for class in 0..3 {
        assert_eq!(count(&small.train, |s| s.class == class), 1);
    }
    let err = err_text(data::open(&format!(
        "fashion-mnist:{}?limit=0",
        t.0.display()
    )));
    assert!(err.contains("limit=0"), "{err}");
}

#[test]
fn fashion_mnist_errors_name_the_file() {
    let t = TempDir::new("fashion-bad");
    fashion_tree(&t.0, true);
    // Truncated images: the gzip stream is whole but the IDX data is short.
    let (images, _) = fashion_files(30);
    let f = t.0.join("train-images-idx3-ubyte.gz");
    write(&f, &gz(&images[..images.len() - 5]));
    let e = err_text(data::open(&format!("fashion-mnist:{}", t.0.display())));
    assert!(
        e.contains(&f.display().to_string()) && e.contains("truncated"),
        "{e}"
    );
    // A cut gzip stream.
    let whole = gz(&images);
    write(&f, &whole[..whole.len() / 2]);
    let e = err_text(data::open(&format!("fashion-mnist:{}", t.0.display())));
    assert!(e.contains(&f.display().to_string()), "{e}");
    // Labels that do not match the images.
    write(&f, &gz(&images));
    let l = t.0.join("t10k-labels-idx1-ubyte.gz");
    write(&l, &gz(&idx(&[19], &[0; 19])));
    let e = err_text(data::open(&format!("fashion-mnist:{}", t.0.display())));
    assert!(e.contains(&l.display().to_string()), "{e}");
    // Not IDX at all.
    write(&l, b"hello");
    let e = err_text(data::open(&format!("fashion-mnist:{}", t.0.display())));
    assert!(
        e.contains(&l.display().to_string()) && e.contains("IDX"),
        "{e}"
    );
    // Missing file.
    std::fs::remove_file(&l).unwrap();
    let e = err_text(data::open(&format!("fashion-mnist:{}", t.0.display())));
    assert!(e.contains("t10k-labels-idx1-ubyte"), "{e}");
}

/// The Debian package `dataset-fashion-mnist` (installed by `scripts/setup.sh`). Fails, never
/// skips, when the files are absent.
#[test]
fn fashion_mnist_real_debian_files() {
    let dir = std::env::var("HVQ_FASHION_MNIST_DIR")
        .unwrap_or_else(|_| "/usr/share/datasets/fashion-mnist".into());
    assert!(
        Path::new(&dir).join("train-labels-idx1-ubyte.gz").is_file(),
        "{dir}: Fashion-MNIST not found (apt-get install dataset-fashion-mnist, or set HVQ_FASHION_MNIST_DIR)"
    );
    let a = data::open(&format!("fashion-mnist:{dir}")).unwrap();
    assert_eq!(a.train.len(), 30000);
    assert_eq!(count(&a.test, |s| !s.anomalous), 5000);
    assert_eq!(count(&a.test, |s| s.anomalous), 5000);
    let b = data::open(&format!("fashion-mnist:{dir}?split=5,6,7,8,9")).unwrap();
    assert_eq!(a.train.len() + b.train.len(), 60000);
    assert_eq!(
        count(&a.test, |s| !s.anomalous) + count(&b.test, |s| !s.anomalous),
        10000
    );
    assert_eq!(b.class_names[4], "Ankle boot");
    // The first training image of Fashion-MNIST is an ankle boot.
    let first = b.train.iter().find(|s| s.id == "train#00000").unwrap();
    assert_eq!(first.class, 4);
    let img = first.load_image().unwrap();
    assert_eq!((img.width(), img.height()), (28, 28));
    for split in ["0,2,4,6,8", "1,3,5,7,9"] {
        let d = data::open(&format!("fashion-mnist:{dir}?split={split}")).unwrap();
        assert_eq!(d.train.len(), 30000, "{split}");
        assert_eq!(count(&d.test, |s| s.anomalous), 5000, "{split}");
    }
}

// ---------------------------------------------------------------- elpv

#[test]
fn elpv_protocol_on_a_small_labels_csv() {
    let t = TempDir::new("elpv");
    let data_dir = t.0.join("elpv_dataset/data");
    // cell 1..12 mono prob 0, 13..14 mono prob 1, 15 mono 1/3, 16 mono 2/3,
    // 17..22 poly prob 0, 23 poly prob 1.
    let mut rows = Vec::new();
    for c in 1..=23 {
        let (prob, kind) = match c {
            1..=12 => ("0.0", "mono"),
            13 | 14 => ("1.0", "mono"),
            15 => ("0.3333333333333333", "mono"),
            16 => ("0.6666666666666666", "mono"),
            17..=22 => ("0.0", "poly"),
            _ => ("1.0", "poly"),
        };
        png(
            &data_dir.join(format!("images/cell{c:04}.png")),
            6,
            6,
            c as u8,
        );
        rows.push(format!("images/cell{c:04}.png  {prob:<20}{kind}"));
    }
    // Listed out of order: the protocol sorts by file name.
    rows.reverse();
    write(
        &data_dir.join("labels.csv"),
        (rows.join("\n") + "\n").as_bytes(),
    );

    for root in [t.0.clone(), data_dir.clone(), t.0.join("elpv_dataset")] {
        let ds = data::open(&format!("elpv:{}", root.display())).unwrap();
        assert_eq!(ds.class_names, ["mono", "poly"]);
        assert_eq!(ds.score_kind, ScoreKind::Max);
        assert!(!ds.has_masks);
        let test_normal = |class: usize| -> Vec<String> {
            ds.test
                .iter()
                .filter(|s| s.class == class && !s.anomalous)
                .map(|s| s.id.clone())
                .collect()
        };
        assert_eq!(
            test_normal(0),
            ["images/cell0005.png", "images/cell0010.png"]
        );
        assert_eq!(test_normal(1), ["images/cell0021.png"]);
        assert_eq!(count(&ds.train, |s| s.class == 0), 10);
        assert_eq!(count(&ds.train, |s| s.class == 1), 5);
        assert_eq!(count(&ds.test, |s| s.class == 0 && s.anomalous), 2);
        assert_eq!(count(&ds.test, |s| s.class == 1 && s.anomalous), 1);
        let all: Vec<&str> = ds
            .train
            .iter()
            .chain(&ds.test)
            .map(|s| s.id.as_str())
            .collect();
        assert!(!all.contains(&"images/cell0015.png") && !all.contains(&"images/cell0016.png"));
        assert!(
            ds.test
                .iter()
                .all(|s| s.anomalous == (s.defect == "defective"))
        );
    }
    let poly = data::open(&format!("elpv:{}?classes=poly", t.0.display())).unwrap();
    assert_eq!(poly.class_names, ["poly"]);
    assert_eq!((poly.train.len(), poly.test.len()), (5, 2));
    let img = poly.test[0].load_image().unwrap();
    assert_eq!(img.to_luma8().get_pixel(0, 0).0[0], 21);

    // A malformed line names the file and the line.
    let mut broken = rows.clone();
    broken[2] = "images/cell0021.png 0.0".into();
    write(&data_dir.join("labels.csv"), broken.join("\n").as_bytes());
    let e = err_text(data::open(&format!("elpv:{}", t.0.display())));
    assert!(e.contains("labels.csv:3"), "{e}");
    broken[2] = "images/cell0021.png 0.0 amorphous".into();
    write(&data_dir.join("labels.csv"), broken.join("\n").as_bytes());
    let e = err_text(data::open(&format!("elpv:{}", t.0.display())));
    assert!(e.contains("labels.csv:3") && e.contains("amorphous"), "{e}");
    let e = err_text(data::open(&format!(
        "elpv:{}",
        t.0.join("elpv_dataset/data/images").display()
    )));
    assert!(e.contains("labels.csv"), "{e}");
}

/// The real ELPV release. Fails (does not skip) when the data is absent, so a CI that forgot to
/// fetch it cannot pass silently: `scripts/setup.sh` puts it in ~/.cache/hvq/elpv, or point
/// HVQ_ELPV_DIR at the `elpv_dataset/data` folder.
#[test]
fn elpv_real_counts() {
    let dir = std::env::var("HVQ_ELPV_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/hvq/elpv/elpv_dataset/data",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    assert!(
        Path::new(&dir).join("labels.csv").is_file(),
        "ELPV data not found at {dir}: fetch it (see this test's doc comment) or set HVQ_ELPV_DIR"
    );
    let ds = data::open(&format!("elpv:{dir}")).unwrap();
    assert_eq!(ds.class_names, ["mono", "poly"]);
    // Positions 4, 9, …, 584 of the 588 mono prob-0 cells are test normals: 117 (not 118, which
    // ceil(588 / 5) would suggest); 920 poly cells give 184.
    let n = |class: usize, split: &[hvq::data::Sample], anomalous: bool| {
        count(split, |s| s.class == class && s.anomalous == anomalous)
    };
    assert_eq!(
        (
            n(0, &ds.train, false),
            n(0, &ds.test, false),
            n(0, &ds.test, true)
        ),
        (471, 117, 313)
    );
    assert_eq!(
        (
            n(1, &ds.train, false),
            n(1, &ds.test, false),
            n(1, &ds.test, true)
        ),
        (736, 184, 402)
    );
    let img = ds.test[0].load_image().unwrap();
    assert_eq!((img.width(), img.height()), (300, 300));
}
