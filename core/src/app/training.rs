//! A whole training run, as `hvq train` does it and any other front end would: the backbone,
//! the architecture from a preset and overrides, the trainer (new or resumed), the feature
//! cache, the JSON-lines log, and at the end the threshold calibrated on the training normals
//! and the model directory saved. Progress comes back through a callback.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::source::load_backbone;
use crate::backbone::{BackboneMode, BackboneTraining};
use crate::config::{BackboneKind, HvqConfig, ModelConfig};
use crate::data::{Dataset, ImageSource, Sample};
use crate::detector::Detector;
use crate::error::{HvqError, Result};
use crate::features::FeatureSet;
use crate::train::checkpoint::{self, CHECKPOINT_FILE, RunState};
use crate::train::{TrainConfig, TrainEvent, Trainer, TrainingData};

/// The feature cache's file name in a run's folder.
pub const FEATURE_CACHE_FILE: &str = "feature-cache.safetensors";
/// The training log's file name in a run's folder (one JSON line per epoch).
pub const TRAIN_LOG_FILE: &str = "train-log.jsonl";
/// Images per backbone batch when extracting features.
const FEATURE_BATCH: usize = 16;

/// Objective preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// The released code: label oracle, commitment 0.25, no POT loss, OT score × 80.
    Official,
    /// The paper: a classifier picks codebooks and expert, commitment β = 0.5, POT loss α = 0.01.
    Paper,
}

/// Changes to the preset's architecture and objective (all `None`/`false` = the preset).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// Encoder width C.
    pub embed_dim: Option<usize>,
    /// Codes per codebook.
    pub codes: Option<usize>,
    /// Feed-forward width.
    pub ffn_dim: Option<usize>,
    /// Side of the model input in pixels (a multiple of 16; the grid is a sixteenth of it).
    pub input_size: Option<usize>,
    /// POT loss weight α.
    pub pot_weight: Option<f32>,
    /// Transformer dropout while training.
    pub dropout: Option<f64>,
    /// Dead-code restart threshold of the codebooks (not in the paper; 0 = off).
    pub codebook_restart: Option<f32>,
    /// Ablation: a single VQ layer instead of the hierarchy.
    pub single_vq: bool,
    /// Ablation: one shared codebook per level.
    pub no_codebook_switching: bool,
    /// Ablation: one shared expert.
    pub no_expert_switching: bool,
}

/// Everything a training run is asked to do.
#[derive(Clone, Debug)]
pub struct TrainRequest {
    /// Dataset as `FORMAT:PATH`.
    pub data: String,
    /// The run's folder: model, checkpoint, feature cache and log.
    pub out: PathBuf,
    /// Feature extractor.
    pub backbone: BackboneKind,
    /// Its weights file (required for B4).
    pub backbone_weights: Option<PathBuf>,
    /// Backbone mode while training (`None`: eval, or the resumed run's).
    pub backbone_mode: Option<BackboneMode>,
    /// Objective preset.
    pub preset: Preset,
    /// Changes to it.
    pub overrides: Overrides,
    /// Epochs, learning rate, batch size, checkpoint interval, seed (ignored on resume: the
    /// checkpoint's schedule continues, with [`Resume::epochs`] as its length).
    pub train: TrainConfig,
    /// Continue the run in `out` from its checkpoint (`None`: a new run).
    pub resume: Option<Resume>,
    /// Train on tiles of the training images, and inspect tiled (stored with the model and the
    /// checkpoint; on resume `None` is the checkpoint's).
    pub tiling: Option<crate::tiling::Tiling>,
    /// Stop after this many epochs of this call (the run can be resumed later).
    pub stop_after: Option<usize>,
    /// Test hook: make the loss of this optimiser step (1-based, over the run) NaN.
    pub inject_nan_at_step: Option<u64>,
    /// Data-parallel training: devices for replicas besides the one `train` is given (each
    /// step's batch is split across all of them; see `train::data_parallel`). Empty: one device.
    pub replica_devices: Vec<Device>,
}

/// How a resumed run treats the request: the checkpoint holds the run's model, schedule,
/// backbone mode and tiling, so `--resume --out DIR --data D` is all a caller must give.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// The request's model settings (backbone, preset, overrides) were chosen by the caller
    /// rather than left at defaults: they must then describe the checkpoint's model, and a
    /// difference is refused rather than silently ignored. When `false` they are not read.
    pub check_model: bool,
    /// The run's new length in epochs, extending (or shortening) it; `None`: the checkpoint's.
    /// The learning-rate steps stay at the epochs the run started with.
    pub epochs: Option<usize>,
}

/// What a run reports while it works.
#[derive(Debug)]
pub enum TrainProgress<'a> {
    /// Resuming after this many epochs.
    Resumed {
        /// Epochs already done.
        epochs_done: usize,
    },
    /// Backbone features being extracted (`purpose`: "features" or "calibration features").
    Features {
        /// What they are for.
        purpose: &'static str,
        /// Images done.
        done: usize,
        /// Images in all.
        total: usize,
    },
    /// The training data is ready.
    DataReady {
        /// Training images.
        images: usize,
        /// Feature shape per image, when features are cached (eval-mode backbone).
        shape: Option<[usize; 3]>,
        /// Whether they came from the cache.
        from_cache: bool,
        /// Drop-connect rate of a train-mode backbone.
        drop_connect: Option<f64>,
    },
    /// The optimiser steps are about to start (a front end starts its clock here: steps are
    /// reported in groups, so the first report may come with many steps at once).
    Training {
        /// Optimiser steps per epoch.
        steps_per_epoch: usize,
        /// Epochs left in this call.
        epochs_left: usize,
    },
    /// The trainer's own events (steps, epochs, checkpoints).
    Trainer {
        /// Optimiser steps per epoch.
        steps_per_epoch: usize,
        /// Epochs left in this call.
        epochs_left: usize,
        /// The event.
        event: &'a TrainEvent,
    },
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainOutcome {
    /// Stopped early (`stop_after`); continue with `resume`.
    Stopped {
        /// Epochs done.
        epochs_done: usize,
        /// Epochs planned.
        epochs: usize,
    },
    /// Finished: the model directory is saved in `out`.
    Saved {
        /// The model directory.
        dir: PathBuf,
        /// Its calibrated threshold.
        threshold: f32,
    },
}

/// The reconstruction network's configuration for a preset, overrides and backbone channels.
pub fn hvq_config(
    preset: Preset,
    overrides: &Overrides,
    channels: usize,
    classes: Vec<String>,
) -> Result<HvqConfig> {
    let mut hvq = match preset {
        Preset::Official => HvqConfig::official(channels, classes),
        Preset::Paper => HvqConfig::paper(channels, classes),
    };
    // The appendix's ablation switches (all on = HVQ-Trans).
    hvq.ablation.hierarchical = !overrides.single_vq;
    hvq.ablation.switch_codebooks = !overrides.no_codebook_switching;
    hvq.ablation.switch_experts = !overrides.no_expert_switching;
    if let Some(alpha) = overrides.pot_weight {
        hvq.pot_weight = alpha;
    }
    if let Some(p) = overrides.dropout {
        if !(0.0..1.0).contains(&p) {
            return Err(HvqError::Config(format!(
                "dropout {p}: a probability in [0, 1) is expected"
            )));
        }
        hvq.dropout = p;
    }
    if let Some(t) = overrides.codebook_restart {
        hvq.codebook_restart = t;
    }
    if let Some(c) = overrides.embed_dim {
        hvq.embed_dim = c;
    }
    if let Some(k) = overrides.codes {
        hvq.codes = k;
    }
    if let Some(f) = overrides.ffn_dim {
        hvq.ffn_dim = f;
    }
    Ok(hvq)
}

/// Run (or resume) the training `request` describes on `device`.
pub fn train(
    request: &TrainRequest,
    device: &Device,
    progress: &mut dyn FnMut(TrainProgress<'_>),
) -> Result<TrainOutcome> {
    let out = &request.out;
    let mut dataset = crate::data::open(&request.data)?;
    if dataset.train.is_empty() {
        return Err(HvqError::dataset(&request.data, "no training images"));
    }
    // Where the run stands, from the checkpoint's header: a resumed run's model and tiling are
    // the checkpoint's (the tensors are loaded with the trainer below).
    let resumed = match request.resume {
        Some(_) => Some(checkpoint::read_state(&out.join(CHECKPOINT_FILE))?),
        None => None,
    };
    let tiling = run_tiling(request, resumed.as_ref())?;
    // A tiled model learns normality from tiles; its threshold comes from the whole training
    // images (kept aside here), inspected tiled as the saved model will inspect.
    let whole_train = match &tiling {
        Some(tiling) => {
            tiling.validate()?;
            let tiles = tiles_of(&dataset.train, tiling)?;
            std::mem::replace(&mut dataset.train, tiles)
        }
        None => Vec::new(),
    };
    std::fs::create_dir_all(out).map_err(|e| HvqError::io(out, e))?;
    let (backbone, model_config) = match &resumed {
        Some(state) if !request.resume.is_some_and(|r| r.check_model) => {
            resumed_model(request, state, device)?
        }
        _ => requested_model(request, &dataset, device)?,
    };
    let mut detector = Detector::new(model_config.clone(), device)?;
    detector.backbone = backbone;

    let mut trainer = start_trainer(request, &model_config, tiling, &detector, device)?;
    trainer.add_replicas(&request.replica_devices)?;
    if request.resume.is_some() {
        progress(TrainProgress::Resumed {
            epochs_done: trainer.epochs_done,
        });
    }
    let features = training_features(
        &trainer,
        &detector,
        &dataset,
        out,
        device,
        &request.replica_devices,
        progress,
    )?;
    let data = match &features {
        Some(f) => TrainingData::Features(f),
        None => TrainingData::Images(&dataset.train),
    };

    let steps_per_epoch = dataset
        .train
        .len()
        .div_ceil(trainer.config.batch_size.max(1));
    let epochs_left = trainer.config.epochs.saturating_sub(trainer.epochs_done);
    let log_path = out.join(TRAIN_LOG_FILE);
    if request.resume.is_some() {
        trim_log(&log_path, trainer.epochs_done)?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| HvqError::io(&log_path, e))?;
    let mut log_error = None;
    if let Some(step) = request.inject_nan_at_step {
        trainer.inject_nan_at_step(step);
    }
    progress(TrainProgress::Training {
        steps_per_epoch,
        epochs_left,
    });
    trainer.run(data, request.stop_after, &mut |event| {
        if let TrainEvent::Epoch(report) = event {
            let line = serde_json::to_string(report).unwrap_or_default();
            if let Err(e) = writeln!(log, "{line}") {
                log_error.get_or_insert(e);
            }
        }
        progress(TrainProgress::Trainer {
            steps_per_epoch,
            epochs_left,
            event,
        });
    })?;
    if let Some(e) = log_error {
        return Err(HvqError::io(&log_path, e));
    }
    if trainer.epochs_done < trainer.config.epochs {
        return Ok(TrainOutcome::Stopped {
            epochs_done: trainer.epochs_done,
            epochs: trainer.config.epochs,
        });
    }
    let features = match features {
        Some(f) => f,
        None => {
            // The trained running statistics are part of the model; the threshold is calibrated
            // on features of the backbone as the saved model will run it (eval mode).
            detector.backbone = trainer
                .backbone()
                .ok_or_else(|| {
                    HvqError::training(out.display(), "a train-mode run lost its backbone")
                })?
                .clone();
            let total = dataset.train.len();
            crate::features::extract(
                &detector,
                &dataset.train,
                FEATURE_BATCH,
                device,
                &mut |done| {
                    progress(TrainProgress::Features {
                        purpose: "calibration features",
                        done,
                        total,
                    })
                },
            )?
        }
    };
    detector.tiling = tiling;
    let threshold = save_model(out, detector, &trainer, &features, &whole_train, device)?;
    Ok(TrainOutcome::Saved {
        dir: out.clone(),
        threshold,
    })
}

/// Keep the log's lines of the epochs a resumed run starts after: an epoch is logged before its
/// checkpoint is written, so a run killed between the two would log that epoch again, and a kill
/// can cut the last line short. Rewritten atomically; a run without a log has nothing to trim.
fn trim_log(path: &Path, epochs_done: usize) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(HvqError::io(path, e)),
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["epoch"].as_u64())
                .is_some_and(|epoch| (epoch as usize) < epochs_done)
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    if kept != text {
        crate::fs::write_atomic(path, kept.as_bytes())?;
    }
    Ok(())
}

/// Each sample cut into the tiles of `tiling` (an image no larger than a tile stays whole);
/// tiles keep the image's class and labels and are named `<id>#tile<x>,<y>`.
fn tiles_of(samples: &[Sample], tiling: &crate::tiling::Tiling) -> Result<Vec<Sample>> {
    let mut tiles = Vec::new();
    for sample in samples {
        let (w, h) = sample.image_size()?;
        if !tiling.applies_to(w, h) {
            tiles.push(sample.clone());
            continue;
        }
        for t in tiling.grid(w, h) {
            tiles.push(Sample {
                id: format!("{}#tile{},{}", sample.id, t.x, t.y),
                source: ImageSource::Crop {
                    source: Box::new(sample.source.clone()),
                    x: t.x,
                    y: t.y,
                    width: t.width,
                    height: t.height,
                },
                mask: None,
                ..sample.clone()
            });
        }
    }
    Ok(tiles)
}

/// The backbone and model configuration the request describes (a new run, or a resumed one
/// whose caller chose model settings, checked against the checkpoint in [`start_trainer`]).
fn requested_model(
    request: &TrainRequest,
    dataset: &Dataset,
    device: &Device,
) -> Result<(crate::backbone::Backbone, ModelConfig)> {
    let mut backbone = load_backbone(
        request.backbone,
        request.backbone_weights.as_deref(),
        device,
    )?;
    if let Some(size) = request.overrides.input_size {
        backbone = backbone.with_input_size(size)?;
    }
    let mut hvq = hvq_config(
        request.preset,
        &request.overrides,
        backbone.config().feature_channels(),
        dataset.class_names.clone(),
    )?;
    hvq.feature_size = backbone.config().feature_size;
    let model_config = ModelConfig {
        backbone: backbone.config().clone(),
        hvq,
    };
    Ok((backbone, model_config))
}

/// The checkpoint's backbone and model configuration, for a resume that names no model settings
/// (the backbone's weights are the embedded Lite0's or the request's file, as when it started).
fn resumed_model(
    request: &TrainRequest,
    state: &RunState,
    device: &Device,
) -> Result<(crate::backbone::Backbone, ModelConfig)> {
    let saved = &state.model.backbone;
    let mut backbone = load_backbone(saved.kind, request.backbone_weights.as_deref(), device)?;
    if backbone.config().input_size != saved.input_size {
        backbone = backbone.with_input_size(saved.input_size)?;
    }
    if backbone.config() != saved {
        return Err(HvqError::training(
            request.out.display(),
            format!(
                "the checkpoint's backbone ({:?} at {} pixels) is not one this build makes the \
                 same way; resume with the options the run was started with",
                saved.kind, saved.input_size
            ),
        ));
    }
    Ok((backbone, state.model.clone()))
}

/// The run's tiling: the request's for a new run; on resume the checkpoint's, which a request
/// naming another is refused for (a checkpoint from before tiling was saved records none, and
/// then the request's is taken, as it was then).
fn run_tiling(
    request: &TrainRequest,
    resumed: Option<&RunState>,
) -> Result<Option<crate::tiling::Tiling>> {
    let Some(state) = resumed else {
        return Ok(request.tiling);
    };
    match (state.train.tiling, request.tiling) {
        (Some(saved), Some(asked)) if saved != asked => Err(HvqError::training(
            request.out.display(),
            format!(
                "the run was started with --tile {} --overlap {}; resume it with the same, or \
                 without --tile",
                saved.tile, saved.overlap
            ),
        )),
        (Some(saved), _) => Ok(Some(saved)),
        (None, asked) => Ok(asked),
    }
}

/// A new trainer, or the run in `out` resumed (its settings checked against the request's).
fn start_trainer(
    request: &TrainRequest,
    model_config: &ModelConfig,
    tiling: Option<crate::tiling::Tiling>,
    detector: &Detector,
    device: &Device,
) -> Result<Trainer> {
    let out = &request.out;
    let live = Some(detector.backbone.clone());
    if let Some(resume) = request.resume {
        let mut t = Trainer::resume(out, &request.data, resume.epochs, device, live)?;
        if &t.model_config != model_config {
            return Err(HvqError::training(
                out.display(),
                "the checkpoint's model configuration differs from this command's; resume with \
                 the options the run was started with (--recipe/--backbone/--embed-dim/--codes/\
                 --ffn-dim/--input-size/...), or with none of them to continue the checkpoint's",
            ));
        }
        if let Some(mode) = request.backbone_mode
            && mode != t.config.backbone.mode
        {
            return Err(HvqError::training(
                out.display(),
                format!(
                    "the run was started with --backbone-mode {:?}; resume it with the same mode",
                    t.config.backbone.mode
                ),
            ));
        }
        // A checkpoint from before tiling was recorded: from now on it is.
        t.config.tiling = tiling;
        return Ok(t);
    }
    let mut config = request.train.clone();
    config.tiling = tiling;
    config.backbone = match request.backbone_mode {
        Some(BackboneMode::Train) => BackboneTraining::official_train_mode(),
        _ => BackboneTraining::default(),
    };
    Trainer::new(
        model_config.clone(),
        config,
        &request.data,
        out,
        device,
        live,
    )
}

/// Eval mode: features once per dataset (split across the run's devices), cached beside the
/// run. Train mode: none (the backbone's output changes with every batch's statistics and
/// drop-connect).
fn training_features(
    trainer: &Trainer,
    detector: &Detector,
    dataset: &Dataset,
    out: &Path,
    device: &Device,
    replica_devices: &[Device],
    progress: &mut dyn FnMut(TrainProgress<'_>),
) -> Result<Option<FeatureSet>> {
    let total = dataset.train.len();
    match trainer.config.backbone.mode {
        BackboneMode::Eval => {
            let devices: Vec<Device> = std::iter::once(device.clone())
                .chain(replica_devices.iter().cloned())
                .collect();
            let (features, from_cache) = crate::features::cached(
                &out.join(FEATURE_CACHE_FILE),
                detector,
                &dataset.train,
                FEATURE_BATCH,
                &devices,
                &mut |done| {
                    progress(TrainProgress::Features {
                        purpose: "features",
                        done,
                        total,
                    })
                },
            )?;
            progress(TrainProgress::DataReady {
                images: features.len(),
                shape: Some(features.shape),
                from_cache,
                drop_connect: None,
            });
            Ok(Some(features))
        }
        BackboneMode::Train => {
            progress(TrainProgress::DataReady {
                images: total,
                shape: None,
                from_cache: false,
                drop_connect: Some(trainer.config.backbone.drop_connect),
            });
            Ok(None)
        }
    }
}

/// Build the inference model, calibrate its threshold on the training normals (a tiled model:
/// the whole training images, inspected tiled), save it.
fn save_model(
    out: &Path,
    mut detector: Detector,
    trainer: &Trainer,
    features: &FeatureSet,
    whole_train: &[Sample],
    device: &Device,
) -> Result<f32> {
    // `whole_train`: the training images before tiling (empty for an untiled model).
    detector.hvq = detector.hvq.load_native(&trainer.network())?;
    let calibration = match detector.tiling {
        None => crate::threshold::calibrate(&detector, features, 0.99)?,
        Some(_) => {
            let inspector = super::Inspector::new(detector, device.clone());
            let mut scores = Vec::with_capacity(whole_train.len());
            for sample in whole_train {
                let img = sample.load_image()?;
                let class = super::ClassChoice::Index(sample.class);
                let r = inspector.inspect_at(&img, &class, super::MapResolution::Model)?;
                scores.push(r.score);
            }
            detector = inspector.detector;
            crate::threshold::from_scores(&scores, 0.99)?
        }
    };
    let threshold = calibration.threshold;
    detector.calibration = Some(calibration);
    detector.save_dir(out)?;
    Ok(threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run killed after logging epoch 2 but before its checkpoint resumes after epoch 2
    /// (epochs 0 and 1 done): the log keeps epochs 0 and 1 only, a line cut short goes too, and
    /// an untouched log is left byte for byte.
    #[test]
    fn a_resumed_log_keeps_the_epochs_the_checkpoint_holds() {
        let dir = std::env::temp_dir().join(format!("hvq-trim-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(TRAIN_LOG_FILE);
        let line = |e: usize| format!("{{\"epoch\":{e},\"loss\":{}.5}}\n", 10 - e);
        let full: String = (0..3).map(line).collect();
        std::fs::write(&path, format!("{full}{{\"epoch\":3,\"lo")).unwrap();
        trim_log(&path, 2).unwrap();
        let kept = std::fs::read_to_string(&path).unwrap();
        assert_eq!(kept, format!("{}{}", line(0), line(1)));
        trim_log(&path, 2).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), kept);
        trim_log(&dir.join("none.jsonl"), 2).unwrap();
        std::fs::remove_dir_all(dir).ok();
    }
}
