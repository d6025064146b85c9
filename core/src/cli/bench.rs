//! `hvq bench`: stage timings, images per second, training-step times; table and JSON.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use hvq::app::bench::{self, BenchModel};

/// Model to time.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ConfigArg {
    /// EfficientNet-B4 + the paper's full network (random weights).
    Official,
    /// The shipped default model.
    Default,
}

/// Options of `hvq bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// auto (CUDA, else a hardware GPU through wgpu, else the CPU; the choice and why
    /// are printed), cpu, wgpu or cuda.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Model to time.
    #[arg(long, value_enum, default_value = "default")]
    pub config: ConfigArg,
    /// Images per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Timed runs (after 2 warm-up runs).
    #[arg(long, default_value_t = 6)]
    pub runs: usize,
    /// Image to use (default: the shipped sample cell).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Transformer dropout in the timed training steps (default 0, as the PyTorch script; the
    /// official preset trains with 0.1).
    #[arg(long, default_value_t = 0.0)]
    pub train_dropout: f64,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// After the timed runs, record every GPU kernel of one more pass (inference stages and a
    /// training step): launches and device time per stage and per kernel, beside each stage's
    /// time (GPU backends only).
    #[arg(long)]
    pub kernels: bool,
}

/// The shipped sample image, so `bench` needs no argument (the binary already embeds it for
/// `hvq selfcheck`: `mono-defect-cell0001.png`).
pub const SAMPLE: &[u8] = hvq::pretrained::SAMPLES[0].1;

/// Run `hvq bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if !(0.0..1.0).contains(&args.train_dropout) {
        anyhow::bail!(
            "--train-dropout {}: a probability in [0, 1) is expected",
            args.train_dropout
        );
    }
    let selection = super::device(&args.device)?;
    let device = selection.device;
    let which = match args.config {
        ConfigArg::Official => BenchModel::Official,
        ConfigArg::Default => BenchModel::Default,
    };
    let detector = bench::model(which, &device)?;
    let bytes = match &args.image {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => SAMPLE.to_vec(),
    };
    let options = bench::BenchOptions {
        batch: args.batch,
        warmup: 2,
        runs: args.runs,
        train_dropout: args.train_dropout,
        kernels: args.kernels,
    };
    let report = bench::run(
        &detector,
        which,
        &device,
        selection.backend.name(),
        &bytes,
        options,
    )?;
    println!("{}", bench::format_report(&report));
    if let Some(path) = &args.json {
        hvq::fs::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
        println!("report written to {}", path.display());
    }
    Ok(())
}
