//! A stored model's decision threshold from known-good images (`hvq calibrate`), as training
//! sets it at its end: the quantile of their scores. Only `config.json` is rewritten
//! (atomically); the weights file is left as it is.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::data::Dataset;
use crate::detector::{CONFIG_FILE, Calibration, Detector, SavedModel};
use crate::error::{HvqError, Result};
use crate::fs::write_atomic;

/// What a calibration changed.
#[derive(Clone, Debug)]
pub struct Recalibration {
    /// The new threshold and its origin.
    pub new: Calibration,
    /// The one it replaced.
    pub old: Option<Calibration>,
    /// The rewritten `config.json`.
    pub config_path: PathBuf,
}

/// Score `dataset`'s training images (all normal) with the model in `dir` and store the
/// `quantile` of their scores as its threshold. `progress(done, total)` after each batch.
pub fn calibrate_model_dir(
    dir: &Path,
    dataset: &Dataset,
    quantile: f64,
    batch: usize,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Recalibration> {
    if !(0.0..=1.0).contains(&quantile) {
        return Err(HvqError::Config(format!(
            "calibration quantile {quantile} is not in [0, 1]"
        )));
    }
    let mut detector = Detector::load_dir(dir, device)?;
    if dataset.class_names != detector.config.hvq.class_names {
        return Err(HvqError::dataset(
            &dataset.name,
            format!(
                "has classes {:?} but the model in {} has {:?}",
                dataset.class_names,
                dir.display(),
                detector.config.hvq.class_names
            ),
        ));
    }
    let total = dataset.train.len();
    let features = crate::features::extract(&detector, &dataset.train, batch, device, &mut |d| {
        progress(d, total)
    })?;
    let new = crate::threshold::calibrate(&detector, &features, quantile)?;
    let old = detector.calibration.replace(new.clone());
    let saved = SavedModel {
        model: detector.config.clone(),
        calibration: detector.calibration.clone(),
        tiling: detector.tiling,
    };
    let config_path = dir.join(CONFIG_FILE);
    let json = serde_json::to_string_pretty(&saved)
        .map_err(|e| HvqError::Config(format!("{}: {e}", config_path.display())))?;
    write_atomic(&config_path, json.as_bytes())?;
    Ok(Recalibration {
        new,
        old,
        config_path,
    })
}
