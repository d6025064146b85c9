//! CIFAR-10, binary release (`cifar-10-batches-bin`): `data_batch_1..5.bin` and `test_batch.bin`,
//! each a run of 3073-byte records: 1 label byte, then 1024 R, 1024 G and 1024 B bytes of a 32×32
//! image in row-major order. The path may be that folder or its parent.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::semantic::{self, Meta, Part};
use super::{Dataset, DatasetOptions};
use crate::error::{HvqError, Result};

/// The CIFAR-10 class names, by label.
pub(super) const NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;
const RECORD: usize = 1 + 3 * PLANE;
const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const TEST_FILE: &str = "test_batch.bin";

/// One batch file's records.
struct Batch {
    name: &'static str,
    bytes: Vec<u8>,
}

impl Batch {
    fn read(dir: &Path, name: &'static str) -> Result<Batch> {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| HvqError::io(&path, e))?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(HvqError::Dataset(format!(
                "{}: {} bytes is not a whole number of {RECORD}-byte CIFAR-10 records \
                 (truncated or not the binary release?)",
                path.display(),
                bytes.len()
            )));
        }
        let batch = Batch { name, bytes };
        if let Some(i) = (0..batch.len()).find(|&i| batch.label(i) > 9) {
            return Err(HvqError::Dataset(format!(
                "{}: record {i} has label {}, CIFAR-10 labels are 0..9",
                path.display(),
                batch.label(i)
            )));
        }
        Ok(batch)
    }

    fn len(&self) -> usize {
        self.bytes.len() / RECORD
    }

    fn label(&self, i: usize) -> u8 {
        self.bytes[i * RECORD]
    }

    /// Planar RGB → interleaved RGB, the layout of [`super::ImageSource::Pixels`].
    fn pixels(&self, i: usize) -> Arc<[u8]> {
        let rec = &self.bytes[i * RECORD + 1..(i + 1) * RECORD];
        let mut out = vec![0u8; 3 * PLANE];
        for p in 0..PLANE {
            for c in 0..3 {
                out[3 * p + c] = rec[c * PLANE + p];
            }
        }
        out.into()
    }
}

/// Batches seen as one array: (batch, record) of a global index.
fn locate(batches: &[Batch], mut i: usize) -> (&Batch, usize) {
    for b in batches {
        if i < b.len() {
            return (b, i);
        }
        i -= b.len();
    }
    // Only reached on an index past the end, which `semantic::build` never asks for.
    (
        &batches[batches.len() - 1],
        batches[batches.len() - 1].len() - 1,
    )
}

fn find_dir(root: &Path) -> Result<PathBuf> {
    for dir in [root.to_path_buf(), root.join("cifar-10-batches-bin")] {
        if dir.join(TRAIN_FILES[0]).is_file() {
            return Ok(dir);
        }
    }
    let hint = if root.join("cifar-10-batches-py").is_dir() || root.join("data_batch_1").is_file() {
        " (found the Python pickle release; the binary release cifar-10-binary.tar.gz is needed)"
    } else {
        ""
    };
    Err(HvqError::Dataset(format!(
        "cifar10 dataset {}: neither it nor its cifar-10-batches-bin folder holds {}{hint}",
        root.display(),
        TRAIN_FILES[0]
    )))
}

pub(super) fn open(root: &Path, opts: &DatasetOptions) -> Result<Dataset> {
    let split = semantic::check_split(opts, "cifar10", root)?;
    let dir = find_dir(root)?;
    let train = TRAIN_FILES
        .iter()
        .map(|n| Batch::read(&dir, n))
        .collect::<Result<Vec<_>>>()?;
    let test = [Batch::read(&dir, TEST_FILE)?];
    let labels = |bs: &[Batch]| -> Vec<u8> {
        bs.iter()
            .flat_map(|b| (0..b.len()).map(|i| b.label(i)))
            .collect()
    };
    let (train_labels, test_labels) = (labels(&train), labels(&test));
    let id = |bs: &[Batch], i: usize| {
        let (b, r) = locate(bs, i);
        format!("{}#{r:05}", b.name)
    };
    let pixels = |bs: &[Batch], i: usize| {
        let (b, r) = locate(bs, i);
        b.pixels(r)
    };
    semantic::build(
        &Meta {
            format: "cifar10",
            root,
            names: &NAMES,
            width: SIDE as u32,
            height: SIDE as u32,
            channels: 3,
        },
        &split,
        opts.seed,
        Part {
            labels: &train_labels,
            id: &|i| id(&train, i),
            pixels: &|i| pixels(&train, i),
        },
        Part {
            labels: &test_labels,
            id: &|i| id(&test, i),
            pixels: &|i| pixels(&test, i),
        },
    )
}
