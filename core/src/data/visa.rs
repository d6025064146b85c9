//! VisA, in either of its two common layouts:
//! - the raw release: `<root>/split_csv/1cls.csv` (header `object,split,label,image,mask`, paths
//!   relative to `<root>`), detected by that file's presence;
//! - the converted "1cls" tree, MVTec-like: `<class>/train/good`, `<class>/test/{good,bad}`,
//!   `<class>/ground_truth/bad/<stem>.png` (or `<stem>_mask.png`).

use std::collections::BTreeSet;
use std::path::Path;

use super::{Dataset, ImageSource, Sample, ScoreKind, select_classes};
use crate::error::{HvqError, Result};

pub(super) fn open(root: &Path, classes: Option<&[String]>) -> Result<Dataset> {
    let csv = root.join("split_csv").join("1cls.csv");
    if csv.is_file() {
        open_csv(root, &csv, classes)
    } else {
        super::mvtec::open(root, classes, "visa")
    }
}

/// One parsed row of `1cls.csv`.
struct Row {
    object: String,
    train: bool,
    anomalous: bool,
    image: String,
    mask: Option<String>,
}

fn open_csv(root: &Path, csv: &Path, classes: Option<&[String]>) -> Result<Dataset> {
    let text = std::fs::read_to_string(csv).map_err(|e| HvqError::io(csv, e))?;
    let err =
        |line: usize, msg: String| HvqError::Dataset(format!("{}:{line}: {msg}", csv.display()));
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty());
    let Some((header_line, header)) = lines.next() else {
        return Err(err(
            1,
            "empty file (expected header object,split,label,image,mask)".into(),
        ));
    };
    let header: Vec<String> = header
        .split(',')
        .map(|h| unquote(h).to_ascii_lowercase())
        .collect();
    let col = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| {
            err(
                header_line,
                format!("header lacks column {name:?} (expected object,split,label,image,mask)"),
            )
        })
    };
    let (c_obj, c_split, c_label, c_image, c_mask) = (
        col("object")?,
        col("split")?,
        col("label")?,
        col("image")?,
        col("mask")?,
    );

    let mut rows = Vec::new();
    for (n, line) in lines {
        let fields: Vec<&str> = line.split(',').map(unquote).collect();
        if fields.len() != header.len() {
            return Err(err(
                n,
                format!(
                    "expected {} comma-separated fields ({}), found {}",
                    header.len(),
                    header.join(","),
                    fields.len()
                ),
            ));
        }
        let train = match fields[c_split] {
            "train" => true,
            "test" => false,
            other => return Err(err(n, format!("split {other:?} is neither train nor test"))),
        };
        let anomalous = match fields[c_label] {
            "normal" => false,
            "anomaly" => true,
            other => {
                return Err(err(
                    n,
                    format!("label {other:?} is neither normal nor anomaly"),
                ));
            }
        };
        let (object, image) = (fields[c_obj], fields[c_image]);
        if object.is_empty() || image.is_empty() {
            return Err(err(n, "empty object or image field".into()));
        }
        if !root.join(image).is_file() {
            return Err(err(
                n,
                format!("image {} does not exist", root.join(image).display()),
            ));
        }
        let mask = match fields[c_mask] {
            "" => None,
            m => Some(m.to_string()),
        };
        if let Some(m) = &mask
            && !root.join(m).is_file()
        {
            return Err(err(
                n,
                format!("mask {} does not exist", root.join(m).display()),
            ));
        }
        if anomalous && !train && mask.is_none() {
            return Err(err(n, format!("anomalous test image {image} has no mask")));
        }
        rows.push(Row {
            object: object.to_string(),
            train,
            anomalous,
            image: image.to_string(),
            mask,
        });
    }

    let all: Vec<String> = rows
        .iter()
        .map(|r| r.object.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if all.is_empty() {
        return Err(err(header_line, "no data rows".into()));
    }
    let class_names = select_classes(all, classes, "visa", root)?;
    let mut train = Vec::new();
    let mut test = Vec::new();
    for row in rows {
        let Some(class) = class_names.iter().position(|c| *c == row.object) else {
            continue;
        };
        // The 1cls protocol trains on normal images only; should a row mark a training image
        // anomalous, it cannot be used for unsupervised training, so it is left out.
        if row.train && row.anomalous {
            continue;
        }
        let sample = Sample {
            id: row.image.clone(),
            source: ImageSource::File(root.join(&row.image)),
            class,
            anomalous: row.anomalous,
            defect: if row.anomalous { "bad" } else { "good" }.into(),
            mask: if row.anomalous {
                row.mask.map(|m| root.join(m))
            } else {
                None
            },
        };
        if row.train {
            train.push(sample);
        } else {
            test.push(sample);
        }
    }
    // Group by class (stable: file order within a class), like the tree layouts.
    train.sort_by_key(|s| s.class);
    test.sort_by_key(|s| s.class);
    for (i, c) in class_names.iter().enumerate() {
        if !train.iter().any(|s| s.class == i) {
            return Err(HvqError::Dataset(format!(
                "{}: no normal training images for class {c:?}",
                csv.display()
            )));
        }
    }
    Ok(Dataset {
        name: "visa".into(),
        class_names,
        train,
        test,
        score_kind: ScoreKind::Max,
        has_masks: false, // set by `open_with` from the samples
    })
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}
