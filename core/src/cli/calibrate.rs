//! `hvq calibrate`: set a model's decision threshold from known-good images (the training split
//! of a dataset, or a `folder:` of good parts), as `train` does at its end. Only the model's
//! `config.json` is rewritten (atomically); the weights file is left as it is.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use hvq::app::calibrate::calibrate_model_dir;

use super::panic_report::working_on;
use super::progress::bar;

/// Options of `hvq calibrate`.
#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// Model directory (`config.json` + `model.safetensors`).
    #[arg(long)]
    pub weights: PathBuf,
    /// Dataset as FORMAT:PATH; its training images (all normal) are scored.
    #[arg(long)]
    pub data: String,
    /// Quantile of the normal images' scores used as the threshold.
    #[arg(long, default_value_t = 0.99)]
    pub quantile: f64,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// auto (CUDA, else a hardware GPU through wgpu, else the CPU; the choice and why
    /// are printed), cpu, wgpu or cuda.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// Run `hvq calibrate`.
pub fn run(args: CalibrateArgs) -> Result<()> {
    let _input = working_on(format!(
        "calibrating {} on {}",
        args.weights.display(),
        args.data
    ));
    if !(0.0..=1.0).contains(&args.quantile) {
        bail!("--quantile {} is not in [0, 1]", args.quantile);
    }
    let device = super::device(&args.device)?.device;
    let dataset = hvq::data::open(&args.data)?;
    let pb = bar(dataset.train.len() as u64, "normals");
    let done = calibrate_model_dir(
        &args.weights,
        &dataset,
        args.quantile,
        args.batch,
        &device,
        &mut |d, _| pb.set_position(d as u64),
    )?;
    pb.finish_and_clear();
    println!(
        "threshold {:.4} ({}); was {}; written to {}",
        done.new.threshold,
        done.new.source,
        done.old
            .map_or("none".to_string(), |c| format!("{:.4}", c.threshold)),
        done.config_path.display()
    );
    Ok(())
}
