//! The training loop on cached (or freshly computed) backbone features.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor};
use serde::Serialize;

use super::adamw::AdamW;
use super::checkpoint::{self, CHECKPOINT_FILE, RunState};
use super::data_parallel::{Replicas, accumulate};
use super::objective::objective;
use super::schedule::{TrainConfig, epoch_order};
use crate::backbone::{Backbone, BackboneMode, align_features};
use crate::config::ModelConfig;
use crate::data::Sample;
use crate::device::{read_back, shard_sizes};
// Train mode only: a checkpoint holds the backbone too (its running statistics move).
use crate::detector::BACKBONE_PREFIX;
use crate::error::{HvqError, Result};
use crate::features::{FeatureSet, input_batch};
use crate::model::{HvqModel, Shard};
use crate::weights::TensorMap;

/// What the network learns from.
#[derive(Clone, Copy, Debug)]
pub enum TrainingData<'a> {
    /// Features of an eval-mode backbone, computed once (the default).
    Features(&'a FeatureSet),
    /// Images, run through the train-mode backbone at every step (the official trainer).
    Images(&'a [Sample]),
}

impl TrainingData<'_> {
    fn len(&self) -> usize {
        match self {
            TrainingData::Features(f) => f.len(),
            TrainingData::Images(s) => s.len(),
        }
    }

    fn class(&self, i: usize) -> usize {
        match self {
            TrainingData::Features(f) => f.classes[i],
            TrainingData::Images(s) => s[i].class,
        }
    }
}

/// What the loop reports while it runs.
#[derive(Clone, Debug, Serialize)]
pub enum TrainEvent {
    /// After each optimisation step.
    Step {
        /// Epoch (0-based).
        epoch: usize,
        /// Step within the epoch (1-based).
        step: usize,
        /// Steps per epoch.
        steps: usize,
        /// Total loss of the batch.
        loss: f32,
    },
    /// After each epoch.
    Epoch(EpochReport),
    /// A checkpoint was written.
    Checkpoint {
        /// Epochs completed at that point.
        epochs_done: usize,
        /// The file.
        path: PathBuf,
    },
}

/// The backbone a run keeps: only a train-mode run has one, and it must.
fn live_backbone(config: &TrainConfig, backbone: Option<Backbone>) -> Result<Option<Backbone>> {
    match config.backbone.mode {
        BackboneMode::Eval => Ok(None),
        BackboneMode::Train => backbone.map(Some).ok_or_else(|| {
            HvqError::Training("a train-mode backbone run needs the backbone".into())
        }),
    }
}

/// Per-epoch means, one JSON line in the training log.
#[derive(Clone, Debug, Serialize)]
pub struct EpochReport {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean total loss.
    pub loss: f64,
    /// Mean feature (MSE) loss.
    pub feature_loss: f64,
    /// Mean commitment.
    pub latent_loss: f64,
    /// Mean pre-clip gradient norm.
    pub grad_norm: f64,
    /// Codes in use per VQ level at the end of the epoch (level 1 first, mean over the level's
    /// codebooks; `HvqModel::codes_in_use`): a collapsing codebook shows here.
    pub codes_in_use: Vec<f64>,
    /// Wall time of the epoch, seconds.
    pub seconds: f64,
}

/// A training run: the network on an autodiff device, its optimiser and schedule.
pub struct Trainer {
    /// The network being trained (on `device`, autodiff); `None` only while the optimiser holds it.
    model: Option<HvqModel>,
    optimizer: AdamW,
    /// Architecture (saved with the checkpoints).
    pub model_config: ModelConfig,
    /// Schedule.
    pub config: TrainConfig,
    /// Epochs completed.
    pub epochs_done: usize,
    dataset: String,
    /// The autodiff device the network trains on.
    device: Device,
    /// Train mode only: the frozen backbone (on the plain device), whose running statistics move.
    backbone: Option<Backbone>,
    out_dir: PathBuf,
    /// Data-parallel training: the replicas on further devices (none on one device).
    replicas: Replicas,
    /// Fault injection for tests: the loss of this optimiser step (1-based, counted over the
    /// run) is made NaN, as a diverging run's would be.
    inject_nan_at_step: Option<u64>,
}

/// What one optimiser step measured, left on the trainer's device (a read-back would make every
/// step wait for the device): `[total loss, feature loss, latent loss, gradient norm]`, the
/// losses as batch means.
struct StepLoss(Tensor<1>);

/// The longest the trainer queues steps without reading their losses back: each read waits for
/// the device, so a GPU reads about once a second; a CPU, whose steps take longer, every step.
const READ_INTERVAL: Duration = Duration::from_secs(1);
/// The most steps whose losses wait to be read (a bound on how late a diverged step is noticed).
const MAX_UNREAD_STEPS: usize = 64;

impl Trainer {
    /// A fresh run: the network is initialised from the CPU's generator seeded with
    /// `config.seed`, whatever the device. `backbone`
    /// is required when `config.backbone.mode` is train (it runs at every step and its running
    /// statistics are trained state), and ignored otherwise.
    pub fn new(
        model_config: ModelConfig,
        config: TrainConfig,
        dataset: &str,
        out_dir: &Path,
        device: &Device,
        backbone: Option<Backbone>,
    ) -> Result<Self> {
        let backbone = live_backbone(&config, backbone)?;
        let device = device.clone().autodiff();
        // The initial weights are drawn on the CPU and moved: every backend has its own
        // generator, and a seed must mean the same starting point on CPU, wgpu and CUDA (so a
        // run can be checked, or continued, on another device).
        let cpu = Device::flex();
        cpu.seed(config.seed);
        let initial = HvqModel::new(&model_config.hvq, &cpu)?;
        let model = TensorMap::from_module(&initial, "initial weights")
            .load_into(HvqModel::new(&model_config.hvq, &device)?)?;
        Ok(Self {
            model: Some(model),
            optimizer: AdamW::new(config.optimizer.clone()),
            model_config,
            config,
            epochs_done: 0,
            dataset: dataset.to_string(),
            device,
            backbone,
            out_dir: out_dir.to_path_buf(),
            replicas: Replicas::none(),
            inject_nan_at_step: None,
        })
    }

    /// Continue a run from `out_dir/checkpoint.safetensors`, exactly where it stopped. The
    /// checkpoint's configuration wins; `epochs` may extend the run.
    /// In train mode the backbone's running statistics come from the checkpoint too (`backbone`
    /// supplies the architecture and the frozen weights).
    pub fn resume(
        out_dir: &Path,
        dataset: &str,
        epochs: Option<usize>,
        device: &Device,
        backbone: Option<Backbone>,
    ) -> Result<Self> {
        let path = out_dir.join(CHECKPOINT_FILE);
        let (mut network, optim, state) = checkpoint::load(&path)?;
        let saved_backbone = network.sub(BACKBONE_PREFIX);
        network.retain(|name| !name.starts_with(BACKBONE_PREFIX));
        let backbone = match live_backbone(&state.train, backbone)? {
            Some(_) if saved_backbone.is_empty() => {
                return Err(HvqError::WeightsFormat {
                    path: path.clone(),
                    reason: "a train-mode backbone run, but the checkpoint holds no backbone \
                             statistics (enc.*)"
                        .into(),
                });
            }
            Some(net) => Some(saved_backbone.load_into(net)?),
            None => None,
        };
        if state.dataset != dataset {
            return Err(HvqError::Training(format!(
                "{}: the checkpoint was trained on {:?}, not {dataset:?}",
                path.display(),
                state.dataset
            )));
        }
        let device = device.clone().autodiff();
        let model = HvqModel::new(&state.model.hvq, &device)?.load_native(&network)?;
        let mut config = state.train.clone();
        if let Some(e) = epochs {
            config.epochs = e;
        }
        let mut optimizer = AdamW::new(config.optimizer.clone());
        optimizer.load_state(&optim, state.steps, &device);
        Ok(Self {
            model: Some(model),
            optimizer,
            model_config: state.model,
            config,
            epochs_done: state.epochs_done,
            dataset: dataset.to_string(),
            device,
            backbone,
            out_dir: out_dir.to_path_buf(),
            replicas: Replicas::none(),
            inject_nan_at_step: None,
        })
    }

    /// Test hook: make the loss of optimiser step `step` (1-based, over the whole run) NaN.
    #[doc(hidden)]
    pub fn inject_nan_at_step(&mut self, step: u64) {
        self.inject_nan_at_step = Some(step);
    }

    /// Write the checkpoint for the current position.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let path = self.out_dir.join(CHECKPOINT_FILE);
        let state = RunState {
            epochs_done: self.epochs_done,
            steps: self.optimizer.step,
            model: self.model_config.clone(),
            train: self.config.clone(),
            dataset: self.dataset.clone(),
        };
        let mut network = self.model().to_native();
        if let Some(backbone) = &self.backbone {
            network.extend_prefixed(
                BACKBONE_PREFIX,
                TensorMap::from_module(backbone, "backbone"),
            );
        }
        checkpoint::save(&path, &network, &self.optimizer.state(), &state)?;
        Ok(path)
    }

    /// Train until `config.epochs` (or `stop_after` more epochs, to emulate an interrupted run),
    /// checkpointing on schedule and at the end.
    pub fn run(
        &mut self,
        data: TrainingData<'_>,
        stop_after: Option<usize>,
        observer: &mut dyn FnMut(&TrainEvent),
    ) -> Result<()> {
        if data.len() == 0 {
            return Err(HvqError::Training("no training samples".into()));
        }
        match (data, self.config.backbone.mode) {
            (TrainingData::Features(f), BackboneMode::Eval) => {
                if f.shape[0] != self.model_config.hvq.feature_channels {
                    return Err(HvqError::Training(format!(
                        "features have {} channels, the network expects {}",
                        f.shape[0], self.model_config.hvq.feature_channels
                    )));
                }
            }
            (TrainingData::Images(_), BackboneMode::Train) => {}
            (_, mode) => {
                return Err(HvqError::Training(format!(
                    "a {mode:?}-mode backbone run needs {}",
                    match mode {
                        BackboneMode::Eval => "cached features",
                        BackboneMode::Train => "images",
                    }
                )));
            }
        }
        let end = match stop_after {
            Some(n) => (self.epochs_done + n).min(self.config.epochs),
            None => self.config.epochs,
        };
        while self.epochs_done < end {
            let epoch = self.epochs_done;
            let t0 = Instant::now();
            let lr = self.config.lr_at(epoch);
            // Dropout masks come from the device generator: seeding it per epoch makes an epoch's
            // masks independent of whether the run was resumed before it.
            let epoch_seed = self.config.seed.wrapping_add(1 + epoch as u64);
            self.device.seed(epoch_seed);
            // Each further device draws its own masks (replicas sharing a device share its
            // generator, whose draws then come in replica order).
            let mut seeded = vec![self.device.clone()];
            for r in 0..self.replicas.len() {
                let device = self.replicas.device(r);
                if !seeded.contains(device) {
                    device.seed(epoch_seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(r as u64 + 1)));
                    seeded.push(device.clone());
                }
            }
            // Drop-connect masks of a train-mode backbone come from the plain device's generator.
            self.device.clone().inner().seed(epoch_seed);
            let order = epoch_order(data.len(), self.config.seed, epoch);
            let batches: Vec<&[usize]> = order.chunks(self.config.batch_size.max(1)).collect();
            let (mut sum, mut feat, mut lat, mut norm) = (0.0, 0.0, 0.0, 0.0);
            // Steps run without waiting for their losses; those are read in groups (at most
            // READ_INTERVAL apart, and at the end of the epoch), then checked and reported step
            // by step as if read at once.
            let mut unread: Vec<Tensor<1>> = Vec::new();
            let mut last_read = Instant::now();
            for (i, idx) in batches.iter().enumerate() {
                unread.push(self.step(data, idx, lr)?.0);
                let last = i + 1 == batches.len();
                if !(last
                    || unread.len() >= MAX_UNREAD_STEPS
                    || last_read.elapsed() >= READ_INTERVAL)
                {
                    continue;
                }
                let first = i + 1 - unread.len();
                let values = read_back(Tensor::cat(std::mem::take(&mut unread), 0))?;
                last_read = Instant::now();
                for (j, step) in values.chunks_exact(4).enumerate() {
                    let [total, feature, latent, grad_norm] = [step[0], step[1], step[2], step[3]];
                    // A non-finite loss or gradient has already poisoned the weights in memory:
                    // stop before anything is written, so the last checkpoint stays the last good
                    // state.
                    if !total.is_finite() || !grad_norm.is_finite() {
                        return Err(HvqError::NonFiniteLoss {
                            epoch: epoch + 1,
                            step: first + j + 1,
                            loss: total,
                            grad_norm,
                            checkpoint: self.last_checkpoint(),
                        });
                    }
                    sum += total as f64;
                    feat += feature as f64;
                    lat += latent as f64;
                    norm += grad_norm as f64;
                    observer(&TrainEvent::Step {
                        epoch,
                        step: first + j + 1,
                        steps: batches.len(),
                        loss: total,
                    });
                }
            }
            let n = batches.len() as f64;
            self.epochs_done += 1;
            // The replicas must hold replica 0's parameters after every step; a copy that went
            // wrong would train the next epoch on other weights without any error.
            if !self.replicas.is_empty() {
                let difference = self.replica_divergence()?;
                if difference != 0.0 {
                    return Err(HvqError::Training(format!(
                        "after epoch {}: a replica's parameters differ from replica 0's by \
                         {difference}",
                        epoch + 1
                    )));
                }
            }
            observer(&TrainEvent::Epoch(EpochReport {
                epoch,
                lr,
                loss: sum / n,
                feature_loss: feat / n,
                latent_loss: lat / n,
                grad_norm: norm / n,
                codes_in_use: self
                    .model
                    .as_ref()
                    .expect("the model is back after the epoch's steps")
                    .codes_in_use()?,
                seconds: t0.elapsed().as_secs_f64(),
            }));
            let every = self.config.checkpoint_every.max(1);
            if self.epochs_done.is_multiple_of(every) || self.epochs_done == self.config.epochs {
                let path = self.save_checkpoint()?;
                observer(&TrainEvent::Checkpoint {
                    epochs_done: self.epochs_done,
                    path,
                });
            }
        }
        Ok(())
    }

    /// The checkpoint on disk and the epochs it holds, if there is one.
    fn last_checkpoint(&self) -> String {
        let path = self.out_dir.join(CHECKPOINT_FILE);
        match checkpoint::read_state(&path) {
            Ok(state) => format!(
                "{} (after epoch {}) is kept: continue from it with --resume, or start a new \
                 run with a lower --lr if it diverges again",
                path.display(),
                state.epochs_done
            ),
            Err(_) => format!(
                "no checkpoint was written before it ({}); start again with a lower --lr",
                path.display()
            ),
        }
    }

    /// One optimiser step on the samples `idx` (the batch), split across the replicas
    /// (`data_parallel` module docs): forward, weighted backward per replica, gradients summed on
    /// the first device, one AdamW step, parameters copied back to the replicas.
    fn step(&mut self, data: TrainingData<'_>, idx: &[usize], lr: f64) -> Result<StepLoss> {
        let sizes = shard_sizes(idx.len(), 1 + self.replicas.len());
        let mut models = vec![
            self.model
                .take()
                .expect("the model is only out during a step"),
        ];
        models.extend(self.replicas.take(sizes.len() - 1));
        let mut shards = Vec::with_capacity(sizes.len());
        let mut start = 0;
        for (r, &size) in sizes.iter().enumerate() {
            let rows = &idx[start..start + size];
            start += size;
            let device = match r {
                0 => self.device.clone(),
                r => self.replicas.device(r - 1).clone(),
            };
            shards.push(Shard {
                feature: self.batch(data, rows, &device)?,
                classes: rows.iter().map(|&j| data.class(j)).collect(),
            });
        }
        let classes: Vec<usize> = shards.iter().flat_map(|s| s.classes.clone()).collect();
        let moved_codebooks = models[0].codebook_slots(&classes).into_iter().collect();
        let outputs = HvqModel::forward_train_sharded(&mut models, shards.clone())?;
        let home = self.device.clone().inner();
        let poison = self.inject_nan_at_step == Some(self.optimizer.step + 1);
        let mut grads = std::collections::BTreeMap::new();
        // [total, feature, latent] summed over the shards, on the trainer's device.
        let mut losses: Option<Tensor<1>> = None;
        for ((model, out), shard) in models.iter().zip(&outputs).zip(shards) {
            // Every loss term is a per-sample mean: the batch's is the shards' weighted by size.
            let weight = shard.classes.len() as f64 / idx.len() as f64;
            let loss = objective(out, shard.feature, &shard.classes, &self.model_config.hvq);
            let mut weighted = loss.total.clone().mul_scalar(weight);
            if poison {
                weighted = weighted * f32::NAN;
            }
            let shard_grads = weighted.clone().backward();
            accumulate(&mut grads, AdamW::gradients(model, &shard_grads), &home);
            let parts = Tensor::cat(
                vec![
                    weighted.inner().reshape([1]),
                    loss.feature.inner().reshape([1]).mul_scalar(weight),
                    loss.latent.inner().reshape([1]).mul_scalar(weight),
                ],
                0,
            )
            .to_device(&home);
            losses = Some(match losses {
                Some(sum) => sum + parts,
                None => parts,
            });
        }
        let mut models = models.into_iter();
        let primary = models.next().expect("replica 0 runs every step");
        let (primary, report) = self.optimizer.step_named(primary, grads, lr);
        self.replicas
            .broadcast(&primary, models.collect(), &moved_codebooks);
        self.model = Some(primary);
        let losses = losses.expect("every step has at least one shard");
        Ok(StepLoss(Tensor::cat(
            vec![losses, report.grad_norm.to_device(&home)],
            0,
        )))
    }

    /// Train data-parallel: a replica of the network on each of `devices` besides the trainer's
    /// own (replica 0). Only runs on cached features (the default eval-mode backbone): a
    /// train-mode backbone's batch norm would need its statistics synchronised across devices.
    pub fn add_replicas(&mut self, devices: &[Device]) -> Result<()> {
        if devices.is_empty() {
            return Ok(());
        }
        if self.config.backbone.mode == BackboneMode::Train {
            return Err(HvqError::Training(
                "training on several devices needs cached features: a train-mode backbone's \
                 batch norm would need its statistics synchronised across devices (train on one \
                 device with --backbone-mode train)"
                    .into(),
            ));
        }
        let devices: Vec<Device> = devices.iter().map(|d| d.clone().autodiff()).collect();
        self.replicas = Replicas::new(self.model(), &devices);
        Ok(())
    }

    /// Devices the run trains on (1 without data parallelism).
    pub fn device_count(&self) -> usize {
        1 + self.replicas.len()
    }

    /// The largest difference between a replica's parameters and replica 0's: 0 after every
    /// step when the replicas are in step.
    pub fn replica_divergence(&self) -> Result<f32> {
        self.replicas.max_difference(self.model())
    }

    /// The features of samples `idx`: from the cache, or through the train-mode backbone (which
    /// updates its running statistics), entering the autodiff graph as constants.
    fn batch(
        &mut self,
        data: TrainingData<'_>,
        idx: &[usize],
        device: &Device,
    ) -> Result<Tensor<4>> {
        match data {
            TrainingData::Features(f) => Ok(f.batch(idx, device)),
            TrainingData::Images(samples) => {
                let backbone = self.backbone.as_mut().ok_or_else(|| {
                    HvqError::Training("a train-mode backbone run without a backbone".into())
                })?;
                let cfg = backbone.config().clone();
                let plain = self.device.clone().inner();
                let inputs = input_batch(idx.iter().map(|&i| &samples[i]), &cfg, &plain)?;
                let taps = backbone.taps_train(inputs, &self.config.backbone);
                Ok(align_features(taps, cfg.feature_size).autodiff())
            }
        }
    }

    /// The backbone of a train-mode run, with the running statistics it has reached.
    pub fn backbone(&self) -> Option<&Backbone> {
        self.backbone.as_ref()
    }

    /// The network being trained.
    pub fn model(&self) -> &HvqModel {
        self.model
            .as_ref()
            .expect("the model is only out during a step")
    }

    /// The trained network as plain tensors (official names), for an inference model.
    pub fn network(&self) -> TensorMap {
        self.model().to_native()
    }
}
