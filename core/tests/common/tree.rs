//! A generated MVTec-format tree of two textured "parts" and the `hvq` binary that trains on it,
//! for the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{GrayImage, Luma, Rgb, RgbImage};

pub fn hvq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hvq"))
}

/// Run a command: its exit code (`None` when a signal ended it) and stdout + stderr.
pub fn output(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().expect("hvq runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Run a command that must succeed; its stdout + stderr.
pub fn run(cmd: &mut Command) -> String {
    let (code, text) = output(cmd);
    assert_eq!(code, Some(0), "{cmd:?} failed:\n{text}");
    text
}

pub fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hvq-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A textured part: stripes whose phase depends on the class, plus a little pseudo-noise.
pub fn part(class: usize, seed: u32) -> RgbImage {
    RgbImage::from_fn(64, 64, |x, y| {
        let stripe = if ((x + 3 * class as u32) / 4).is_multiple_of(2) {
            170
        } else {
            80
        };
        let noise = (x.wrapping_mul(73) ^ y.wrapping_mul(151) ^ seed.wrapping_mul(2654435761)) % 23;
        let v = (stripe + noise) as u8;
        Rgb([v, v.saturating_sub(20 * class as u8), v / 2 + 40])
    })
}

/// Paint a bright square (the "defect") and return its mask.
pub fn scratch(img: &mut RgbImage, at: u32) -> GrayImage {
    let mut mask = GrayImage::new(64, 64);
    for y in at..at + 12 {
        for x in at..at + 12 {
            img.put_pixel(x, y, Rgb([255, 255, 255]));
            mask.put_pixel(x, y, Luma([255]));
        }
    }
    mask
}

/// `<root>/{alpha,beta}/{train/good, test/good, test/scratch, ground_truth/scratch}`.
pub fn make_tree(root: &Path) {
    for (c, name) in ["alpha", "beta"].iter().enumerate() {
        let dirs = [
            "train/good",
            "test/good",
            "test/scratch",
            "ground_truth/scratch",
        ];
        for d in dirs {
            std::fs::create_dir_all(root.join(name).join(d)).unwrap();
        }
        for i in 0..8 {
            part(c, i)
                .save(root.join(name).join(format!("train/good/{i:03}.png")))
                .unwrap();
        }
        for i in 0..3 {
            part(c, 100 + i)
                .save(root.join(name).join(format!("test/good/{i:03}.png")))
                .unwrap();
            let mut bad = part(c, 200 + i);
            let mask = scratch(&mut bad, 10 + 12 * i);
            bad.save(root.join(name).join(format!("test/scratch/{i:03}.png")))
                .unwrap();
            mask.save(
                root.join(name)
                    .join(format!("ground_truth/scratch/{i:03}_mask.png")),
            )
            .unwrap();
        }
    }
}

/// Every metric `eval --json` must report per class and as the mean (the list).
pub const METRIC_KEYS: [&str; 6] = [
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "image_ap",
    "pixel_ap",
    "image_f1_max",
];

/// The `shape` of the `.npy` file at `path` as its header writes it, e.g. `(96, 96)`.
pub fn npy_shape(path: &Path) -> String {
    let npy = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&npy[..6], b"\x93NUMPY", "{}", path.display());
    // Version 1 header: its length at bytes 8-9, the dictionary from byte 10.
    let length = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let header = String::from_utf8_lossy(&npy[10..10 + length]);
    let start = header
        .find("'shape': ")
        .unwrap_or_else(|| panic!("{}: no shape in {header}", path.display()))
        + "'shape': ".len();
    let end = start + header[start..].find(')').expect("shape tuple closes") + 1;
    header[start..end].to_string()
}

/// A JSON file the CLI wrote (a model's `config.json`, eval's metrics).
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The metrics JSON `hvq eval --json` wrote to `path`, with every class's [`METRIC_KEYS`] checked
/// present and in [0, 1].
pub fn class_metrics(path: &Path, classes: &[&str]) -> serde_json::Value {
    let m = read_json(path);
    for class in classes {
        for key in METRIC_KEYS {
            let v = m["classes"][class][key]
                .as_f64()
                .unwrap_or_else(|| panic!("{class}.{key} in {m}"));
            assert!((0.0..=1.0).contains(&v), "{class}.{key} = {v}");
        }
    }
    m
}

pub const SMALL: [&str; 8] = [
    "--embed-dim",
    "16",
    "--ffn-dim",
    "32",
    "--codes",
    "8",
    "--batch",
    "4",
];

pub fn train(data: &str, out: &Path, epochs: usize) -> Command {
    let mut c = hvq();
    c.args(["train", "--data", data, "--out"]).arg(out);
    c.args(["--epochs", &epochs.to_string(), "--checkpoint-every", "1"])
        .args(SMALL);
    c
}
