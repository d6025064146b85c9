//! `hvq predict`: overlays, raw maps and a results table for images or folders.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hvq::app::files::{FileInspection, inspect_files};
use hvq::app::report::{MostAnomalous, THUMBNAIL_SIDE, Thumbnail, predict_report};
use hvq::app::results::{self, OutputNames, ResultRow, write_image_outputs};
use hvq::app::{ClassChoice, Inspector, MapResolution, ModelSource, list_images};
use hvq::detector::Calibration;

use super::panic_report::working_on;

/// Arguments of `hvq predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
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
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Images per pass through the model (decoded in parallel, one device batch); default:
    /// 16 on a GPU, 4 on the CPU. Lower it if the device runs out of memory.
    #[arg(long)]
    pub batch: Option<usize>,
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
    let PredictArgs {
        weights,
        class,
        threshold,
        device,
        out,
        batch,
        report,
        images,
    } = args;
    let (weights, out, report) = (weights.as_deref(), out.as_path(), report.as_deref());
    let selection = super::device(&device)?;
    let batch = batch.unwrap_or_else(|| selection.backend.inspection_batch());
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let device_name = selection.name();
    let device = selection.device;
    let source = ModelSource::from_option(weights);
    let _loading = working_on(format!("loading the model ({})", source.describe()));
    let mut detector = source.load(&device)?;
    let mut most_anomalous = MostAnomalous::default();
    drop(_loading);
    if let Some(t) = threshold {
        detector.calibration = Some(Calibration {
            threshold: t,
            source: "command line".into(),
        });
    }
    let choice: ClassChoice = class.parse()?;
    let inspector = Inspector::new(detector, device);
    let listing = list_images(&images);
    if listing.files.is_empty() && listing.problems.is_empty() {
        bail!("no PNG or JPEG images found in {images:?}");
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut rows = Vec::new();
    let mut names = OutputNames::default();
    for (path, problem) in &listing.problems {
        eprintln!("{}: {problem}", path.display());
        rows.push(ResultRow::failed(
            path,
            format!("{}: {problem}", path.display()),
        ));
    }
    let started = std::time::Instant::now();
    let mut inspected = 0usize;
    for chunk in listing.files.chunks(batch) {
        let done = inspect_files(&inspector, chunk, &choice, MapResolution::Image, working_on);
        for FileInspection {
            path,
            image,
            result,
        } in done
        {
            match (image, result) {
                (Some(img), Ok(r)) => {
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
                    println!(
                        "{:<40} {:>10.4} {:<12} {}",
                        path.display(),
                        r.score,
                        row.verdict,
                        r.class_name
                    );
                    rows.push(row);
                    inspected += 1;
                }
                (_, result) => {
                    let e = result.err().unwrap_or_else(|| "no image".into());
                    eprintln!("{e}");
                    rows.push(ResultRow::failed(&path, &e));
                }
            }
        }
    }
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
