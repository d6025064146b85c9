//! A user's own part: `<root>/train/good/*`, `<root>/test/<good or defect>/*`, optional masks
//! `<root>/ground_truth/<defect>/<stem>_mask.png` or `<stem>.png`. One class, named after the
//! root folder.

use std::path::Path;

use super::mvtec::{MaskPolicy, load_class};
use super::{Dataset, ScoreKind, select_classes};
use crate::error::{HvqError, Result};

pub(super) fn open(root: &Path, classes: Option<&[String]>) -> Result<Dataset> {
    // Canonicalise so that `folder:.` is named after the real folder, not ".".
    let canonical = root.canonicalize().map_err(|e| HvqError::io(root, e))?;
    let name = canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "part".to_string());
    let class_names = select_classes(vec![name.clone()], classes, "folder", root)?;
    // Masks are optional and the test folder too: a user may only want to train.
    let (train, test) = load_class(root, root, 0, MaskPolicy::Optional, false)?;
    Ok(Dataset {
        name,
        class_names,
        train,
        test,
        score_kind: ScoreKind::Max,
        has_masks: false, // set by `open_with` from the samples
    })
}
