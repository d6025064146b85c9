//! `hvq watch`: inspect images as they appear in a folder (see `hvq::app::watch`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use hvq::app::watch::{SortImages, Watch, WatchEvent, WatchOptions};

use super::inspect_options::{InspectOptions, Loaded, print_row};
use super::panic_report::working_on;

/// Arguments of `hvq watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The folder images appear in.
    pub dir: PathBuf,
    /// Output folder: results.jsonl, results.csv, overlays (and sorted images).
    #[arg(long)]
    pub out: PathBuf,
    /// The model and how to run it.
    #[command(flatten)]
    pub model: InspectOptions,
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
    let Loaded {
        inspector,
        class,
        batch,
        ..
    } = args.model.load()?;
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
            WatchEvent::Recorded(r) => print_row(&r.row),
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
