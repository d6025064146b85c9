//! The whole model: frozen backbone + reconstruction network + what scoring needs. Loading and
//! saving use the official layout (backbone under `enc.`), plus `config.json` beside the weights.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::backbone::{EfficientNet, align_features};
use crate::config::ModelConfig;
use crate::error::{HvqError, Result};
use crate::map;
use crate::model::{HvqModel, HvqOutput};
use crate::weights::TensorMap;

/// File names inside a model directory.
pub const CONFIG_FILE: &str = "config.json";
/// Weights file inside a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Prefix of the backbone's tensors in the official layout (model files and checkpoints).
pub const BACKBONE_PREFIX: &str = "enc.";

/// How scores are turned into verdicts; saved with the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Image scores above this are anomalous.
    pub threshold: f32,
    /// How it was obtained (e.g. "99th percentile of 120 normal training images").
    pub source: String,
}

/// A model directory's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedModel {
    /// Architecture.
    pub model: ModelConfig,
    /// Decision threshold, if calibrated.
    #[serde(default)]
    pub calibration: Option<Calibration>,
}

impl SavedModel {
    /// Parse a `config.json`; `source` names it in errors.
    pub fn parse(json: &str, source: &str) -> Result<Self> {
        let saved: Self =
            serde_json::from_str(json).map_err(|e| HvqError::Config(format!("{source}: {e}")))?;
        // Sizes are checked here, before any module is allocated with them.
        saved.model.validate().map_err(|e| match e {
            HvqError::Config(m) => HvqError::Config(format!("{source}: {m}")),
            other => other,
        })?;
        Ok(saved)
    }
}

/// Scores for a batch.
#[derive(Clone, Debug)]
pub struct Scores {
    /// Anomaly map on the token grid `[B, 1, 14, 14]`.
    pub map14: Tensor<4>,
    /// Anomaly map at model input size `[B, 1, 224, 224]`.
    pub map: Tensor<4>,
    /// Image scores `[B]`.
    pub image: Tensor<1>,
}

/// Backbone + reconstruction network.
#[derive(Debug)]
pub struct Detector {
    /// Architecture.
    pub config: ModelConfig,
    /// Feature extractor (frozen).
    pub backbone: EfficientNet,
    /// Reconstruction network.
    pub hvq: HvqModel,
    /// Decision threshold.
    pub calibration: Option<Calibration>,
}

impl Detector {
    /// Random weights (for training from scratch; the backbone must then be loaded).
    pub fn new(config: ModelConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            backbone: EfficientNet::new(&config.backbone, false, device),
            hvq: HvqModel::new(&config.hvq, device)?,
            config,
            calibration: None,
        })
    }

    /// Build from a tensor map in the official layout: backbone under `enc.`, the rest top-level
    /// (an official checkpoint's `module.` prefix already removed by [`TensorMap::without_wrappers`]).
    pub fn from_tensors(config: ModelConfig, map: &TensorMap, device: &Device) -> Result<Self> {
        let backbone = map.sub(BACKBONE_PREFIX);
        let backbone = if backbone.is_empty()
            && config.backbone.kind == crate::config::BackboneKind::EfficientnetLite0
        {
            // A model file without backbone tensors uses the embedded Lite0 ImageNet weights.
            Self::embedded_lite0()?
        } else {
            backbone
        };
        Self::assemble(config, &backbone, map, device)
    }

    /// Random-initialised modules, then the backbone from `backbone` (native names) and the
    /// reconstruction network from `map` (official names).
    fn assemble(
        config: ModelConfig,
        backbone: &TensorMap,
        map: &TensorMap,
        device: &Device,
    ) -> Result<Self> {
        let mut d = Self::new(config, device)?;
        d.backbone = backbone.load_into(d.backbone)?;
        d.hvq = d.hvq.load_native(map)?;
        Ok(d)
    }

    #[cfg(feature = "embedded-weights")]
    fn embedded_lite0() -> Result<TensorMap> {
        crate::pretrained::lite0_tensors()
    }

    #[cfg(not(feature = "embedded-weights"))]
    fn embedded_lite0() -> Result<TensorMap> {
        Err(HvqError::Config(
            "the model file has no backbone tensors (enc.*) and this build embeds no Lite0 \
             weights: pass the backbone file too"
                .into(),
        ))
    }

    /// All weights in the official layout.
    pub fn to_tensors(&self) -> TensorMap {
        let mut map = self.hvq.to_native();
        map.extend_prefixed(
            BACKBONE_PREFIX,
            TensorMap::from_module(&self.backbone, "backbone"),
        );
        map
    }

    /// Load a model directory (`config.json` + `model.safetensors`).
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| HvqError::io(&cfg_path, e))?;
        let saved = SavedModel::parse(&text, &cfg_path.display().to_string())?;
        let map = TensorMap::read(dir.join(WEIGHTS_FILE))?;
        let mut d = Self::from_tensors(saved.model, &map, device)?;
        d.calibration = saved.calibration;
        Ok(d)
    }

    /// Load from in-memory config JSON and safetensors bytes (embedded models, the browser).
    pub fn from_bytes(
        config_json: &str,
        weights: &[u8],
        source: &str,
        device: &Device,
    ) -> Result<Self> {
        let saved = SavedModel::parse(config_json, source)?;
        let map = TensorMap::from_safetensors(weights, source)?;
        let mut d = Self::from_tensors(saved.model, &map, device)?;
        d.calibration = saved.calibration;
        Ok(d)
    }

    /// Load from in-memory config JSON, the reconstruction network's safetensors and, separately,
    /// the backbone's (native EfficientNet names, as `weights/efficientnet-lite0.safetensors`):
    /// what the web page downloads. Backbone tensors inside `weights` take precedence.
    pub fn from_parts(
        config_json: &str,
        weights: &[u8],
        weights_name: &str,
        backbone: &[u8],
        backbone_name: &str,
        device: &Device,
    ) -> Result<Self> {
        let saved = SavedModel::parse(config_json, &format!("{weights_name} config"))?;
        let map = TensorMap::from_safetensors(weights, weights_name)?;
        let inside = map.sub(BACKBONE_PREFIX);
        let backbone = if inside.is_empty() {
            TensorMap::from_safetensors(backbone, backbone_name)?
        } else {
            inside
        };
        let mut d = Self::assemble(saved.model, &backbone, &map, device)?;
        d.calibration = saved.calibration;
        Ok(d)
    }

    /// Write a model directory atomically (weights first, then the config that points at them).
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        let saved = SavedModel {
            model: self.config.clone(),
            calibration: self.calibration.clone(),
        };
        let json = serde_json::to_string_pretty(&saved).expect("config serialises");
        let mut meta = BTreeMap::new();
        meta.insert("hvq_config".to_string(), json.clone());
        self.to_tensors().save(dir.join(WEIGHTS_FILE), &meta)?;
        crate::weights::write_atomic(&dir.join(CONFIG_FILE), json.as_bytes())
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.backbone._conv_stem.weight.val().device()
    }

    /// Aligned backbone features `[B, F, 14, 14]` for normalised images `[B, 3, 224, 224]`.
    pub fn features(&self, images: Tensor<4>) -> Tensor<4> {
        align_features(
            self.backbone.taps(images),
            self.config.backbone.feature_size,
        )
    }

    /// Anomaly maps and scores from features (eval mode, OT on as configured).
    pub fn score(&self, feature: Tensor<4>, classes: &[usize]) -> Result<(HvqOutput, Scores)> {
        let out = self.hvq.forward_eval(feature.clone(), classes)?;
        let l2 = map::l2_map(out.rec.clone(), feature);
        let ot = (self.config.hvq.ot_weight != 0.0).then(|| self.hvq.ot(&out, classes));
        let map14 = map::total_map(l2, ot, self.config.hvq.ot_weight);
        let s = self.config.backbone.input_size;
        let map = map::upsample(map14.clone(), [s, s]);
        let image = map::image_score(map.clone(), s / self.config.hvq.feature_size);
        Ok((out, Scores { map14, map, image }))
    }
}
