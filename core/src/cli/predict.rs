//! `hvq predict`: overlays, raw maps and a results table for images or folders.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hvq::{ClassChoice, Detector, Inspector};

fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.extension()
                        .map(|e| {
                            matches!(
                                e.to_ascii_lowercase().to_str(),
                                Some("png" | "jpg" | "jpeg")
                            )
                        })
                        .unwrap_or(false)
                })
                .collect();
            inner.sort();
            files.extend(inner);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            bail!("{}: no such file or directory", p.display());
        }
    }
    if files.is_empty() {
        bail!("no PNG or JPEG images found in {:?}", inputs);
    }
    Ok(files)
}

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
    let mut detector = match weights {
        Some(dir) => Detector::load_dir(dir, &device)?,
        None => hvq::pretrained::default_model(&device)?,
    };
    if let Some(t) = threshold {
        detector.calibration = Some(hvq::detector::Calibration {
            threshold: t,
            source: "command line".into(),
        });
    }
    let choice = if class == "auto" {
        ClassChoice::Auto
    } else {
        ClassChoice::Name(class.to_string())
    };
    let inspector = Inspector::new(detector, device);
    let files = collect_images(images)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut rows = Vec::new();
    let mut failed = 0;
    let mut csv = String::from("image,class,score,threshold,verdict,error\n");
    for file in &files {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let result = hvq::preprocess::load(file)
            .and_then(|img| inspector.inspect(&img, &choice).map(|r| (img, r)));
        match result {
            Ok((img, r)) => {
                let photo = hvq::preprocess::to_rgb(&img);
                let (lo, hi) = hvq::overlay::color_scale(&r.model_map, r.score, r.threshold);
                let overlay = hvq::overlay::blend(&photo, &r.map, lo, hi, 0.5);
                let png = out.join(format!("{stem}_overlay.png"));
                overlay
                    .save(&png)
                    .with_context(|| format!("writing {}", png.display()))?;
                let npy = out.join(format!("{stem}_map.npy"));
                hvq::weights::write_atomic(
                    &npy,
                    &hvq::overlay::npy_bytes(&r.map, r.height as usize, r.width as usize),
                )?;
                // The map at the model's resolution too: what the web page and parity checks use.
                let npy224 = out.join(format!("{stem}_map224.npy"));
                hvq::weights::write_atomic(
                    &npy224,
                    &hvq::overlay::npy_bytes(&r.model_map, r.model_size, r.model_size),
                )?;
                let verdict = match r.anomalous {
                    Some(true) => "anomalous",
                    Some(false) => "normal",
                    None => "uncalibrated",
                };
                println!(
                    "{:<40} {:>10.4} {:<10} {}",
                    file.display(),
                    r.score,
                    verdict,
                    r.class_name
                );
                csv.push_str(&format!(
                    "{},{},{},{},{},\n",
                    file.display(),
                    r.class_name,
                    r.score,
                    r.threshold.map(|t| t.to_string()).unwrap_or_default(),
                    verdict
                ));
                let mut row = serde_json::to_value(&r)?;
                row["image"] = serde_json::Value::String(file.display().to_string());
                row["verdict"] = serde_json::Value::String(verdict.into());
                rows.push(row);
            }
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e}", file.display());
                csv.push_str(&format!(
                    "{},,,,error,\"{}\"\n",
                    file.display(),
                    e.to_string().replace('"', "'")
                ));
                rows.push(serde_json::json!({"image": file.display().to_string(), "error": e.to_string()}));
            }
        }
    }
    hvq::weights::write_atomic(
        &out.join("results.json"),
        serde_json::to_string_pretty(&rows)?.as_bytes(),
    )?;
    hvq::weights::write_atomic(&out.join("results.csv"), csv.as_bytes())?;
    println!("wrote {} results to {}", rows.len(), out.display());
    if failed > 0 {
        return Err(SomeImagesFailed {
            failed,
            total: files.len(),
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
