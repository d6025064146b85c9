//! `hvq eval`: the field's metrics per class and their mean, as a table and as JSON.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use hvq::app::ModelSource;
use hvq::app::evaluate::{ClassSource, evaluate_sharded};

use super::panic_report::working_on;
use super::progress::bar;

/// Class choice at test time.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ClassArg {
    /// Ground-truth class (the released code's protocol).
    Label,
    /// Chosen by the model (best reconstruction).
    Auto,
}

/// Options of `hvq eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model directory; default: the shipped model.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Dataset as FORMAT:PATH.
    #[arg(long)]
    pub data: String,
    /// Write the metrics as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report here: curves, score histograms, per-class table and
    /// the worst false positives and negatives with their overlays.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// How the class of a test image is chosen.
    #[arg(long, value_enum, default_value = "label")]
    pub class: ClassArg,
    /// Compare maps and masks at this size (square) for the pixel metrics; default: the
    /// model's input size (224). Larger keeps small defects of high-resolution photos.
    #[arg(long, value_name = "PIXELS")]
    pub pixel_size: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// auto (CUDA, else a hardware GPU through wgpu, else the CPU; the choice and why
    /// are printed), cpu, wgpu or cuda.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Evaluate on several devices, the test split cut into one contiguous part per device, as
    /// `hvq train --devices` takes them (cuda:0,cuda:1; cpu*2; ws://HOST:PORT). Replaces --device.
    #[arg(long, value_name = "LIST", conflicts_with = "device")]
    pub devices: Option<String>,
}

/// Run `hvq eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    let _input = working_on(format!("evaluating on {}", args.data));
    let (devices, device_name) = match &args.devices {
        Some(list) => {
            let devices = hvq::device::create_list(list)?;
            eprintln!(
                "devices: the test split cut into {} parts ({list})",
                devices.len()
            );
            (devices, list.clone())
        }
        None => {
            let selection = super::device(&args.device)?;
            (vec![selection.device.clone()], selection.name())
        }
    };
    // A training run still in progress: its last checkpoint (Lite0 runs only, as the checkpoint
    // holds no backbone).
    let source = ModelSource::from_option(args.weights.as_deref());
    if let Some((done, planned)) = source.checkpoint_progress()? {
        println!(
            "evaluating the last checkpoint of an unfinished run: after epoch {done} of {planned}"
        );
    }
    let mut inspectors = Vec::with_capacity(devices.len());
    for device in devices {
        inspectors.push(hvq::app::Inspector::new(source.load(&device)?, device));
    }
    let detector = &inspectors[0].detector;
    let model_name = source.describe();
    let threshold = detector.calibration.as_ref().map(|c| c.threshold);
    let dataset = hvq::data::open(&args.data)?;
    let pb = bar(dataset.test.len() as u64, "eval");
    let source = match args.class {
        ClassArg::Label => ClassSource::Label,
        ClassArg::Auto => ClassSource::Auto,
    };
    let result = evaluate_sharded(
        &inspectors,
        &dataset,
        source,
        args.batch,
        args.pixel_size,
        &mut |d| pb.set_position(d as u64),
    )?;
    pb.finish_and_clear();
    // The table adds the mean row itself.
    let rows: Vec<_> = result.classes.values().cloned().collect();
    println!("{}", hvq::eval::format_table(&rows));
    if let Some(acc) = result.class_accuracy {
        println!(
            "class chosen correctly for {:.1} % of normal test images",
            acc * 100.0
        );
    }
    let in_use: Vec<String> = result
        .codes_in_use
        .iter()
        .map(|n| format!("{n:.0}"))
        .collect();
    println!(
        "codes in use per VQ level (level 1 first, of {}): {}",
        detector.config.hvq.codes,
        in_use.join(", ")
    );
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&result)?;
        hvq::fs::write_atomic(path, json.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        println!("metrics written to {}", path.display());
    }
    if let Some(path) = &args.report {
        let _report = working_on(format!("writing the report {}", path.display()));
        let facts = vec![
            ("model".to_string(), model_name),
            ("data".to_string(), args.data.clone()),
            (
                "class choice".to_string(),
                format!("{:?}", result.class_source).to_lowercase(),
            ),
            (
                "threshold".to_string(),
                threshold.map_or_else(|| "none (uncalibrated)".into(), |t| t.to_string()),
            ),
            ("device".to_string(), device_name),
            (
                "precision".to_string(),
                hvq::device::precision::current().to_string(),
            ),
            ("generated".to_string(), hvq::app::report::generated_at()),
        ];
        let report = hvq::app::report::evaluation_report(&result, &dataset, &inspectors[0], facts)?;
        report
            .write(path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(())
}
