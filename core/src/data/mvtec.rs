//! MVTec-AD tree: `<class>/train/good/*.png`, `<class>/test/<defect>/*.png`,
//! `<class>/ground_truth/<defect>/<stem>_mask.png`. The converted VisA tree and the `folder`
//! format share the per-class loader here.

use std::path::Path;

use super::{
    Dataset, ImageSource, Sample, ScoreKind, find_mask, list_dirs, list_images, rel_id,
    select_classes, stem,
};
use crate::error::{HvqError, Result};

/// What to do when an anomalous test image has no mask file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum MaskPolicy {
    /// An error naming the expected file, unless the class has no ground truth at all: a benchmark
    /// tree with one mask missing is broken, and the pixel metrics would silently be wrong.
    RequiredIfAny,
    /// Allowed: a user's own part may be labelled per image only, or only partly.
    Optional,
}

/// Open an MVTec-like tree of classes at `root`; `name` becomes [`Dataset::name`].
pub(super) fn open(root: &Path, classes: Option<&[String]>, name: &str) -> Result<Dataset> {
    let all: Vec<String> = list_dirs(root)?
        .into_iter()
        .filter(|(_, p)| p.join("train").is_dir() || p.join("test").is_dir())
        .map(|(n, _)| n)
        .collect();
    if all.is_empty() {
        let hint = if root.join("train").is_dir() {
            " (this looks like a single part: use folder:PATH)"
        } else {
            ""
        };
        return Err(HvqError::Dataset(format!(
            "{name} dataset {}: no class folders found (expected <class>/train/good/*.png){hint}",
            root.display()
        )));
    }
    let class_names = select_classes(all, classes, name, root)?;
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (index, class) in class_names.iter().enumerate() {
        let (tr, te) = load_class(
            &root.join(class),
            root,
            index,
            MaskPolicy::RequiredIfAny,
            true,
        )?;
        train.extend(tr);
        test.extend(te);
    }
    Ok(Dataset {
        name: name.to_string(),
        class_names,
        train,
        test,
        score_kind: ScoreKind::Max,
        has_masks: false, // set by `open_with` from the samples
    })
}

/// Load one class folder (`train/good`, `test/*`, `ground_truth/*`). Sample ids are paths
/// relative to `id_root`. Returns (train, test).
pub(super) fn load_class(
    class_dir: &Path,
    id_root: &Path,
    class: usize,
    policy: MaskPolicy,
    test_required: bool,
) -> Result<(Vec<Sample>, Vec<Sample>)> {
    let good = class_dir.join("train").join("good");
    if !good.is_dir() {
        return Err(HvqError::Dataset(format!(
            "{}: folder missing (the normal training images go there)",
            good.display()
        )));
    }
    let train: Vec<Sample> = list_images(&good)?
        .into_iter()
        .map(|p| Sample {
            id: rel_id(id_root, &p),
            source: ImageSource::File(p),
            class,
            anomalous: false,
            defect: "good".into(),
            mask: None,
        })
        .collect();
    if train.is_empty() {
        return Err(HvqError::Dataset(format!(
            "{}: no PNG or JPEG training images in this folder",
            good.display()
        )));
    }

    let test_dir = class_dir.join("test");
    if !test_dir.is_dir() {
        if test_required {
            return Err(HvqError::Dataset(format!(
                "{}: folder missing (expected test/good and test/<defect> folders)",
                test_dir.display()
            )));
        }
        return Ok((train, Vec::new()));
    }
    let defects = list_dirs(&test_dir)?;
    let gt = class_dir.join("ground_truth");
    // Masks are required only if this class has ground truth at all (MVTec-like trees without
    // masks are legitimate, e.g. image-level labels only).
    let any_gt = defects
        .iter()
        .any(|(d, _)| d != "good" && gt.join(d).is_dir());
    let mut test = Vec::new();
    for (defect, dir) in &defects {
        let anomalous = defect != "good";
        for p in list_images(dir)? {
            let mask = if anomalous {
                let mask_dir = gt.join(defect);
                let s = stem(&p);
                match find_mask(&mask_dir, &s) {
                    Some(m) => Some(m),
                    None if any_gt && policy == MaskPolicy::RequiredIfAny => {
                        return Err(HvqError::Dataset(format!(
                            "{}: ground-truth mask missing for test image {} \
                             (this class has masks, so every defective image needs one)",
                            mask_dir.join(format!("{s}_mask.png")).display(),
                            p.display()
                        )));
                    }
                    None => None,
                }
            } else {
                None
            };
            test.push(Sample {
                id: rel_id(id_root, &p),
                source: ImageSource::File(p),
                class,
                anomalous,
                defect: defect.clone(),
                mask,
            });
        }
    }
    if test.is_empty() && test_required {
        return Err(HvqError::Dataset(format!(
            "{}: no PNG or JPEG test images in its sub-folders",
            test_dir.display()
        )));
    }
    Ok((train, test))
}
