//! `hvq predict`: overlays, raw maps and a results table for images or folders.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hvq::app::files::{FileInspection, inspect_pipelined};
use hvq::app::report::{MostAnomalous, THUMBNAIL_SIDE, Thumbnail, predict_report};
use hvq::app::results::{self, OutputNames, ResultRow, write_image_outputs};
use hvq::app::{MapResolution, list_images};

use super::inspect_options::{InspectOptions, Loaded, print_row};
use super::panic_report::working_on;

/// Arguments of `hvq predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// The model and how to run it.
    #[command(flatten)]
    pub model: InspectOptions,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write a self-contained HTML report here (verdict counts, score histogram, the
    /// most anomalous images with overlays, every row).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Image files or directories.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// Run `hvq predict`.
pub fn run(args: PredictArgs) -> Result<()> {
    let Loaded {
        inspector,
        class: choice,
        batch,
        source,
        device_name,
    } = args.model.load()?;
    let (out, report, images) = (args.out.as_path(), args.report.as_deref(), &args.images);
    let mut most_anomalous = MostAnomalous::default();
    let listing = list_images(images);
    if listing.files.is_empty() && listing.problems.is_empty() {
        bail!("no PNG or JPEG images found in {images:?}");
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut rows = Vec::new();
    let mut names = OutputNames::default();
    for (path, problem) in &listing.problems {
        let row = ResultRow::failed(path, format!("{}: {problem}", path.display()));
        print_row(&row);
        rows.push(row);
    }
    let started = std::time::Instant::now();
    let mut inspected = 0usize;
    // The next batch decodes and the last one's files are written while the device works.
    inspect_pipelined(
        &inspector,
        &listing.files,
        batch,
        &choice,
        MapResolution::Image,
        working_on,
        |FileInspection { path, result }| -> Result<()> {
            let row = match result {
                Ok((img, r)) => {
                    let mut row = ResultRow::inspected(&path, &r, r.threshold);
                    let stem = names.stem(&path);
                    let (overlay, map) = write_image_outputs(out, &stem, &img, &r, true)?;
                    row.overlay = Some(overlay);
                    row.map = map;
                    if report.is_some() {
                        let caption = format!(
                            "{} · class {} · score {:.4} · {}",
                            path.display(),
                            r.class_name,
                            r.score,
                            row.verdict.as_str()
                        );
                        most_anomalous.offer(r.score, || {
                            Thumbnail::overlay(&img, &r, None, THUMBNAIL_SIDE, caption)
                        })?;
                    }
                    inspected += 1;
                    row
                }
                Err(e) => ResultRow::failed(&path, &e),
            };
            print_row(&row);
            rows.push(row);
            Ok(())
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    results::write_tables(out, &rows)?;
    if let Some(path) = report {
        let threshold = inspector.detector.calibration.as_ref().map(|c| c.threshold);
        let facts = vec![
            ("model".to_string(), source.describe()),
            (
                "images".to_string(),
                format!("{} ({} inspected)", rows.len(), inspected),
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
            ("results".to_string(), out.display().to_string()),
            ("generated".to_string(), hvq::app::report::generated_at()),
        ];
        predict_report(&rows, most_anomalous, threshold, facts)
            .write(path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    println!(
        "wrote {} results to {} ({inspected} images inspected in {seconds:.1} s, {:.2} images/s, \
         batch {batch})",
        rows.len(),
        out.display(),
        inspected as f64 / seconds.max(1e-9)
    );
    let failed = rows.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        return Err(SomeImagesFailed {
            failed,
            total: rows.len(),
        }
        .into());
    }
    Ok(())
}

/// Some images could not be inspected (each has an error row): `hvq predict` exits with
/// [`SomeImagesFailed::EXIT_CODE`] so a script can tell, after writing every result it could.
#[derive(Debug)]
pub struct SomeImagesFailed {
    /// Images that got an error row.
    pub failed: usize,
    /// Images given.
    pub total: usize,
}

impl SomeImagesFailed {
    /// The exit status (1 stays for errors that stop the command before or while it writes).
    pub const EXIT_CODE: u8 = 2;
}

impl std::fmt::Display for SomeImagesFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} images could not be inspected (see the error rows)",
            self.failed, self.total
        )
    }
}

impl std::error::Error for SomeImagesFailed {}
