//! `hvq train`: features once, then the reconstruction network, with checkpoints and a log.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use hvq::app::recipe::Recipe;
use hvq::app::training::{
    Overrides, Preset, Resume, TrainOutcome, TrainProgress, TrainRequest, train,
};
use hvq::backbone::BackboneMode;
use hvq::config::BackboneKind;
use hvq::train::{TrainConfig, TrainEvent};
use indicatif::ProgressBar;

use super::panic_report::working_on;
use super::progress::bar;

/// Which backbone.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BackboneArg {
    /// EfficientNet-Lite0 (embedded ImageNet weights).
    Lite0,
    /// EfficientNet-B4 (needs --backbone-weights).
    B4,
}

/// How the frozen backbone runs during training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackboneModeArg {
    /// Eval mode: running-statistic BatchNorm, features cached once per dataset (default).
    Eval,
    /// Train mode, as the official trainer: batch-statistic BatchNorm whose running statistics
    /// are updated and saved with the model, drop-connect 0.2, features recomputed every step.
    Train,
}

impl From<BackboneModeArg> for BackboneMode {
    fn from(m: BackboneModeArg) -> Self {
        match m {
            BackboneModeArg::Eval => BackboneMode::Eval,
            BackboneModeArg::Train => BackboneMode::Train,
        }
    }
}

/// Objective preset.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PresetArg {
    /// The released code: label oracle, commitment 0.25, no POT loss, OT score × 80.
    Official,
    /// The paper: a classifier picks codebooks and expert, commitment β = 0.5, POT loss α = 0.01.
    Paper,
}

/// Options of `hvq train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Dataset as FORMAT:PATH (mvtec, visa, cifar10, fashion-mnist, elpv, folder).
    #[arg(long)]
    pub data: String,
    /// Output directory: model, checkpoint, feature cache and log.
    #[arg(long)]
    pub out: PathBuf,
    /// Feature extractor (default lite0).
    #[arg(long, value_enum)]
    pub backbone: Option<BackboneArg>,
    /// Backbone weights file (required for b4).
    #[arg(long)]
    pub backbone_weights: Option<PathBuf>,
    /// Backbone during training: eval (default, cached features) or train (the official
    /// trainer's batch-statistic BatchNorm and drop-connect; slower, no cache).
    #[arg(long, value_enum)]
    pub backbone_mode: Option<BackboneModeArg>,
    /// Training recipe, the settings every option below leaves open: `official` (the released
    /// code's configuration: full width, 1000 epochs; for a GPU) or `cpu` (paper preset, C 64,
    /// K 64, 50 epochs at lr 5e-4, no dropout, dead codes restarted; about an hour for 1200
    /// images on two cores: the shipped default model's recipe).
    /// Options given explicitly win. Default: official.
    #[arg(long, value_name = "NAME")]
    pub recipe: Option<String>,
    /// Objective preset (default: the recipe's).
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    /// Epochs (default: the recipe's; official 1000). The lr step stays at 80 % of the run.
    /// With --resume: the run's new length (default: the checkpoint's); its lr step stays put.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Learning rate (default: the recipe's; official 1e-4); the step schedule scales it.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Batch size (official and default: 16).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Encoder width C (official 256); the decoder runs at 2C.
    #[arg(long)]
    pub embed_dim: Option<usize>,
    /// Codes per codebook (official 512).
    #[arg(long)]
    pub codes: Option<usize>,
    /// Feed-forward width (official 1024).
    #[arg(long)]
    pub ffn_dim: Option<usize>,
    /// Side of the model input in pixels, a multiple of 16 (official 224): images are resized
    /// to it and the feature grid is a sixteenth of it. Larger sees smaller defects and costs
    /// more (stored in the model's config.json).
    #[arg(long, value_name = "PIXELS")]
    pub input_size: Option<usize>,
    /// Checkpoint every N epochs (and at the end; default 10).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// auto (CUDA, else a hardware GPU through wgpu, else the CPU; the choice and why
    /// are printed), cpu, wgpu or cuda.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Train data-parallel on several devices, each step's batch (--batch) split across them:
    /// a comma-separated list such as cuda:0,cuda:1 or wgpu:0,wgpu:1; cpu*2 tries it on one
    /// CPU; ws://HOST:PORT is a device `hvq device-server` hosts on another process or machine.
    /// Replaces --device; the run equals one device's up to float rounding and dropout.
    #[arg(long, value_name = "LIST", conflicts_with = "device")]
    pub devices: Option<String>,
    /// Continue the run in --out from its last checkpoint, with the checkpoint's model,
    /// schedule, seed and tiling: `--resume --out DIR --data D` is enough. Model options given
    /// with it must match the checkpoint's; --epochs changes the run's length.
    #[arg(long)]
    pub resume: bool,
    /// Train on square tiles of this many pixels cut from each training image, and inspect
    /// large photos the same way (stored in the model's config.json; resume with the same).
    #[arg(long, value_name = "PIXELS")]
    pub tile: Option<u32>,
    /// Fraction of a tile shared with its neighbours (with --tile).
    #[arg(long, default_value_t = 0.25, requires = "tile")]
    pub overlap: f32,
    /// Stop after this many epochs of this invocation (the run can be resumed later).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
    /// Test hook: make the loss of this optimiser step (1-based, over the run) NaN.
    #[arg(long, hide = true)]
    pub inject_nan_at_step: Option<u64>,
    /// Ablation: a single VQ layer instead of the hierarchy.
    #[arg(long)]
    pub single_vq: bool,
    /// Ablation: one shared codebook per level instead of one per class.
    #[arg(long)]
    pub no_codebook_switching: bool,
    /// Ablation: one shared expert instead of one per class.
    #[arg(long)]
    pub no_expert_switching: bool,
    /// Ablation: turn the POT loss off (paper preset) or set its weight α.
    #[arg(long)]
    pub pot_weight: Option<f32>,
    /// Dropout probability of the transformer layers while training (official: 0.1; 0 = off).
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Restart dead codebook entries (not in the paper; 0 = off, the released code): after each
    /// EMA update a code whose count fell below this fraction of the codebook's mean count
    /// moves onto a token of the sample. Without it small models' codebooks collapse to a
    /// handful of codes (docs/quality.md).
    #[arg(long, value_name = "FRACTION")]
    pub codebook_restart: Option<f32>,
    /// Seed (official and default: 133).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl TrainArgs {
    /// The recipe named, or the default one.
    fn recipe_name(&self) -> &str {
        self.recipe.as_deref().unwrap_or(Recipe::official().name)
    }

    /// Whether any option that shapes the model was given (on resume they are checked against
    /// the checkpoint; without any, the checkpoint's model is taken as it is).
    fn names_model_options(&self) -> bool {
        self.recipe.is_some()
            || self.backbone.is_some()
            || self.preset.is_some()
            || self.embed_dim.is_some()
            || self.codes.is_some()
            || self.ffn_dim.is_some()
            || self.input_size.is_some()
            || self.pot_weight.is_some()
            || self.dropout.is_some()
            || self.codebook_restart.is_some()
            || self.single_vq
            || self.no_codebook_switching
            || self.no_expert_switching
    }

    /// The application layer's request: the recipe, with every option given explicitly over it.
    fn request(&self) -> Result<TrainRequest> {
        let recipe = Recipe::named(self.recipe_name())?;
        let mut train = TrainConfig::official().with_epochs(self.epochs.unwrap_or(recipe.epochs));
        // Not given: the official schedule's (batch 16, checkpoint every 10, seed 133).
        train.batch_size = self.batch.unwrap_or(train.batch_size);
        train.optimizer.lr = self.lr.unwrap_or(recipe.lr);
        train.checkpoint_every = self.checkpoint_every.unwrap_or(train.checkpoint_every);
        train.seed = self.seed.unwrap_or(train.seed);
        Ok(TrainRequest {
            data: self.data.clone(),
            out: self.out.clone(),
            backbone: match self.backbone {
                Some(BackboneArg::Lite0) | None => BackboneKind::EfficientnetLite0,
                Some(BackboneArg::B4) => BackboneKind::EfficientnetB4,
            },
            backbone_weights: self.backbone_weights.clone(),
            backbone_mode: self.backbone_mode.map(BackboneMode::from),
            preset: match self.preset {
                Some(PresetArg::Official) => Preset::Official,
                Some(PresetArg::Paper) => Preset::Paper,
                None => recipe.preset,
            },
            overrides: recipe.overridden_by(&Overrides {
                embed_dim: self.embed_dim,
                codes: self.codes,
                ffn_dim: self.ffn_dim,
                input_size: self.input_size,
                pot_weight: self.pot_weight,
                dropout: self.dropout,
                codebook_restart: self.codebook_restart,
                single_vq: self.single_vq,
                no_codebook_switching: self.no_codebook_switching,
                no_expert_switching: self.no_expert_switching,
            }),
            train,
            resume: self.resume.then(|| Resume {
                check_model: self.names_model_options(),
                epochs: self.epochs,
            }),
            tiling: self.tile.map(|tile| hvq::tiling::Tiling {
                tile,
                overlap: self.overlap,
            }),
            stop_after: self.stop_after,
            inject_nan_at_step: self.inject_nan_at_step,
            replica_devices: Vec::new(),
        })
    }
}

/// Run `hvq train`: the application layer's training run, with progress bars.
pub fn run(args: TrainArgs) -> Result<()> {
    let precision = hvq::device::precision::current();
    if !precision.trains() {
        anyhow::bail!(
            "--precision {precision} is for inference (predict, eval, bench, ...): training runs \
             at f32 or tf32 (half-precision gradients would need loss scaling, which hvq has not \
             got); a model trained at f32 can be inspected at {precision}"
        );
    }
    let _input = working_on(format!(
        "training on {} into {}",
        args.data,
        args.out.display()
    ));
    let mut request = args.request()?;
    let ignored: Vec<&str> = [
        ("--lr", args.lr.is_some()),
        ("--batch", args.batch.is_some()),
        ("--seed", args.seed.is_some()),
        ("--checkpoint-every", args.checkpoint_every.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    if args.resume && !ignored.is_empty() {
        eprintln!(
            "note: {} ignored with --resume: the checkpoint's schedule continues",
            ignored.join(", ")
        );
    }
    let device = match &args.devices {
        Some(list) => {
            let mut devices = hvq::device::create_list(list)?.into_iter();
            let first = devices
                .next()
                .expect("create_list returns at least one device");
            request.replica_devices = devices.collect();
            eprintln!(
                "devices: {} replicas ({list}), the batch of {} split across them",
                1 + request.replica_devices.len(),
                request.train.batch_size
            );
            first
        }
        None => {
            let selection = super::device(&args.device)?;
            let official_on_cpu = selection.backend == hvq::device::DeviceChoice::Cpu
                && args.recipe_name() == Recipe::official().name
                && args.epochs.is_none()
                && !args.resume;
            if official_on_cpu {
                // The faithful default is a GPU schedule: say so before days of epochs start.
                eprintln!(
                    "note: the official recipe (full width, {} epochs) takes days on a CPU; \
                     `--recipe cpu` is {}",
                    Recipe::official().epochs,
                    Recipe::cpu().summary
                );
            }
            selection.device
        }
    };
    let mut bars = Bars::default();
    let outcome = train(&request, &device, &mut |p| bars.show(p))?;
    bars.clear();
    match outcome {
        TrainOutcome::Stopped {
            epochs_done,
            epochs,
        } => println!("stopped after epoch {epochs_done} of {epochs}; continue with --resume"),
        TrainOutcome::Saved { dir, threshold } => {
            println!(
                "model saved to {} (threshold {threshold:.4})",
                dir.display()
            )
        }
    }
    Ok(())
}

/// The progress bars of one run: feature extraction, then training.
#[derive(Default)]
struct Bars {
    features: Option<ProgressBar>,
    train: Option<ProgressBar>,
}

impl Bars {
    fn show(&mut self, progress: TrainProgress<'_>) {
        match progress {
            TrainProgress::Resumed { epochs_done } => {
                println!("resuming after epoch {epochs_done}")
            }
            TrainProgress::Features {
                purpose,
                done,
                total,
            } => self
                .features
                .get_or_insert_with(|| bar(total as u64, purpose))
                .set_position(done as u64),
            TrainProgress::DataReady {
                images,
                shape,
                from_cache,
                drop_connect,
            } => {
                if let Some(pb) = self.features.take() {
                    pb.finish_and_clear();
                }
                match (shape, drop_connect) {
                    (Some(shape), _) => println!(
                        "{images} training images, features {shape:?}{}",
                        if from_cache { " (from cache)" } else { "" }
                    ),
                    (None, p) => println!(
                        "{images} training images, train-mode backbone (batch statistics, \
                         drop-connect {}): features recomputed every step",
                        p.unwrap_or_default()
                    ),
                }
            }
            TrainProgress::Training {
                steps_per_epoch,
                epochs_left,
            } => {
                // Created before the first step: the trainer reports steps in groups, and a bar
                // started at the first group would show its steps as done in no time.
                self.train = Some(bar((epochs_left * steps_per_epoch) as u64, "train"));
            }
            TrainProgress::Trainer {
                steps_per_epoch,
                epochs_left,
                event,
            } => {
                let pb = self
                    .train
                    .get_or_insert_with(|| bar((epochs_left * steps_per_epoch) as u64, "train"));
                match event {
                    TrainEvent::Step { epoch, loss, .. } => {
                        pb.inc(1);
                        pb.set_message(format!("epoch {} loss {loss:.4}", epoch + 1));
                    }
                    TrainEvent::Checkpoint { epochs_done, .. } => {
                        pb.println(format!("checkpoint after epoch {epochs_done}"));
                    }
                    TrainEvent::Epoch(_) => {}
                }
            }
        }
    }

    fn clear(&mut self) {
        for pb in [self.features.take(), self.train.take()]
            .into_iter()
            .flatten()
        {
            pb.finish_and_clear();
        }
    }
}
