//! The inspector's state logic, free of any UI or GPU: the image list and its order, verdicts
//! against the threshold, calibration from known-good images, the display scale and export.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Image file extensions opened from folders.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

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
    /// Anomaly map at the image resolution, row-major (shared with the renderer).
    pub map: Arc<Vec<f32>>,
    /// Smallest value of the model-resolution map: the bottom of the display scale (as `predict`).
    pub map_min: f32,
    /// Inference time, milliseconds.
    pub millis: f64,
}

impl Outcome {
    /// Keep what the list needs from an inspection.
    pub fn from_inspection(r: hvq::Inspection) -> Self {
        let map_min = hvq::overlay::scale_bottom(&r.model_map);
        let t = &r.times;
        Self {
            score: r.score,
            class_index: r.class_index,
            class_name: r.class_name,
            width: r.width,
            height: r.height,
            map: Arc::new(r.map),
            map_min,
            millis: t.preprocess_ms + t.backbone_ms + t.model_ms + t.upsample_ms,
        }
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

/// Pass/fail of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Score at or below the threshold.
    Pass,
    /// Score above the threshold.
    Fail,
    /// No threshold known.
    Uncalibrated,
    /// Not inspected yet.
    Pending,
    /// Unreadable or failed.
    Error,
}

impl Verdict {
    /// The word shown and exported.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Uncalibrated => "uncalibrated",
            Verdict::Pending => "pending",
            Verdict::Error => "error",
        }
    }
}

/// `score > threshold` fails, as the CLI decides.
pub fn verdict(score: f32, threshold: Option<f32>) -> Verdict {
    match threshold {
        Some(t) if score > t => Verdict::Fail,
        Some(_) => Verdict::Pass,
        None => Verdict::Uncalibrated,
    }
}

/// One image of the list.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Stable identifier (the worker's replies carry it).
    pub id: u64,
    /// The file.
    pub path: PathBuf,
    /// Its state.
    pub status: Status,
}

impl Entry {
    /// File name for display.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }

    /// The score, once inspected.
    pub fn score(&self) -> Option<f32> {
        match &self.status {
            Status::Done(o) => Some(o.score),
            _ => None,
        }
    }

    /// Verdict under `threshold`.
    pub fn verdict(&self, threshold: Option<f32>) -> Verdict {
        match &self.status {
            Status::Queued => Verdict::Pending,
            Status::Failed(_) => Verdict::Error,
            Status::Done(o) => verdict(o.score, threshold),
        }
    }
}

/// Column the list is sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortKey {
    /// File name.
    #[default]
    Name,
    /// Image score (pending and failed images last).
    Score,
    /// Verdict, then score.
    Verdict,
}

/// Direction of the sort.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    /// Smallest first.
    #[default]
    Ascending,
    /// Largest first.
    Descending,
}

/// Counts for the status bar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Images in the list.
    pub total: usize,
    /// Still waiting.
    pub queued: usize,
    /// Passed.
    pub pass: usize,
    /// Failed.
    pub fail: usize,
    /// Unreadable or failed.
    pub errors: usize,
}

/// The list of images, its order and the selection.
#[derive(Clone, Debug, Default)]
pub struct ImageList {
    entries: Vec<Entry>,
    /// Indices into `entries` in display order.
    order: Vec<usize>,
    next_id: u64,
    /// Selected entry id.
    pub selected: Option<u64>,
    /// Sort column.
    pub sort: SortKey,
    /// Sort direction.
    pub sort_order: SortOrder,
}

impl ImageList {
    /// An empty list with this order.
    pub fn new(sort: SortKey, sort_order: SortOrder) -> Self {
        Self {
            sort,
            sort_order,
            ..Default::default()
        }
    }

    /// Entries in display order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.order.iter().map(|&i| &self.entries[i])
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No images.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry by id.
    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// The selected entry.
    pub fn selected_entry(&self) -> Option<&Entry> {
        self.selected.and_then(|id| self.get(id))
    }

    /// Add files (duplicates of paths already listed are skipped); returns the new entries'
    /// ids and paths, to be sent to the worker. The first image is selected if none was.
    pub fn add(&mut self, paths: impl IntoIterator<Item = PathBuf>) -> Vec<(u64, PathBuf)> {
        let mut added = Vec::new();
        for path in paths {
            if self.entries.iter().any(|e| e.path == path) {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.entries.push(Entry {
                id,
                path: path.clone(),
                status: Status::Queued,
            });
            added.push((id, path));
        }
        self.resort(None);
        if self.selected.is_none() {
            self.selected = self.order.first().map(|&i| self.entries[i].id);
        }
        added
    }

    /// Record a failure to even list a file (e.g. an unreadable folder) as an entry.
    pub fn add_failed(&mut self, path: PathBuf, error: String) {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push(Entry {
            id,
            path,
            status: Status::Failed(error),
        });
        self.resort(None);
    }

    /// Store the worker's answer for `id` (ignored when the entry is gone).
    pub fn set_result(
        &mut self,
        id: u64,
        result: std::result::Result<Outcome, String>,
        threshold: Option<f32>,
    ) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.status = match result {
                Ok(o) => Status::Done(o),
                Err(msg) => Status::Failed(msg),
            };
        }
        self.resort(threshold);
    }

    /// Mark every image for inspection again (class or model changed); returns the work.
    pub fn requeue_all(&mut self) -> Vec<(u64, PathBuf)> {
        for e in &mut self.entries {
            e.status = Status::Queued;
        }
        self.entries
            .iter()
            .map(|e| (e.id, e.path.clone()))
            .collect()
    }

    /// Remove everything.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.selected = None;
    }

    /// Sort by `key`; choosing the current key again flips the direction.
    pub fn sort_by(&mut self, key: SortKey, threshold: Option<f32>) {
        if self.sort == key {
            self.sort_order = match self.sort_order {
                SortOrder::Ascending => SortOrder::Descending,
                SortOrder::Descending => SortOrder::Ascending,
            };
        } else {
            self.sort = key;
            self.sort_order = match key {
                SortKey::Name => SortOrder::Ascending,
                SortKey::Score | SortKey::Verdict => SortOrder::Descending,
            };
        }
        self.resort(threshold);
    }

    /// Recompute the display order (stable; ties by name). Images without a score always come
    /// after scored ones when sorting by score.
    pub fn resort(&mut self, threshold: Option<f32>) {
        let entries = &self.entries;
        let mut order: Vec<usize> = (0..entries.len()).collect();
        let desc = self.sort_order == SortOrder::Descending;
        let dir = |o: Ordering| if desc { o.reverse() } else { o };
        let by_name = |a: &Entry, b: &Entry| a.path.cmp(&b.path);
        order.sort_by(|&a, &b| {
            let (a, b) = (&entries[a], &entries[b]);
            match self.sort {
                SortKey::Name => dir(by_name(a, b)),
                SortKey::Score => match (a.score(), b.score()) {
                    (Some(x), Some(y)) => dir(x.total_cmp(&y)).then_with(|| by_name(a, b)),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => by_name(a, b),
                },
                SortKey::Verdict => {
                    // Descending: failures first, then passes; pending and errors at the end.
                    let rank = |e: &Entry| match e.verdict(threshold) {
                        Verdict::Fail => 3,
                        Verdict::Uncalibrated => 2,
                        Verdict::Pass => 1,
                        Verdict::Error => 0,
                        Verdict::Pending => -1,
                    };
                    dir(rank(a).cmp(&rank(b)))
                        .then_with(|| {
                            dir(a
                                .score()
                                .unwrap_or(0.0)
                                .total_cmp(&b.score().unwrap_or(0.0)))
                        })
                        .then_with(|| by_name(a, b))
                }
            }
        });
        self.order = order;
    }

    /// Move the selection `delta` rows in display order (clamped); selects the first row when
    /// nothing is selected.
    pub fn move_selection(&mut self, delta: isize) {
        if self.order.is_empty() {
            return;
        }
        let pos = self
            .selected
            .and_then(|id| self.order.iter().position(|&i| self.entries[i].id == id));
        let next = match pos {
            None => 0,
            Some(p) => (p as isize + delta).clamp(0, self.order.len() as isize - 1) as usize,
        };
        self.selected = Some(self.entries[self.order[next]].id);
    }

    /// Select the first (`false`) or last (`true`) row.
    pub fn select_end(&mut self, last: bool) {
        let idx = if last {
            self.order.last()
        } else {
            self.order.first()
        };
        self.selected = idx.map(|&i| self.entries[i].id);
    }

    /// Counts under `threshold`.
    pub fn counts(&self, threshold: Option<f32>) -> Counts {
        let mut c = Counts {
            total: self.entries.len(),
            ..Default::default()
        };
        for e in &self.entries {
            match e.verdict(threshold) {
                Verdict::Pending => c.queued += 1,
                Verdict::Pass => c.pass += 1,
                Verdict::Fail => c.fail += 1,
                Verdict::Error => c.errors += 1,
                Verdict::Uncalibrated => {}
            }
        }
        c
    }

    /// Scores of all inspected images, in list order.
    pub fn scores(&self) -> Vec<f32> {
        self.iter().filter_map(Entry::score).collect()
    }
}

/// The image files of a folder (not recursive), sorted by name, as `hvq predict` picks them.
pub fn images_in_folder(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image_path(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Whether the extension is one the inspector opens.
pub fn is_image_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// Expand dropped or chosen paths: folders become their images; files are kept as given (an
/// unreadable or non-image file then shows its error in the list). Errors listing a folder are
/// returned beside the files.
pub fn expand_paths(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.is_dir() {
            match images_in_folder(p) {
                Ok(f) => files.extend(f),
                Err(e) => errors.push((p.clone(), format!("{e:#}"))),
            }
        } else {
            files.push(p.clone());
        }
    }
    (files, errors)
}

/// How the threshold is derived from known-good scores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CalibrationRule {
    /// The largest good score: every known-good image passes.
    Max,
    /// A quantile (0..=1) of the good scores, as training calibrates (0.99).
    Quantile(f64),
}

/// Threshold from the scores of known-good images; `None` without any finite score.
pub fn calibrate(good_scores: &[f32], rule: CalibrationRule) -> Option<f32> {
    let q = match rule {
        CalibrationRule::Max => 1.0,
        CalibrationRule::Quantile(q) => q,
    };
    hvq::threshold::percentile(good_scores, q)
}

/// A calibration in progress: the known-good images sent to the worker and their scores so far.
#[derive(Clone, Debug)]
pub struct CalibrationRun {
    /// Folder of known-good images.
    pub folder: PathBuf,
    /// Images sent.
    pub total: usize,
    /// Scores received.
    pub scores: Vec<f32>,
    /// Files that failed, with their errors.
    pub errors: Vec<(PathBuf, String)>,
    /// Rule applied at the end.
    pub rule: CalibrationRule,
}

impl CalibrationRun {
    /// Answers received.
    pub fn received(&self) -> usize {
        self.scores.len() + self.errors.len()
    }

    /// All answers are in.
    pub fn finished(&self) -> bool {
        self.received() >= self.total
    }

    /// The threshold, when finished with at least one score.
    pub fn threshold(&self) -> Option<f32> {
        if self.finished() {
            calibrate(&self.scores, self.rule)
        } else {
            None
        }
    }
}

/// The colormap's scale for one image: `lo` is the smallest value of the model-resolution map,
/// `hi` the larger of threshold and score — exactly what `hvq predict` uses for its overlays.
pub fn display_range(outcome: &Outcome, threshold: Option<f32>) -> (f32, f32) {
    (
        outcome.map_min,
        hvq::overlay::scale_top(outcome.score, threshold),
    )
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(score: f32) -> Outcome {
        Outcome {
            score,
            class_index: 0,
            class_name: "mono".into(),
            width: 2,
            height: 2,
            map: Arc::new(vec![0.0, 1.0, 2.0, score]),
            map_min: 0.0,
            millis: 1.0,
        }
    }

    fn list_with(scores: &[(&str, Option<f32>)]) -> ImageList {
        let mut list = ImageList::new(SortKey::Name, SortOrder::Ascending);
        let added = list.add(scores.iter().map(|(n, _)| PathBuf::from(n)));
        for ((id, _), (_, s)) in added.into_iter().zip(scores) {
            let r = match s {
                Some(s) => Ok(outcome(*s)),
                None => Err("cannot decode".to_string()),
            };
            list.set_result(id, r, None);
        }
        list
    }

    fn names(list: &ImageList) -> Vec<String> {
        list.iter().map(Entry::name).collect()
    }

    #[test]
    fn adding_skips_duplicates_and_selects_first() {
        let mut list = ImageList::new(SortKey::Name, SortOrder::Ascending);
        let a = list.add(vec!["b.png".into(), "a.png".into()]);
        assert_eq!(a.len(), 2);
        assert_eq!(list.selected_entry().unwrap().name(), "a.png");
        let again = list.add(vec!["a.png".into(), "c.png".into()]);
        assert_eq!(again.len(), 1);
        assert_eq!(list.len(), 3);
        assert!(matches!(
            list.get(again[0].0).unwrap().status,
            Status::Queued
        ));
    }

    #[test]
    fn sorting_by_score_verdict_and_name() {
        let mut list = list_with(&[
            ("a.png", Some(3.0)),
            ("b.png", None),
            ("c.png", Some(9.0)),
            ("d.png", Some(1.0)),
        ]);
        assert_eq!(names(&list), ["a.png", "b.png", "c.png", "d.png"]);
        list.sort_by(SortKey::Score, Some(2.0));
        assert_eq!(list.sort_order, SortOrder::Descending);
        assert_eq!(names(&list), ["c.png", "a.png", "d.png", "b.png"]);
        list.sort_by(SortKey::Score, Some(2.0));
        assert_eq!(
            names(&list),
            ["d.png", "a.png", "c.png", "b.png"],
            "unscored stay last"
        );
        list.sort_by(SortKey::Verdict, Some(5.0));
        assert_eq!(names(&list), ["c.png", "a.png", "d.png", "b.png"]);
        list.sort_by(SortKey::Name, None);
        assert_eq!(names(&list), ["a.png", "b.png", "c.png", "d.png"]);
        list.sort_by(SortKey::Name, None);
        assert_eq!(names(&list), ["d.png", "c.png", "b.png", "a.png"]);
    }

    #[test]
    fn keyboard_navigation_follows_display_order() {
        let mut list = list_with(&[
            ("a.png", Some(3.0)),
            ("b.png", Some(1.0)),
            ("c.png", Some(2.0)),
        ]);
        list.sort_by(SortKey::Score, None); // descending: a (3), c (2), b (1)
        list.select_end(false);
        assert_eq!(list.selected_entry().unwrap().name(), "a.png");
        list.move_selection(1);
        assert_eq!(list.selected_entry().unwrap().name(), "c.png");
        list.move_selection(5);
        assert_eq!(list.selected_entry().unwrap().name(), "b.png");
        list.move_selection(-1);
        assert_eq!(list.selected_entry().unwrap().name(), "c.png");
        list.select_end(true);
        assert_eq!(list.selected_entry().unwrap().name(), "b.png");
    }

    #[test]
    fn verdicts_follow_the_threshold() {
        assert_eq!(verdict(5.0, Some(4.0)), Verdict::Fail);
        assert_eq!(
            verdict(4.0, Some(4.0)),
            Verdict::Pass,
            "equal passes, as the CLI"
        );
        assert_eq!(verdict(5.0, None), Verdict::Uncalibrated);
        let list = list_with(&[("a.png", Some(3.0)), ("b.png", None), ("c.png", Some(9.0))]);
        let c = list.counts(Some(5.0));
        assert_eq!(
            (c.total, c.pass, c.fail, c.errors, c.queued),
            (3, 1, 1, 1, 0)
        );
        let c = list.counts(Some(10.0));
        assert_eq!((c.pass, c.fail), (2, 0));
    }

    #[test]
    fn unreadable_files_stay_in_the_list_with_their_error() {
        let list = list_with(&[("broken.png", None)]);
        let e = list.iter().next().unwrap();
        assert_eq!(e.verdict(Some(1.0)), Verdict::Error);
        assert!(matches!(&e.status, Status::Failed(m) if m == "cannot decode"));
    }

    #[test]
    fn calibration_max_and_quantile() {
        let good = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(calibrate(&good, CalibrationRule::Max), Some(4.0));
        assert!((calibrate(&good, CalibrationRule::Quantile(0.99)).unwrap() - 3.97).abs() < 1e-6);
        assert_eq!(calibrate(&[], CalibrationRule::Max), None);
        let mut run = CalibrationRun {
            folder: "good".into(),
            total: 3,
            scores: vec![1.0, 2.0],
            errors: vec![],
            rule: CalibrationRule::Max,
        };
        assert_eq!(run.threshold(), None, "not finished");
        run.errors.push(("x.png".into(), "bad".into()));
        assert_eq!(run.threshold(), Some(2.0));
    }

    #[test]
    fn display_range_is_predicts() {
        let o = outcome(7.0);
        assert_eq!(display_range(&o, None), (0.0, 7.0));
        assert_eq!(display_range(&o, Some(10.0)), (0.0, 10.0));
        assert_eq!(display_range(&o, Some(5.0)), (0.0, 7.0));
    }

    #[test]
    fn csv_quotes_and_columns() {
        let list = list_with(&[("a,b.png", Some(3.0)), ("c.png", None)]);
        let csv = to_csv(&result_rows(&list, Some(2.0)));
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "image,class,score,threshold,verdict,error,overlay"
        );
        assert_eq!(lines[1], "\"a,b.png\",mono,3,2,FAIL,,");
        assert_eq!(lines[2], "c.png,,,2,error,cannot decode,");
    }

    #[test]
    fn export_writes_tables_and_overlays() {
        let dir = std::env::temp_dir().join(format!("hvq-desktop-export-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A real 2×2 photo for the inspected image, and a missing one.
        let photo_path = dir.join("cell.png");
        let photo = image::RgbImage::from_fn(2, 2, |x, y| {
            image::Rgb([(x * 100) as u8, (y * 100) as u8, 50])
        });
        photo.save(&photo_path).unwrap();
        let mut list = ImageList::new(SortKey::Name, SortOrder::Ascending);
        let ids = list.add(vec![photo_path.clone(), dir.join("missing.png")]);
        list.set_result(ids[0].0, Ok(outcome(4.0)), None);
        list.set_result(ids[1].0, Err("no such file".into()), None);
        let out = dir.join("out");
        let summary = export(&out, &list, Some(3.0), 0.5).unwrap();
        assert_eq!((summary.rows, summary.overlays), (2, 1));
        assert!(summary.failures.is_empty());
        let written = image::open(out.join("cell_overlay.png")).unwrap().to_rgb8();
        let expect = hvq::overlay::blend(&photo, &[0.0, 1.0, 2.0, 4.0], 0.0, 4.0, 0.5);
        assert_eq!(written, expect);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
        assert_eq!(json[0]["verdict"], "FAIL");
        assert_eq!(json[0]["overlay"], "cell_overlay.png");
        assert_eq!(json[1]["error"], "no such file");
        let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
        assert_eq!(csv.lines().count(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn folders_expand_to_sorted_images() {
        let dir = std::env::temp_dir().join(format!("hvq-desktop-folder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["b.PNG", "a.jpg", "notes.txt"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let (files, errors) = expand_paths(&[dir.clone(), dir.join("nothing-here")]);
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.jpg", "b.PNG", "nothing-here"]);
        assert!(errors.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
