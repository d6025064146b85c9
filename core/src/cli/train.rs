//! `hvq train`: features once, then the reconstruction network, with checkpoints and a log.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use hvq::Detector;
use hvq::backbone::{BackboneMode, BackboneTraining};
use hvq::config::{BackboneKind, HvqConfig, ModelConfig};
use hvq::train::{FeatureSet, TrainConfig, TrainEvent, Trainer, TrainingData};

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
    /// Feature extractor.
    #[arg(long, value_enum, default_value = "lite0")]
    pub backbone: BackboneArg,
    /// Backbone weights file (required for b4).
    #[arg(long)]
    pub backbone_weights: Option<PathBuf>,
    /// Backbone during training: eval (default, cached features) or train (the official
    /// trainer's batch-statistic BatchNorm and drop-connect; slower, no cache).
    #[arg(long, value_enum)]
    pub backbone_mode: Option<BackboneModeArg>,
    /// Objective preset.
    #[arg(long, value_enum, default_value = "official")]
    pub preset: PresetArg,
    /// Epochs (official: 1000; the lr step stays at 80 % of the run).
    #[arg(long, default_value_t = 1000)]
    pub epochs: usize,
    /// Learning rate (official: 1e-4); the step schedule scales it.
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Batch size (official: 16).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Encoder width C (official 256); the decoder runs at 2C.
    #[arg(long)]
    pub embed_dim: Option<usize>,
    /// Codes per codebook (official 512).
    #[arg(long)]
    pub codes: Option<usize>,
    /// Feed-forward width (official 1024).
    #[arg(long)]
    pub ffn_dim: Option<usize>,
    /// Checkpoint every N epochs (and at the end).
    #[arg(long, default_value_t = 10)]
    pub checkpoint_every: usize,
    /// auto (CUDA, else a hardware GPU through wgpu, else the CPU; the choice and why
    /// are printed), cpu, wgpu or cuda.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
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
    /// Seed (official: 133).
    #[arg(long, default_value_t = 133)]
    pub seed: u64,
}

/// Run `hvq train`.
pub fn run(args: TrainArgs) -> Result<()> {
    let device = super::device(&args.device)?.device;
    let dataset = hvq::data::open(&args.data)?;
    if dataset.train.is_empty() {
        bail!("{}: no training images", args.data);
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let kind = match args.backbone {
        BackboneArg::Lite0 => BackboneKind::EfficientnetLite0,
        BackboneArg::B4 => BackboneKind::EfficientnetB4,
    };
    let backbone = super::backbone(kind, args.backbone_weights.as_deref(), &device)?;
    let channels = backbone.config().feature_channels();
    let mut hvq = match args.preset {
        PresetArg::Official => HvqConfig::official(channels, dataset.class_names.clone()),
        PresetArg::Paper => HvqConfig::paper(channels, dataset.class_names.clone()),
    };
    // The appendix's ablation switches (all on = HVQ-Trans).
    hvq.ablation.hierarchical = !args.single_vq;
    hvq.ablation.switch_codebooks = !args.no_codebook_switching;
    hvq.ablation.switch_experts = !args.no_expert_switching;
    if let Some(alpha) = args.pot_weight {
        hvq.pot_weight = alpha;
    }
    if let Some(p) = args.dropout {
        if !(0.0..1.0).contains(&p) {
            bail!("--dropout {p}: a probability in [0, 1) is expected");
        }
        hvq.dropout = p;
    }
    if let Some(c) = args.embed_dim {
        hvq.embed_dim = c;
    }
    if let Some(k) = args.codes {
        hvq.codes = k;
    }
    if let Some(f) = args.ffn_dim {
        hvq.ffn_dim = f;
    }
    let model_config = ModelConfig {
        backbone: backbone.config().clone(),
        hvq,
    };
    let mut detector = Detector::new(model_config.clone(), &device)?;
    detector.backbone = backbone;

    let live = Some(detector.backbone.clone());
    let mut trainer = if args.resume {
        let t = Trainer::resume(&args.out, &args.data, Some(args.epochs), &device, live)?;
        if t.model_config != model_config {
            bail!(
                "{}: the checkpoint's model configuration differs from this command's; \
                 resume with the same --backbone/--embed-dim/--codes/--ffn-dim",
                args.out.display()
            );
        }
        if let Some(mode) = args.backbone_mode
            && BackboneMode::from(mode) != t.config.backbone.mode
        {
            bail!(
                "{}: the run was started with --backbone-mode {:?}; resume it with the same mode",
                args.out.display(),
                t.config.backbone.mode
            );
        }
        println!("resuming after epoch {}", t.epochs_done);
        t
    } else {
        let mut config = TrainConfig::official().with_epochs(args.epochs);
        config.batch_size = args.batch;
        config.optimizer.lr = args.lr;
        config.checkpoint_every = args.checkpoint_every;
        config.seed = args.seed;
        config.backbone = match args.backbone_mode.map(BackboneMode::from) {
            Some(BackboneMode::Train) => BackboneTraining::official_train_mode(),
            _ => BackboneTraining::default(),
        };
        Trainer::new(
            model_config.clone(),
            config,
            &args.data,
            &args.out,
            &device,
            live,
        )?
    };

    // Eval mode: features once per dataset, cached beside the run. Train mode: none (the
    // backbone's output changes with every batch's statistics and drop-connect).
    let features = match trainer.config.backbone.mode {
        BackboneMode::Eval => {
            let pb = bar(dataset.train.len() as u64, "features");
            let (features, hit) = hvq::features::cached(
                &args.out.join("feature-cache.safetensors"),
                &detector,
                &dataset.train,
                16,
                &device,
                &mut |done| pb.set_position(done as u64),
            )?;
            pb.finish_and_clear();
            println!(
                "{} training images, features {:?}{}",
                features.len(),
                features.shape,
                if hit { " (from cache)" } else { "" }
            );
            Some(features)
        }
        BackboneMode::Train => {
            println!(
                "{} training images, train-mode backbone (batch statistics, drop-connect {}): \
                 features recomputed every step",
                dataset.train.len(),
                trainer.config.backbone.drop_connect
            );
            None
        }
    };
    let data = match &features {
        Some(f) => TrainingData::Features(f),
        None => TrainingData::Images(&dataset.train),
    };

    let steps_per_epoch = dataset
        .train
        .len()
        .div_ceil(trainer.config.batch_size.max(1));
    let remaining = trainer.config.epochs.saturating_sub(trainer.epochs_done);
    let pb = bar((remaining * steps_per_epoch) as u64, "train");
    let log_path = args.out.join("train-log.jsonl");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut log_error = None;
    if let Some(step) = args.inject_nan_at_step {
        trainer.inject_nan_at_step(step);
    }
    trainer.run(data, args.stop_after, &mut |event| match event {
        TrainEvent::Step { epoch, loss, .. } => {
            pb.inc(1);
            pb.set_message(format!("epoch {} loss {loss:.4}", epoch + 1));
        }
        TrainEvent::Epoch(report) => {
            let line = serde_json::to_string(report).expect("report serialises");
            if let Err(e) = writeln!(log, "{line}") {
                log_error.get_or_insert(e);
            }
        }
        TrainEvent::Checkpoint { epochs_done, .. } => {
            pb.println(format!("checkpoint after epoch {epochs_done}"));
        }
    })?;
    pb.finish_and_clear();
    if let Some(e) = log_error {
        return Err(e).with_context(|| format!("writing {}", log_path.display()));
    }
    if trainer.epochs_done < trainer.config.epochs {
        println!(
            "stopped after epoch {} of {}; continue with --resume",
            trainer.epochs_done, trainer.config.epochs
        );
        return Ok(());
    }
    let features = match features {
        Some(f) => f,
        None => {
            // The trained running statistics are part of the model; the threshold is calibrated
            // on features of the backbone as the saved model will run it (eval mode).
            detector.backbone = trainer
                .backbone()
                .context("a train-mode run keeps its backbone")?
                .clone();
            let pb = bar(dataset.train.len() as u64, "calibration features");
            let f = hvq::features::extract(&detector, &dataset.train, 16, &device, &mut |done| {
                pb.set_position(done as u64)
            })?;
            pb.finish_and_clear();
            f
        }
    };
    finish(&args.out, detector, &trainer, &features)
}

/// Build the inference model, calibrate its threshold on the training normals, save it.
fn finish(
    out: &Path,
    mut detector: Detector,
    trainer: &Trainer,
    features: &FeatureSet,
) -> Result<()> {
    detector.hvq = detector.hvq.load_native(&trainer.network())?;
    detector.calibration = Some(hvq::threshold::calibrate(&detector, features, 0.99)?);
    let threshold = detector
        .calibration
        .as_ref()
        .map_or(f32::NAN, |c| c.threshold);
    detector.save_dir(out)?;
    println!(
        "model saved to {} (threshold {threshold:.4})",
        out.display()
    );
    Ok(())
}
