//! Exporting results: the table (CSV and JSON) and the overlays.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::{ImageList, Outcome, Status, display_range};

/// One row of the exported results.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ResultRow {
    /// Image path.
    pub image: String,
    /// Class used.
    pub class: Option<String>,
    /// Score.
    pub score: Option<f32>,
    /// Threshold applied.
    pub threshold: Option<f32>,
    /// `PASS`, `FAIL`, `uncalibrated`, `pending` or `error`.
    pub verdict: String,
    /// Error message for unreadable images.
    pub error: Option<String>,
    /// Overlay PNG written for this image (file name inside the export folder).
    pub overlay: Option<String>,
}

/// Rows of the list in display order under `threshold`.
pub fn result_rows(list: &ImageList, threshold: Option<f32>) -> Vec<ResultRow> {
    list.iter()
        .map(|e| {
            let (class, score, error) = match &e.status {
                Status::Done(o) => (Some(o.class_name.clone()), Some(o.score), None),
                Status::Failed(msg) => (None, None, Some(msg.clone())),
                Status::Queued => (None, None, None),
            };
            ResultRow {
                image: e.path.display().to_string(),
                class,
                score,
                threshold,
                verdict: e.verdict(threshold).label().into(),
                error,
                overlay: None,
            }
        })
        .collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The rows as CSV (`image,class,score,threshold,verdict,error,overlay`).
pub fn to_csv(rows: &[ResultRow]) -> String {
    let mut out = String::from("image,class,score,threshold,verdict,error,overlay\n");
    let opt = |v: Option<f32>| v.map(|x| x.to_string()).unwrap_or_default();
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            csv_field(&r.image),
            csv_field(r.class.as_deref().unwrap_or("")),
            opt(r.score),
            opt(r.threshold),
            r.verdict,
            csv_field(r.error.as_deref().unwrap_or("")),
            csv_field(r.overlay.as_deref().unwrap_or("")),
        ));
    }
    out
}

/// The CPU overlay of an inspected image, exactly as `hvq predict` writes it at `opacity` 0.5.
pub fn overlay_image(
    path: &Path,
    outcome: &Outcome,
    threshold: Option<f32>,
    opacity: f32,
) -> Result<image::RgbImage> {
    let img = hvq::preprocess::load(path)?;
    let photo = hvq::preprocess::to_rgb(&img);
    anyhow::ensure!(
        photo.dimensions() == (outcome.width, outcome.height),
        "{} changed on disk since it was inspected",
        path.display()
    );
    let (lo, hi) = display_range(outcome, threshold);
    Ok(hvq::overlay::blend(&photo, &outcome.map, lo, hi, opacity))
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportSummary {
    /// Rows written to `results.csv` / `results.json`.
    pub rows: usize,
    /// Overlay PNGs written.
    pub overlays: usize,
    /// Overlays that could not be written, with their errors.
    pub failures: Vec<String>,
}

/// Write `results.csv`, `results.json` and `<stem>_overlay.png` for each inspected image into
/// `dir`. A failing overlay is reported, not fatal.
pub fn export(
    dir: &Path,
    list: &ImageList,
    threshold: Option<f32>,
    opacity: f32,
) -> Result<ExportSummary> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut rows = result_rows(list, threshold);
    let mut summary = ExportSummary::default();
    let mut used = std::collections::HashSet::new();
    for (row, entry) in rows.iter_mut().zip(list.iter()) {
        let Status::Done(outcome) = &entry.status else {
            continue;
        };
        let stem = entry
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("image{}", entry.id));
        // Same stem in two folders: keep both.
        let mut name = format!("{stem}_overlay.png");
        let mut k = 2;
        while !used.insert(name.clone()) {
            name = format!("{stem}_{k}_overlay.png");
            k += 1;
        }
        let written = overlay_image(&entry.path, outcome, threshold, opacity).and_then(|img| {
            let path = dir.join(&name);
            img.save(&path)
                .with_context(|| format!("writing {}", path.display()))
        });
        match written {
            Ok(()) => {
                row.overlay = Some(name);
                summary.overlays += 1;
            }
            Err(e) => summary
                .failures
                .push(format!("{}: {e:#}", entry.path.display())),
        }
    }
    summary.rows = rows.len();
    let json = serde_json::to_string_pretty(&rows)?;
    hvq::weights::write_atomic(&dir.join("results.json"), json.as_bytes())?;
    hvq::weights::write_atomic(&dir.join("results.csv"), to_csv(&rows).as_bytes())?;
    Ok(summary)
}
