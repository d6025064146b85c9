//! Exporting results: the table (CSV and JSON) and the overlays.

use std::path::Path;

use anyhow::{Context, Result};
use hvq::app::results::{self, OutputNames, ResultRow};

use super::{ImageList, Outcome, Status, display_scale};

/// Rows of the list in display order under `threshold`, in core's result schema.
pub fn result_rows(list: &ImageList, threshold: Option<f32>) -> Vec<ResultRow> {
    list.iter()
        .map(|e| {
            let mut row = ResultRow::empty(&e.path, e.verdict(threshold));
            match &e.status {
                Status::Done(o) => {
                    row.class = Some(o.class_name.clone());
                    row.score = Some(o.score);
                    row.threshold = threshold;
                    row.width = Some(o.width);
                    row.height = Some(o.height);
                    row.millis = Some(o.millis);
                }
                Status::Failed(msg) => row.error = Some(msg.clone()),
                Status::Queued => {}
            }
            row
        })
        .collect()
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
    let scale = display_scale(outcome, threshold);
    Ok(hvq::overlay::blend(
        &photo,
        &outcome.full_map(),
        &scale,
        opacity,
    ))
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
    let mut names = OutputNames::default();
    for (row, entry) in rows.iter_mut().zip(list.iter()) {
        let Status::Done(outcome) = &entry.status else {
            continue;
        };
        // Same stem in two folders: keep both.
        let name = format!("{}_overlay.png", names.stem(&entry.path));
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
    results::write_tables(dir, &rows)?;
    Ok(summary)
}
