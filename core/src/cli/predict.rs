//! `hvq predict`: overlays, raw maps and a results table for images or folders.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hvq::app::results::{self, OutputNames, ResultRow};
use hvq::app::{ClassChoice, Inspection, Inspector, ModelSource, list_images};
use hvq::detector::Calibration;
use hvq::device::panic_capture::payload_text;
use hvq::fs::write_atomic;

use super::panic_report::working_on;

/// Run `hvq predict`.
pub fn run(
    weights: Option<&Path>,
    class: &str,
    threshold: Option<f32>,
    device: &str,
    out: &Path,
    images: &[PathBuf],
) -> Result<()> {
    let device = super::device(device)?.device;
    let source = ModelSource::from_option(weights);
    let _loading = working_on(format!("loading the model ({})", source.describe()));
    let mut detector = source.load(&device)?;
    drop(_loading);
    if let Some(t) = threshold {
        detector.calibration = Some(Calibration {
            threshold: t,
            source: "command line".into(),
        });
    }
    let choice: ClassChoice = class.parse()?;
    let inspector = Inspector::new(detector, device);
    let listing = list_images(images);
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
    for file in &listing.files {
        // A panic inside the backend becomes this image's error row (the panic report names it
        // once on stderr); the other images are still inspected.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let _input = working_on(format!("inspecting {}", file.display()));
            hvq::preprocess::load(file)
                .and_then(|img| inspector.inspect(&img, &choice).map(|r| (img, r)))
                .map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|p| {
            Err(format!(
                "{}: inference failed inside hvq ({}); this is a bug in hvq, please report it \
                 with the image",
                file.display(),
                payload_text(p.as_ref())
            ))
        });
        match result {
            Ok((img, r)) => {
                let mut row = ResultRow::inspected(file, &r, r.threshold);
                let stem = names.stem(file);
                let (overlay, map) = write_outputs(out, &stem, &img, &r)?;
                row.overlay = Some(overlay);
                row.map = Some(map);
                println!(
                    "{:<40} {:>10.4} {:<12} {}",
                    file.display(),
                    r.score,
                    row.verdict,
                    r.class_name
                );
                rows.push(row);
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                rows.push(ResultRow::failed(file, &e));
            }
        }
    }
    results::write_tables(out, &rows)?;
    println!("wrote {} results to {}", rows.len(), out.display());
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

/// The overlay PNG, the map at the image's resolution and at the model's (what the web page and
/// parity checks compare); returns the overlay's and the map's file names.
fn write_outputs(
    out: &Path,
    stem: &str,
    img: &image::DynamicImage,
    r: &Inspection,
) -> Result<(String, String)> {
    let photo = hvq::preprocess::to_rgb(img);
    let (lo, hi) = hvq::overlay::color_scale(&r.model_map, r.score, r.threshold);
    let overlay = format!("{stem}_overlay.png");
    let png = out.join(&overlay);
    hvq::overlay::blend(&photo, &r.map, lo, hi, 0.5)
        .save(&png)
        .with_context(|| format!("writing {}", png.display()))?;
    let map = format!("{stem}_map.npy");
    write_atomic(
        &out.join(&map),
        &hvq::overlay::npy_bytes(&r.map, r.height as usize, r.width as usize),
    )?;
    write_atomic(
        &out.join(format!("{stem}_map224.npy")),
        &hvq::overlay::npy_bytes(&r.model_map, r.model_size, r.model_size),
    )?;
    Ok((overlay, map))
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
