//! `hvq watch`: inspect images as they appear in a folder (see `hvq::app::watch`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use hvq::app::watch::{SortImages, Watch, WatchEvent, WatchOptions};
use hvq::app::{ClassChoice, Inspector, ModelSource};
use hvq::detector::Calibration;

use super::panic_report::working_on;

/// Arguments of `hvq watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The folder images appear in.
    pub dir: PathBuf,
    /// Output folder: results.jsonl, results.csv, overlays (and sorted images).
    #[arg(long)]
    pub out: PathBuf,
    /// Model directory; default: the shipped model.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Class name, or `auto`.
    #[arg(long, default_value = "auto")]
    pub class: String,
    /// Override the model's stored threshold.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// auto, cpu, wgpu or cuda.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Images per pass through the model; default: 16 on a GPU, 4 on the CPU.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Seconds a file must stay unchanged (size and time) to count as completely written.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Seconds between scans of the folder.
    #[arg(long, default_value_t = 0.5)]
    pub interval: f64,
    /// Move (or hard-link) each inspected image into OUT/normal, OUT/anomalous,
    /// OUT/uncalibrated or OUT/error.
    #[arg(long, value_name = "move|link")]
    pub sort: Option<String>,
    /// Also write each map as .npy (full resolution and 224×224) beside its overlay.
    #[arg(long)]
    pub maps: bool,
    /// Inspect what is in the folder (waiting for files still being written), then exit.
    #[arg(long)]
    pub once: bool,
}

/// Run `hvq watch`.
pub fn run(args: WatchArgs) -> Result<()> {
    let seconds = |name: &str, v: f64| -> Result<Duration> {
        if !(v.is_finite() && (0.0..=3600.0).contains(&v)) {
            bail!("--{name} {v}: give seconds between 0 and 3600");
        }
        Ok(Duration::from_secs_f64(v))
    };
    let settle = seconds("settle", args.settle)?;
    let interval = seconds("interval", args.interval)?.max(Duration::from_millis(10));
    let sort = args
        .sort
        .as_deref()
        .map(str::parse::<SortImages>)
        .transpose()?;
    if !args.dir.is_dir() {
        bail!("{}: not a folder", args.dir.display());
    }
    let selection = super::device(&args.device)?;
    let batch = args
        .batch
        .unwrap_or_else(|| selection.backend.inspection_batch());
    let source = ModelSource::from_option(args.weights.as_deref());
    let mut detector = {
        let _loading = working_on(format!("loading the model ({})", source.describe()));
        source.load(&selection.device)?
    };
    if let Some(t) = args.threshold {
        detector.calibration = Some(Calibration {
            threshold: t,
            source: "command line".into(),
        });
    }
    let class: ClassChoice = args.class.parse()?;
    let inspector = Inspector::new(detector, selection.device);
    let mut watch = Watch::open(
        WatchOptions {
            dir: args.dir.clone(),
            out: args.out.clone(),
            class,
            batch,
            settle,
            maps: args.maps,
            sort,
        },
        inspector,
    )?;
    eprintln!(
        "watching {} → {} ({} images recorded before; batch {batch}; Ctrl-C stops, a restart \
         carries on)",
        args.dir.display(),
        args.out.display(),
        watch.recorded()
    );
    let started = Instant::now();
    let mut inspected = 0usize;
    loop {
        let _scan = working_on(format!("watching {}", args.dir.display()));
        let n = watch.step(|event| match event {
            WatchEvent::Recorded(r) => {
                let row = &r.row;
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
            WatchEvent::Warning(w) => eprintln!("warning: {w}"),
        })?;
        inspected += n;
        if args.once && watch.waiting() == 0 {
            break;
        }
        std::thread::sleep(interval);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "inspected {inspected} images in {secs:.1} s ({:.2} images/s); {} recorded in {}",
        inspected as f64 / secs.max(1e-9),
        watch.recorded(),
        args.out.display()
    );
    Ok(())
}
