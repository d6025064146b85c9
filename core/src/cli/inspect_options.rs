//! What every inspecting command (`predict`, `watch`) takes and does first: the model, the
//! class, a threshold override, the device and the batch; and the line it prints per image.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use hvq::app::{ClassChoice, Inspector, ModelSource, ResultRow};
use hvq::detector::Calibration;

use super::panic_report::working_on;

/// The model and how to run it.
#[derive(Args, Debug)]
pub struct InspectOptions {
    /// Model directory (`config.json` + `model.safetensors`); default: the shipped model.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Class name, or `auto`.
    #[arg(long, default_value = "auto")]
    pub class: String,
    /// Override the model's stored threshold.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// auto (CUDA, else a hardware GPU through wgpu, else the CPU; the choice and why
    /// are printed), cpu, wgpu or cuda.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Images per pass through the model (decoded in parallel, one device batch); default:
    /// 16 on a GPU, 4 on the CPU. Lower it if the device runs out of memory.
    #[arg(long)]
    pub batch: Option<usize>,
}

/// A model loaded on its device, ready to inspect.
pub struct Loaded {
    /// The model on its device.
    pub inspector: Inspector,
    /// The class to use.
    pub class: ClassChoice,
    /// Images per pass.
    pub batch: usize,
    /// Where the model came from.
    pub source: ModelSource,
    /// The device, in words.
    pub device_name: String,
}

impl InspectOptions {
    /// Start the device (saying which on stderr), load the model, apply the threshold override.
    pub fn load(&self) -> Result<Loaded> {
        let selection = super::device(&self.device)?;
        let batch = self
            .batch
            .unwrap_or_else(|| selection.backend.inspection_batch());
        if batch == 0 {
            bail!("--batch must be at least 1");
        }
        let source = ModelSource::from_option(self.weights.as_deref());
        let mut detector = {
            let _loading = working_on(format!("loading the model ({})", source.describe()));
            source.load(&selection.device)?
        };
        if let Some(t) = self.threshold {
            // The normal level stays the model's: the colour scale still fades in from it.
            let normal_score = detector.calibration.as_ref().and_then(|c| c.normal_score);
            detector.calibration = Some(Calibration {
                threshold: t,
                source: "command line".into(),
                normal_score,
            });
        }
        let class: ClassChoice = self.class.parse()?;
        Ok(Loaded {
            device_name: selection.name(),
            inspector: Inspector::new(detector, selection.device),
            class,
            batch,
            source,
        })
    }
}

/// One inspected image's line on stdout (an error goes to stderr).
pub fn print_row(row: &ResultRow) {
    match &row.error {
        None => println!(
            "{:<40} {:>10.4} {:<12} {}",
            row.image,
            row.score.unwrap_or(f32::NAN),
            row.verdict,
            row.class.as_deref().unwrap_or("")
        ),
        Some(e) => eprintln!("{e}"),
    }
}
