//! The inspector's state logic, free of any UI or GPU: the image list and its order, verdicts
//! against the threshold, calibration from known-good images, the display scale and export.
//! Here: an inspection's outcome, its status and verdict, and the colour scale; the rest in
//! `list`, `calibration` and `export`. Which files a folder means, the verdict's vocabulary and
//! the result schema are core's ([`hvq::app`]).

use std::sync::Arc;

mod calibration;
mod export;
mod list;

pub use calibration::{CalibrationRule, CalibrationRun, calibrate};
pub use export::{ExportSummary, export, overlay_image, result_rows};
pub use hvq::app::Verdict;
pub use hvq::app::images::{IMAGE_EXTENSIONS, images_in_folder, is_image_path, list_images};
pub use hvq::app::results::{ResultRow, to_csv};
pub use list::{Counts, Entry, ImageList, SortKey, SortOrder};

/// The outcome of a finished inspection, as the list keeps it.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Image score.
    pub score: f32,
    /// Class used.
    pub class_index: usize,
    /// Its name.
    pub class_name: String,
    /// Image size.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Anomaly map at the model's scale (`model_width × model_height`, row-major: 224² for a
    /// whole image, the stitched map of a tiled one; shared with the
    /// renderer, whose shader resamples it to the photo). The map at the image's resolution is
    /// [`Outcome::full_map`]: a list of thousands of 5-megapixel photos keeps 200 kB per image,
    /// not 20 MB.
    pub model_map: Arc<Vec<f32>>,
    /// Width of `model_map`.
    pub model_width: usize,
    /// Height of `model_map`.
    pub model_height: usize,
    /// The model's normal level, the bottom of its anchored colour scale (see [`display_scale`]).
    pub normal_score: Option<f32>,
    /// Inference time, milliseconds.
    pub millis: f64,
}

impl Outcome {
    /// Keep what the list needs from an inspection.
    pub fn from_inspection(r: hvq::Inspection) -> Self {
        let t = &r.times;
        Self {
            score: r.score,
            class_index: r.class_index,
            class_name: r.class_name,
            width: r.width,
            height: r.height,
            model_map: Arc::new(r.model_map),
            model_width: r.model_width,
            model_height: r.model_height,
            normal_score: r.normal_score,
            millis: t.preprocess_ms + t.backbone_ms + t.model_ms + t.upsample_ms,
        }
    }
}

impl Outcome {
    /// The map at the image's resolution, exactly as `hvq predict` computes it.
    pub fn full_map(&self) -> Vec<f32> {
        hvq::overlay::resize_map(
            &self.model_map,
            (self.model_width, self.model_height),
            (self.width as usize, self.height as usize),
        )
    }
}

/// Where an image is in its life.
#[derive(Clone, Debug)]
pub enum Status {
    /// Waiting for the worker.
    Queued,
    /// Inspected.
    Done(Outcome),
    /// Could not be read or inspected; the message says why.
    Failed(String),
}

/// `score > threshold` is anomalous, as the CLI decides.
pub fn verdict(score: f32, threshold: Option<f32>) -> Verdict {
    Verdict::of(score, threshold)
}

/// The colour scale of one image under `threshold`: core's rule (`overlay::color_scale`), exactly
/// what `hvq predict` uses for its overlays.
pub fn display_scale(outcome: &Outcome, threshold: Option<f32>) -> hvq::overlay::ColorScale {
    hvq::overlay::color_scale(
        &outcome.model_map,
        outcome.score,
        threshold,
        outcome.normal_score,
    )
}

#[cfg(test)]
mod tests;
