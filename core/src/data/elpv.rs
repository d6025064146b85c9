//! ELPV solar cells, as the PyPI package `elpv-dataset` ships them: `labels.csv`
//! (whitespace-separated `images/cellNNNN.png prob type`, type `mono` or `poly`) next to
//! `images/`. The path may be that `data` folder, the package folder, or anything holding
//! `elpv_dataset/data`.
//!
//! Project protocol (docs/data-and-weights.md; use exactly this so figures compare): two classes,
//! `mono` and `poly`. Within each type the prob-0 cells in file-name order: every 5th one
//! (positions 4, 9, 14, … from 0) is a test normal, the rest train. Test anomalies: all prob-1.0
//! cells of the type. The 0.333 and 0.667 cells are left out.

use std::path::{Path, PathBuf};

use super::{Dataset, ImageSource, Sample, ScoreKind, select_classes};
use crate::error::{HvqError, Result};

/// The cell types, which are the classes (sorted).
const TYPES: [&str; 2] = ["mono", "poly"];

/// Probabilities are written as decimals (0.3333333333333333); anything this close to 0 or 1 is.
const EPS: f64 = 1e-6;

fn find_root(root: &Path) -> Result<PathBuf> {
    let candidates = [
        root.to_path_buf(),
        root.join("data"),
        root.join("elpv_dataset").join("data"),
    ];
    candidates
        .iter()
        .find(|d| d.join("labels.csv").is_file())
        .cloned()
        .ok_or_else(|| {
            HvqError::Dataset(format!(
                "elpv dataset {}: no labels.csv in it, its data folder or elpv_dataset/data",
                root.display()
            ))
        })
}

pub(super) fn open(root: &Path, classes: Option<&[String]>) -> Result<Dataset> {
    let data = find_root(root)?;
    let csv = data.join("labels.csv");
    let text = std::fs::read_to_string(&csv).map_err(|e| HvqError::io(&csv, e))?;
    let err =
        |line: usize, msg: String| HvqError::Dataset(format!("{}:{line}: {msg}", csv.display()));

    // (type index, image path as written, probability class: 0 normal, 1 defective, None left out)
    let mut cells: Vec<(usize, String, Option<bool>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let [image, prob, kind] = fields[..] else {
            return Err(err(
                n,
                format!(
                    "expected `images/cellNNNN.png prob type`, found {} fields: {line:?}",
                    fields.len()
                ),
            ));
        };
        let prob: f64 = prob
            .parse()
            .ok()
            .filter(|p: &f64| (0.0..=1.0).contains(p))
            .ok_or_else(|| {
                err(
                    n,
                    format!("defect probability {prob:?} is not a number in 0..1"),
                )
            })?;
        let Some(t) = TYPES.iter().position(|t| *t == kind) else {
            return Err(err(
                n,
                format!("cell type {kind:?} is neither mono nor poly"),
            ));
        };
        if !data.join(image).is_file() {
            return Err(err(
                n,
                format!("image {} does not exist", data.join(image).display()),
            ));
        }
        let label = if prob < EPS {
            Some(false)
        } else if prob > 1.0 - EPS {
            Some(true)
        } else {
            None
        };
        cells.push((t, image.to_string(), label));
    }

    let present: Vec<String> = TYPES
        .iter()
        .enumerate()
        .filter(|(t, _)| cells.iter().any(|c| c.0 == *t))
        .map(|(_, n)| n.to_string())
        .collect();
    if present.is_empty() {
        return Err(err(1, "no cells listed".into()));
    }
    let class_names = select_classes(present, classes, "elpv", root)?;

    // File-name order, which the protocol's every-5th rule depends on.
    cells.sort_by(|a, b| a.1.cmp(&b.1));
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (class, name) in class_names.iter().enumerate() {
        let Some(t) = TYPES.iter().position(|t| t == name) else {
            continue;
        };
        let sample = |image: &str, anomalous: bool| Sample {
            id: image.to_string(),
            source: ImageSource::File(data.join(image)),
            class,
            anomalous,
            defect: if anomalous { "defective" } else { "good" }.into(),
            mask: None,
        };
        let of_type = || cells.iter().filter(|c| c.0 == t);
        for (pos, c) in of_type().filter(|c| c.2 == Some(false)).enumerate() {
            if pos % 5 == 4 {
                test.push(sample(&c.1, false));
            } else {
                train.push(sample(&c.1, false));
            }
        }
        if !train.iter().any(|s: &Sample| s.class == class) {
            return Err(HvqError::Dataset(format!(
                "{}: no defect-free (prob 0) {name} cells to train on",
                csv.display()
            )));
        }
        test.extend(
            of_type()
                .filter(|c| c.2 == Some(true))
                .map(|c| sample(&c.1, true)),
        );
    }
    Ok(Dataset {
        name: "elpv".into(),
        class_names,
        train,
        test,
        score_kind: ScoreKind::Max,
        has_masks: false,
    })
}
