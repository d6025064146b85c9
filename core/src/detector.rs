//! The whole model: frozen backbone + reconstruction network + what scoring needs. Loading and
//! saving use the official layout (backbone under `enc.`), plus `config.json` beside the weights.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::backbone::{Backbone, align_features};
use crate::class_choice::{self, BatchClasses, Resolved, first_minimum_rows, last_maximum_rows};
use crate::config::ModelConfig;
use crate::device::read_back_async;
use crate::error::{HvqError, Result};
use crate::map::{self, ScoreKind};
use crate::model::{Classes, HvqModel, HvqOutput, kept_ids};
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
    /// The median score of the normal images the threshold came from: where a typical normal
    /// image's worst region sits. Overlays fade colour in from here to the threshold
    /// (`overlay::color_scale`). Absent in models calibrated before it was stored, and when the
    /// threshold was given by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal_score: Option<f32>,
}

/// A model directory's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedModel {
    /// Architecture.
    pub model: ModelConfig,
    /// Decision threshold, if calibrated.
    #[serde(default)]
    pub calibration: Option<Calibration>,
    /// How high-resolution images are cut into tiles, if the model was trained on tiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiling: Option<crate::tiling::Tiling>,
}

impl SavedModel {
    /// Parse a `config.json`; `source` names it in errors.
    pub fn parse(json: &str, source: &str) -> Result<Self> {
        let saved: Self =
            serde_json::from_str(json).map_err(|e| HvqError::Config(format!("{source}: {e}")))?;
        // Sizes are checked here, before any module is allocated with them.
        let tiling = saved.tiling.as_ref().map_or(Ok(()), |t| t.validate());
        saved.model.validate().and(tiling).map_err(|e| match e {
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

/// A batch scored under the classes chosen for its images ([`Detector::score_choosing`]).
#[derive(Clone, Debug)]
pub struct Chosen {
    /// Class used, per image.
    pub classes: Vec<usize>,
    /// Image score under that class, per image.
    pub scores: Vec<f32>,
    /// Anomaly map at model input size under that class, `[B, 1, S, S]`.
    pub maps: Tensor<4>,
    /// The classifier's prediction per image, when it was asked (some class left to the model)
    /// and the model has one.
    pub predicted: Option<Vec<usize>>,
}

/// The embedded Lite0 ImageNet weights (native names), for model files and backbones that
/// name no other: the one place that knows whether this build carries them.
#[cfg(feature = "embedded-weights")]
pub(crate) fn embedded_lite0() -> Result<TensorMap> {
    crate::pretrained::lite0_tensors()
}

#[cfg(not(feature = "embedded-weights"))]
pub(crate) fn embedded_lite0() -> Result<TensorMap> {
    Err(HvqError::Config(
        "this build embeds no Lite0 backbone weights (built without the `embedded-weights` \
         feature): give the backbone weights file"
            .into(),
    ))
}

/// Backbone + reconstruction network. A clone shares the weights' device buffers (burn's
/// tensors are counted references), so it costs no device memory.
#[derive(Clone, Debug)]
pub struct Detector {
    /// Architecture.
    pub config: ModelConfig,
    /// Feature extractor (frozen).
    pub backbone: Backbone,
    /// Reconstruction network.
    pub hvq: HvqModel,
    /// Decision threshold.
    pub calibration: Option<Calibration>,
    /// Tiling of high-resolution images (see [`crate::tiling`]).
    pub tiling: Option<crate::tiling::Tiling>,
}

impl Detector {
    /// Random weights (for training from scratch; the backbone must then be loaded).
    pub fn new(config: ModelConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            backbone: Backbone::new(&config.backbone, device),
            hvq: HvqModel::new(&config.hvq, device)?,
            config,
            calibration: None,
            tiling: None,
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
            embedded_lite0()?
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
        d.tiling = saved.tiling;
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
        d.tiling = saved.tiling;
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
        d.tiling = saved.tiling;
        Ok(d)
    }

    /// Write a model directory atomically (weights first, then the config that points at them).
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        let saved = SavedModel {
            model: self.config.clone(),
            calibration: self.calibration.clone(),
            tiling: self.tiling,
        };
        let json = serde_json::to_string_pretty(&saved).expect("config serialises");
        let mut meta = BTreeMap::new();
        meta.insert("hvq_config".to_string(), json.clone());
        self.to_tensors().save(dir.join(WEIGHTS_FILE), &meta)?;
        crate::fs::write_atomic(&dir.join(CONFIG_FILE), json.as_bytes())
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.backbone.device()
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
        self.score_staged(feature, classes, &mut |_| {})
    }

    /// [`Detector::score`], calling `stage(name)` after each stage ("encoder", "vq", "decoder",
    /// "map + ot", "upsample + score"): `hvq bench` synchronises and times them there.
    pub fn score_staged(
        &self,
        feature: Tensor<4>,
        classes: &[usize],
        stage: &mut dyn FnMut(&'static str),
    ) -> Result<(HvqOutput, Scores)> {
        self.score_for_staged(feature, &Classes::Listed(classes.to_vec()), stage)
    }

    /// [`Detector::score_staged`] for classes listed or chosen on the device.
    pub fn score_for_staged(
        &self,
        feature: Tensor<4>,
        classes: &Classes,
        stage: &mut dyn FnMut(&'static str),
    ) -> Result<(HvqOutput, Scores)> {
        let out = self.hvq.forward_eval_for(feature.clone(), classes, stage)?;
        let ot = (self.config.hvq.ot_weight != 0.0).then(|| self.hvq.ot_for(&out, classes));
        let map14 = map::anomaly_map(out.rec.clone(), feature, ot, self.config.hvq.ot_weight);
        stage("map + ot");
        let s = self.config.backbone.input_size;
        let map = map::upsample(map14.clone(), [s, s]);
        let image = map::image_score(map.clone(), s / self.config.hvq.feature_size);
        stage("upsample + score");
        Ok((out, Scores { map14, map, image }))
    }

    /// The classifier's class per image (the paper's design), when the model has one.
    pub async fn predicted_classes(&self, feature: Tensor<4>) -> Result<Option<Vec<usize>>> {
        match self.hvq.classify(feature) {
            Some(logits) => {
                let n = logits.dims()[1];
                let values = read_back_async(logits).await?;
                Ok(Some(last_maximum_rows(&values, n)))
            }
            None => Ok(None),
        }
    }

    /// Score a batch of features under `choice`, every class decision made on the device:
    /// given classes as they are; left to the model, the classifier's prediction
    /// ([`class_choice::last_maximum`] of its logits) selects each image's codebooks and expert
    /// on the device, or without a classifier every class is scored and the lowest
    /// `kind` score kept ([`class_choice::first_minimum`]). Nothing is read back (a pass that
    /// ends here can be recorded, [`crate::replay`]); [`Resolved::read`] reads the classes and
    /// scores once.
    pub fn score_resolved(
        &self,
        feature: Tensor<4>,
        choice: &BatchClasses,
        kind: ScoreKind,
    ) -> Result<Resolved> {
        let kind_score = |s: &Scores| match kind {
            ScoreKind::Max => s.image.clone(),
            ScoreKind::Mean => map::mean_score(s.map.clone()),
        };
        let resolved = |scores: Scores, classes: Classes| Resolved {
            scores: kind_score(&scores),
            maps: scores.map,
            classes,
        };
        let b = feature.dims()[0];
        let n = self.config.hvq.num_classes;
        let given = match choice {
            BatchClasses::Given(classes) => classes.clone(),
            BatchClasses::ByModel if n == 1 => vec![0; b],
            BatchClasses::ByModel => {
                if let Some(logits) = self.hvq.classify(feature.clone()) {
                    let classes = Classes::OnDevice(Box::new(class_choice::last_maximum(logits)));
                    let (_, scores) = self.score_for_staged(feature, &classes, &mut |_| {})?;
                    return Ok(resolved(scores, classes));
                }
                // Every image under every class (image-major rows), the lowest score kept.
                let device = feature.device();
                let image_of: Vec<usize> = (0..b).flat_map(|i| std::iter::repeat_n(i, n)).collect();
                let classes: Vec<usize> = (0..b).flat_map(|_| 0..n).collect();
                let rows = feature.select(0, kept_ids(&image_of, &device));
                let (_, scores) = self.score(rows, &classes)?;
                let all = kind_score(&scores);
                let pick = class_choice::first_minimum(all.clone().reshape([b, n]));
                let starts: Vec<usize> = (0..b).map(|i| i * n).collect();
                let best = kept_ids(&starts, &device) + pick.clone();
                return Ok(Resolved {
                    maps: scores.map.select(0, best.clone()),
                    scores: all.select(0, best),
                    classes: Classes::OnDevice(Box::new(pick)),
                });
            }
        };
        let classes = Classes::Listed(given);
        let (_, scores) = self.score_for_staged(feature, &classes, &mut |_| {})?;
        Ok(resolved(scores, classes))
    }

    /// Score a batch of features, image `i` under class `fixed[i]` when given, otherwise under
    /// the class the model chooses: its classifier's prediction when it has one; else every
    /// class, keeping the lowest score (the best reconstruction; the first on ties). The one
    /// place where "auto" is resolved, for single images and for datasets alike. A batch whose
    /// classes are all given, or all left to the model, is resolved on the device
    /// ([`Detector::score_resolved`]: one read for the classes and scores); one mixing both,
    /// on the host, with the same choice ([`crate::class_choice`]).
    pub async fn score_choosing(
        &self,
        feature: Tensor<4>,
        fixed: &[Option<usize>],
        kind: ScoreKind,
    ) -> Result<Chosen> {
        let b = feature.dims()[0];
        if fixed.len() != b {
            return Err(HvqError::Config(format!(
                "{} class choices for a batch of {b} images",
                fixed.len()
            )));
        }
        let choice = if let Some(given) = fixed.iter().copied().collect::<Option<Vec<usize>>>() {
            Some(BatchClasses::Given(given))
        } else if fixed.iter().all(Option::is_none) {
            Some(BatchClasses::ByModel)
        } else {
            None
        };
        if let Some(choice) = choice {
            let resolved = self.score_resolved(feature, &choice, kind)?;
            let (classes, scores) = resolved.read().await?;
            let predicted = (choice == BatchClasses::ByModel && self.hvq.classifier.is_some())
                .then(|| classes.clone());
            return Ok(Chosen {
                classes,
                scores,
                maps: resolved.maps,
                predicted,
            });
        }
        // A batch mixing given classes with ones left to the model, on the host.
        let n_classes = self.config.hvq.num_classes;
        let predicted = self.predicted_classes(feature.clone()).await?;
        // Rows to score, image-major: one per image, or one per class for an image whose class
        // is left to the model when there is no classifier to ask.
        let (mut image_of, mut classes) = (Vec::new(), Vec::new());
        for (i, choice) in fixed.iter().enumerate() {
            let candidates = match (choice, &predicted) {
                (Some(c), _) => vec![*c],
                (None, Some(p)) => vec![p[i]],
                (None, None) => (0..n_classes).collect(),
            };
            for c in candidates {
                image_of.push(i);
                classes.push(c);
            }
        }
        let device = feature.device();
        let rows = |r: &[usize]| {
            let r: Vec<i64> = r.iter().map(|&i| i as i64).collect();
            let n = r.len();
            Tensor::<1, Int>::from_data(TensorData::new(r, [n]), &device)
        };
        let identity = |r: &[usize]| r.iter().enumerate().all(|(k, &i)| k == i) && r.len() == b;
        let feats = if identity(&image_of) {
            feature
        } else {
            feature.select(0, rows(&image_of))
        };
        let (_, s) = self.score(feats, &classes)?;
        let image = match kind {
            ScoreKind::Max => s.image,
            ScoreKind::Mean => map::mean_score(s.map.clone()),
        };
        let values = read_back_async(image).await?;
        let mut best = Vec::with_capacity(b);
        let mut start = 0;
        for i in 0..b {
            let n = image_of[start..].iter().take_while(|&&k| k == i).count();
            best.push(start + first_minimum_rows(&values[start..start + n], n)[0]);
            start += n;
        }
        // The maps need no gather when each image was scored once, in order (no extra rows).
        let maps = if identity(&best) && best.len() == classes.len() {
            s.map
        } else {
            s.map.select(0, rows(&best))
        };
        Ok(Chosen {
            classes: best.iter().map(|&r| classes[r]).collect(),
            scores: best.iter().map(|&r| values[r]).collect(),
            maps,
            predicted,
        })
    }
}
