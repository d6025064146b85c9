//! Where a model comes from: the one shipped inside the binary, a model directory, or a training
//! run still in progress (its last checkpoint); and where a backbone's weights come from.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::backbone::Backbone;
use crate::config::{BackboneConfig, BackboneKind};
use crate::detector::embedded_lite0;
use crate::detector::{BACKBONE_PREFIX, CONFIG_FILE, Detector};
use crate::error::{HvqError, Result};
use crate::train::checkpoint::{self, CHECKPOINT_FILE};
use crate::weights::TensorMap;

/// Which model to load. Every front end offers the same choice: nothing given means the shipped
/// model, a folder means that model directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// The model embedded in the binary (`weights/elpv-lite0`): no file and no download.
    Shipped,
    /// A model directory (`config.json` + `model.safetensors`), or the output folder of a
    /// training run that has not finished: then its last checkpoint (Lite0 runs, whose
    /// checkpoints hold no backbone), uncalibrated.
    Dir(PathBuf),
}

impl ModelSource {
    /// The source a command line or a settings file names: a directory, or the shipped model.
    pub fn from_option(dir: Option<&Path>) -> Self {
        dir.map_or(ModelSource::Shipped, |d| ModelSource::Dir(d.to_path_buf()))
    }

    /// Its name for messages and the UI.
    pub fn describe(&self) -> String {
        match self {
            ModelSource::Shipped => "shipped model (elpv-lite0)".into(),
            ModelSource::Dir(d) => d.display().to_string(),
        }
    }

    /// Whether [`ModelSource::load`] would read a checkpoint of an unfinished run.
    pub fn is_checkpoint(&self) -> bool {
        matches!(self, ModelSource::Dir(d)
            if !d.join(CONFIG_FILE).exists() && d.join(CHECKPOINT_FILE).exists())
    }

    /// How far the unfinished run [`ModelSource::load`] would read has come: `(epochs done,
    /// epochs planned)`, `None` for a finished model or the shipped one.
    pub fn checkpoint_progress(&self) -> Result<Option<(usize, usize)>> {
        match self {
            ModelSource::Dir(dir) if self.is_checkpoint() => {
                let state = checkpoint::read_state(&dir.join(CHECKPOINT_FILE))?;
                Ok(Some((state.epochs_done, state.train.epochs)))
            }
            _ => Ok(None),
        }
    }

    /// Load the model on `device`.
    pub fn load(&self, device: &Device) -> Result<Detector> {
        match self {
            ModelSource::Shipped => shipped(device),
            ModelSource::Dir(dir) if self.is_checkpoint() => {
                let (network, _, state) = checkpoint::load(&dir.join(CHECKPOINT_FILE))?;
                Detector::from_tensors(state.model, &network, device)
            }
            ModelSource::Dir(dir) => Detector::load_dir(dir, device),
        }
    }
}

#[cfg(feature = "embedded-weights")]
fn shipped(device: &Device) -> Result<Detector> {
    Detector::from_bytes(
        crate::pretrained::DEFAULT_CONFIG,
        crate::pretrained::DEFAULT_WEIGHTS,
        "embedded default model (elpv-lite0)",
        device,
    )
}

#[cfg(not(feature = "embedded-weights"))]
fn shipped(_device: &Device) -> Result<Detector> {
    Err(HvqError::Config(
        "this build embeds no default model (feature `embedded-weights`): give a model directory"
            .into(),
    ))
}

/// The backbone with its weights: Lite0 from the embedded file unless a file is given; B4 needs
/// one (the lukemelas `.pth`, a safetensors conversion, or an official HVQ-Trans checkpoint,
/// whose backbone lives under `enc.`).
pub fn load_backbone(
    kind: BackboneKind,
    weights: Option<&Path>,
    device: &Device,
) -> Result<Backbone> {
    let config = match kind {
        BackboneKind::EfficientnetB4 => BackboneConfig::efficientnet_b4(),
        BackboneKind::EfficientnetLite0 => BackboneConfig::efficientnet_lite0(),
    };
    let map = match (weights, kind) {
        (Some(path), _) => {
            let map = TensorMap::read(path)?.without_wrappers();
            if map.names().any(|n| n.starts_with(BACKBONE_PREFIX)) {
                map.sub(BACKBONE_PREFIX)
            } else {
                map
            }
        }
        (None, BackboneKind::EfficientnetLite0) => embedded_lite0()?,
        (None, BackboneKind::EfficientnetB4) => {
            return Err(HvqError::Config(
                "EfficientNet-B4 needs backbone weights: the lukemelas efficientnet-b4-6ed6700e.pth \
                 or an official HVQ-Trans checkpoint (no B4 weights can be shipped or downloaded)"
                    .into(),
            ));
        }
    };
    map.load_into(Backbone::new(&config, device))
}
