//! Datasets, named on the command line as `FORMAT:PATH[?options]`.
//!
//! | format          | layout                                                                          |
//! |-----------------|---------------------------------------------------------------------------------|
//! | `mvtec`         | `<class>/train/good`, `<class>/test/<defect>`, `<class>/ground_truth/<defect>/<stem>_mask.png` |
//! | `visa`          | the raw release (`split_csv/1cls.csv`) or the converted MVTec-like "1cls" tree    |
//! | `cifar10`       | `cifar-10-batches-bin` (binary release), UniAD 5-vs-5 semantic protocol         |
//! | `fashion-mnist` | IDX files, gzipped or not, same semantic protocol                               |
//! | `elpv`          | the `elpv-dataset` package's `labels.csv` + `images/`, the project protocol     |
//! | `folder`        | one part: `train/good`, `test/<good or defect>`, optional `ground_truth`        |
//!
//! Options follow a `?` and are separated by `&`: `classes=bottle,cable` (a subset, for the
//! multi-class formats), `split=0,2,4,6,8` (the normal classes of cifar10 / fashion-mnist, default
//! `0,1,2,3,4`), `seed=N` (anomaly sampling of the semantic formats, default 0) and `limit=N` (a
//! reduced protocol for quick experiments: at most N training and N normal test images per class,
//! and as many anomalous test images as normal ones are kept, the first in the dataset's order —
//! for the semantic formats, the first of the protocol's seeded draw). Example:
//! `fashion-mnist:/usr/share/datasets/fashion-mnist?split=0,2,4,6,8`.
//!
//! Opening a dataset reads only listings and labels; images are decoded by [`Sample::load_image`].
//! The protocols (which images are train, test, normal) are those of `docs/data-and-weights.md`.

mod cifar10;
mod elpv;
mod fashion_mnist;
mod folder;
mod gzip;
mod mvtec;
mod sample;
mod semantic;
pub mod synthetic;
mod visa;

use std::path::{Path, PathBuf};

use crate::error::{HvqError, Result};

pub use sample::{ImageSource, Sample};

/// The dataset formats [`open`] understands.
pub const FORMATS: &[&str] = &[
    "mvtec",
    "visa",
    "cifar10",
    "fashion-mnist",
    "elpv",
    "folder",
];

pub use crate::map::ScoreKind;

/// A dataset: classes, train and test samples, and how to score it.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Short human-readable name, e.g. `mvtec`, `fashion-mnist split 0,1,2,3,4` or the part's
    /// folder name for `folder`.
    pub name: String,
    /// Class names; [`Sample::class`] indexes this.
    pub class_names: Vec<String>,
    /// Training samples (all normal).
    pub train: Vec<Sample>,
    /// Test samples, normal and anomalous.
    pub test: Vec<Sample>,
    /// How to turn an anomaly map into an image score for this dataset.
    pub score_kind: ScoreKind,
    /// True when every anomalous test sample has a ground-truth mask (and there is at least one),
    /// so pixel-level metrics can be computed.
    pub has_masks: bool,
}

/// Options of a dataset spec (the part after `?`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatasetOptions {
    /// Use only these classes (by name). The selected classes keep their sorted order, so class
    /// indices do not depend on the order written here.
    pub classes: Option<Vec<String>>,
    /// Normal classes of the semantic datasets (cifar10, fashion-mnist), by label index 0..9.
    /// Default `[0, 1, 2, 3, 4]`.
    pub split: Option<Vec<usize>>,
    /// Seed of the anomalous-test-image draw of the semantic datasets. Default 0.
    pub seed: u64,
    /// Reduced protocol: at most this many training and normal test images per class, and no
    /// more anomalous test images than normal ones.
    pub limit: Option<usize>,
}

/// Open a dataset from a `FORMAT:PATH[?options]` spec, e.g. `mvtec:/data/mvtec?classes=bottle`.
pub fn open(spec: &str) -> Result<Dataset> {
    let (format, path, opts) = parse_spec(spec)?;
    open_with(&format, &path, &opts)
}

/// Split a `FORMAT:PATH[?options]` spec into its parts (the format is lower-cased).
pub fn parse_spec(spec: &str) -> Result<(String, PathBuf, DatasetOptions)> {
    let Some((format, rest)) = spec.split_once(':') else {
        return Err(HvqError::Dataset(format!(
            "dataset {spec:?}: expected FORMAT:PATH, with FORMAT one of {}",
            FORMATS.join(", ")
        )));
    };
    // A `?` belongs to the options only when what follows looks like options, so that a path
    // that happens to contain `?` still works.
    let (path, query) = match rest.rsplit_once('?') {
        Some((p, q)) if !q.is_empty() && q.split('&').all(|kv| kv.contains('=')) => (p, Some(q)),
        _ => (rest, None),
    };
    if path.is_empty() {
        return Err(HvqError::Dataset(format!(
            "dataset {spec:?}: the path after `{format}:` is empty"
        )));
    }
    let mut opts = DatasetOptions::default();
    for kv in query.into_iter().flat_map(|q| q.split('&')) {
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        let list = || {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        };
        match key.trim() {
            "classes" => opts.classes = Some(list()),
            "split" => {
                let parsed = list()
                    .iter()
                    .map(|s| s.parse::<usize>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| {
                        HvqError::Dataset(format!(
                            "dataset {spec:?}: split={value:?} is not a comma-separated list of class indices"
                        ))
                    })?;
                opts.split = Some(parsed);
            }
            "limit" => {
                let n: usize = value.trim().parse().map_err(|_| {
                    HvqError::Dataset(format!(
                        "dataset {spec:?}: limit={value:?} is not a positive integer"
                    ))
                })?;
                if n == 0 {
                    return Err(HvqError::Dataset(format!(
                        "dataset {spec:?}: limit=0 would leave no images"
                    )));
                }
                opts.limit = Some(n);
            }
            "seed" => {
                opts.seed = value.trim().parse().map_err(|_| {
                    HvqError::Dataset(format!(
                        "dataset {spec:?}: seed={value:?} is not a non-negative integer"
                    ))
                })?;
            }
            other => {
                return Err(HvqError::Dataset(format!(
                    "dataset {spec:?}: unknown option {other:?} (known: classes, split, seed, limit)"
                )));
            }
        }
    }
    Ok((
        format.trim().to_ascii_lowercase(),
        PathBuf::from(path),
        opts,
    ))
}

/// Open a dataset of a given format at `path`.
pub fn open_with(format: &str, path: &Path, opts: &DatasetOptions) -> Result<Dataset> {
    let format = match format.to_ascii_lowercase().as_str() {
        "mvtec" | "mvtec-ad" | "mvtec_ad" => "mvtec",
        "visa" => "visa",
        "cifar10" | "cifar-10" => "cifar10",
        "fashion-mnist" | "fashion_mnist" | "fashionmnist" => "fashion-mnist",
        "elpv" => "elpv",
        "folder" => "folder",
        other => {
            return Err(HvqError::Dataset(format!(
                "unknown dataset format {other:?}; known formats: {}",
                FORMATS.join(", ")
            )));
        }
    };
    if !path.exists() {
        return Err(HvqError::Dataset(format!(
            "{format} dataset: {} does not exist",
            path.display()
        )));
    }
    if !path.is_dir() {
        return Err(HvqError::Dataset(format!(
            "{format} dataset: {} is not a folder",
            path.display()
        )));
    }
    let semantic = matches!(format, "cifar10" | "fashion-mnist");
    if semantic && opts.classes.is_some() {
        return Err(HvqError::Dataset(format!(
            "{format} dataset {}: choose the normal classes with split=..., not classes=...",
            path.display()
        )));
    }
    if !semantic && opts.split.is_some() {
        return Err(HvqError::Dataset(format!(
            "{format} dataset {}: split=... applies to cifar10 and fashion-mnist only",
            path.display()
        )));
    }
    let classes = opts.classes.as_deref();
    let mut ds = match format {
        "mvtec" => mvtec::open(path, classes, "mvtec")?,
        "visa" => visa::open(path, classes)?,
        "cifar10" => cifar10::open(path, opts)?,
        "fashion-mnist" => fashion_mnist::open(path, opts)?,
        "elpv" => elpv::open(path, classes)?,
        _ => folder::open(path, classes)?,
    };
    if let Some(n) = opts.limit {
        limit(&mut ds, n);
    }
    ds.has_masks = ds.test.iter().any(|s| s.anomalous)
        && ds
            .test
            .iter()
            .filter(|s| s.anomalous)
            .all(|s| s.mask.is_some());
    Ok(ds)
}

/// Keep the first `n` training and normal test images of each class, and as many anomalous test
/// images as normal ones (the first, in order): per class, so each class keeps both kinds and its
/// metrics stay defined; in total for the semantic datasets, whose anomalies belong to no class.
fn limit(ds: &mut Dataset, n: usize) {
    let classes = ds.class_names.len();
    let mut seen = vec![0usize; classes];
    ds.train.retain(|s| {
        seen[s.class] += 1;
        seen[s.class] <= n
    });
    let mut normal = vec![0usize; classes];
    ds.test.retain(|s| {
        if s.anomalous {
            return true;
        }
        normal[s.class] += 1;
        normal[s.class] <= n
    });
    let kept: Vec<usize> = normal.iter().map(|&c| c.min(n)).collect();
    let semantic = ds.score_kind == ScoreKind::Mean;
    let (budget, group): (Vec<usize>, fn(&Sample) -> usize) = if semantic {
        (vec![kept.iter().sum()], |_| 0)
    } else {
        (kept, |s| s.class)
    };
    let mut anomalous = vec![0usize; budget.len()];
    ds.test.retain(|s| {
        if !s.anomalous {
            return true;
        }
        let g = group(s);
        anomalous[g] += 1;
        anomalous[g] <= budget[g]
    });
}

/// Image file extensions we can decode (the `image` crate is built with PNG and JPEG only).
const IMAGE_EXTS: &[&str] = &["png", "jpg", "jpeg"];
/// Image extensions we recognise but cannot decode: refused when the dataset is opened rather
/// than hours into training.
const UNSUPPORTED_EXTS: &[&str] = &["bmp", "tif", "tiff", "webp", "gif"];

fn lower_ext(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
}

fn is_hidden(path: &Path) -> bool {
    // macOS copies leave `._name.png` resource forks next to every image; they are not images.
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| HvqError::io(dir, e))? {
        let entry = entry.map_err(|e| HvqError::io(dir, e))?;
        let p = entry.path();
        if !is_hidden(&p) {
            out.push(p);
        }
    }
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(out)
}

/// The image files in `dir`, sorted by file name.
fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in read_dir_sorted(dir)? {
        if !p.is_file() {
            continue;
        }
        match lower_ext(&p) {
            Some(e) if IMAGE_EXTS.contains(&e.as_str()) => out.push(p),
            Some(e) if UNSUPPORTED_EXTS.contains(&e.as_str()) => {
                return Err(HvqError::Image {
                    path: p.display().to_string(),
                    reason: "only PNG and JPEG images are supported; convert this folder first"
                        .into(),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The sub-folders of `dir` as (name, path), sorted by name.
fn list_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    Ok(read_dir_sorted(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some((name, p))
        })
        .collect())
}

/// File name without extension, for mask look-up.
fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Path relative to `root`, with `/` separators, for sample ids.
fn rel_id(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The mask of image `stem` in `dir`: `<stem>_mask.png` (MVTec) or `<stem>.png` (converted VisA).
fn find_mask(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}_mask.png"), format!("{stem}.png")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Restrict sorted `all` class names to `wanted` (keeping sorted order), or keep all.
fn select_classes(
    all: Vec<String>,
    wanted: Option<&[String]>,
    what: &str,
    root: &Path,
) -> Result<Vec<String>> {
    let Some(wanted) = wanted else {
        return Ok(all);
    };
    if wanted.is_empty() {
        return Err(HvqError::Dataset(format!(
            "{what} dataset {}: classes= names no class",
            root.display()
        )));
    }
    if let Some(missing) = wanted.iter().find(|w| !all.contains(w)) {
        return Err(HvqError::Dataset(format!(
            "{what} dataset {}: no class {missing:?}; classes present: {}",
            root.display(),
            all.join(", ")
        )));
    }
    Ok(all.into_iter().filter(|c| wanted.contains(c)).collect())
}
