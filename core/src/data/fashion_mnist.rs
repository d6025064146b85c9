//! Fashion-MNIST in the IDX format: `{train,t10k}-{images-idx3,labels-idx1}-ubyte`, gzipped
//! (`.gz`, as the Debian package `dataset-fashion-mnist` installs them in
//! `/usr/share/datasets/fashion-mnist`) or not. 28×28 gray images, labels 0..9.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::semantic::{self, Meta, Part};
use super::{Dataset, DatasetOptions};
use crate::error::{HvqError, Result};

/// The Fashion-MNIST class names, by label.
pub(super) const NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Refuse to inflate more than this: the real training images are 47 MB, so anything far
/// larger is a corrupt or hostile file, not Fashion-MNIST.
const MAX_INFLATED: u64 = 1 << 30;

/// An IDX array of unsigned bytes.
struct Idx {
    dims: Vec<usize>,
    data: Vec<u8>,
}

/// Find `<prefix>-<kind>-ubyte[.gz]` (also the `<prefix>-<images>.<idx3>-ubyte` spelling some
/// mirrors use).
fn find(root: &Path, prefix: &str, kind: &str) -> Result<PathBuf> {
    let dotted = kind.replacen('-', ".", 1);
    let candidates: Vec<PathBuf> = [kind, dotted.as_str()]
        .iter()
        .flat_map(|k| {
            let base = format!("{prefix}-{k}-ubyte");
            [root.join(format!("{base}.gz")), root.join(base)]
        })
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            HvqError::Dataset(format!(
                "fashion-mnist dataset {}: {} not found (gzipped or not)",
                root.display(),
                candidates[1].display()
            ))
        })
}

fn read_idx(path: &Path, ndims: usize) -> Result<Idx> {
    let raw = std::fs::read(path).map_err(|e| HvqError::io(path, e))?;
    // Judge by content, not name: some mirrors gunzip the files but keep the `.gz` name.
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        super::gzip::gunzip(&raw, path, MAX_INFLATED)?
    } else {
        raw
    };
    let bad =
        |why: String| HvqError::Dataset(format!("{}: not an IDX file: {why}", path.display()));
    if bytes.len() < 4 {
        return Err(bad(format!("only {} bytes", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] as usize != ndims {
        return Err(bad(format!(
            "magic {:02x}{:02x}{:02x}{:02x}, expected 000008{ndims:02x} (unsigned bytes, {ndims} dimensions)",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(bad("header truncated".into()));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|d| {
            let o = 4 + 4 * d;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    if bytes.len() - header != expected {
        return Err(bad(format!(
            "dimensions {dims:?} need {expected} data bytes, the file holds {} (truncated?)",
            bytes.len() - header
        )));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Read one split's images and labels and check they agree. Returns (images, labels, rows, cols).
fn read_split(root: &Path, prefix: &str) -> Result<(Idx, Vec<u8>, usize, usize)> {
    let images_path = find(root, prefix, "images-idx3")?;
    let labels_path = find(root, prefix, "labels-idx1")?;
    let images = read_idx(&images_path, 3)?;
    let labels = read_idx(&labels_path, 1)?.data;
    let (n, rows, cols) = (images.dims[0], images.dims[1], images.dims[2]);
    if rows == 0 || cols == 0 {
        return Err(HvqError::Dataset(format!(
            "{}: images of size {rows}x{cols}",
            images_path.display()
        )));
    }
    if labels.len() != n {
        return Err(HvqError::Dataset(format!(
            "{}: {} labels for the {n} images of {}",
            labels_path.display(),
            labels.len(),
            images_path.display()
        )));
    }
    if let Some(i) = labels.iter().position(|&l| l > 9) {
        return Err(HvqError::Dataset(format!(
            "{}: label {i} is {}, Fashion-MNIST labels are 0..9",
            labels_path.display(),
            labels[i]
        )));
    }
    Ok((images, labels, rows, cols))
}

pub(super) fn open(root: &Path, opts: &DatasetOptions) -> Result<Dataset> {
    let split = semantic::check_split(opts, "fashion-mnist", root)?;
    let (train, train_labels, rows, cols) = read_split(root, "train")?;
    let (test, test_labels, t_rows, t_cols) = read_split(root, "t10k")?;
    if (rows, cols) != (t_rows, t_cols) {
        return Err(HvqError::Dataset(format!(
            "fashion-mnist dataset {}: training images are {rows}x{cols}, test images {t_rows}x{t_cols}",
            root.display()
        )));
    }
    let size = rows * cols;
    let pixels = |idx: &Idx, i: usize| -> Arc<[u8]> { idx.data[i * size..(i + 1) * size].into() };
    semantic::build(
        &Meta {
            format: "fashion-mnist",
            root,
            names: &NAMES,
            width: cols as u32,
            height: rows as u32,
            channels: 1,
        },
        &split,
        opts.seed,
        Part {
            labels: &train_labels,
            id: &|i| format!("train#{i:05}"),
            pixels: &|i| pixels(&train, i),
        },
        Part {
            labels: &test_labels,
            id: &|i| format!("t10k#{i:05}"),
            pixels: &|i| pixels(&test, i),
        },
    )
}
