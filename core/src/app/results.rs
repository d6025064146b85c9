//! Result rows: one schema for `hvq predict`'s `results.csv` / `results.json` and the desktop
//! inspector's export (README "Result files" documents it).

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::inspect::Inspection;
use super::verdict::Verdict;
use crate::error::Result;
use crate::fs::write_atomic;

/// The CSV table's file name in an output folder.
pub const RESULTS_CSV: &str = "results.csv";
/// The JSON table's file name in an output folder.
pub const RESULTS_JSON: &str = "results.json";
/// The CSV header: the columns in order (the JSON rows have the same keys).
pub const CSV_HEADER: &str =
    "image,class,score,threshold,verdict,width,height,millis,overlay,map,error";

/// One image's result. Absent values are empty CSV fields and JSON `null`s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// The image's path as given.
    pub image: String,
    /// Class whose codebooks and expert were used.
    pub class: Option<String>,
    /// Image score (max of the 16×16-averaged map).
    pub score: Option<f32>,
    /// Threshold the verdict applied.
    pub threshold: Option<f32>,
    /// See [`Verdict`].
    pub verdict: Verdict,
    /// Image width in pixels.
    pub width: Option<u32>,
    /// Image height in pixels.
    pub height: Option<u32>,
    /// Inference time, milliseconds.
    pub millis: Option<f64>,
    /// Overlay PNG written for the image (file name in the output folder).
    pub overlay: Option<String>,
    /// Anomaly map written for the image (`.npy` at the image's resolution, file name in the
    /// output folder).
    pub map: Option<String>,
    /// Why the image could not be inspected.
    pub error: Option<String>,
}

impl ResultRow {
    /// A row without a result yet (`verdict` says why).
    pub fn empty(image: &Path, verdict: Verdict) -> Self {
        Self {
            image: image.display().to_string(),
            class: None,
            score: None,
            threshold: None,
            verdict,
            width: None,
            height: None,
            millis: None,
            overlay: None,
            map: None,
            error: None,
        }
    }

    /// The row of an inspected image under `threshold`.
    pub fn inspected(image: &Path, r: &Inspection, threshold: Option<f32>) -> Self {
        let t = &r.times;
        Self {
            class: Some(r.class_name.clone()),
            score: Some(r.score),
            threshold,
            width: Some(r.width),
            height: Some(r.height),
            millis: Some(t.preprocess_ms + t.backbone_ms + t.model_ms + t.upsample_ms),
            ..Self::empty(image, Verdict::of(r.score, threshold))
        }
    }

    /// The row of an image that could not be inspected.
    pub fn failed(image: &Path, error: impl std::fmt::Display) -> Self {
        Self {
            error: Some(error.to_string()),
            ..Self::empty(image, Verdict::Error)
        }
    }
}

/// RFC 4180 quoting: fields with a comma, quote or line break are quoted, quotes doubled.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The rows as CSV, header first.
pub fn to_csv(rows: &[ResultRow]) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    for r in rows {
        out.push_str(&csv_row(r));
    }
    out
}

/// One row as a CSV line (with its line break), the columns of [`CSV_HEADER`].
pub fn csv_row(r: &ResultRow) -> String {
    let num = |v: Option<f32>| v.map(|x| x.to_string()).unwrap_or_default();
    let text = |v: &Option<String>| csv_field(v.as_deref().unwrap_or(""));
    let int = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_default();
    let fields = [
        csv_field(&r.image),
        text(&r.class),
        num(r.score),
        num(r.threshold),
        r.verdict.as_str().to_string(),
        int(r.width),
        int(r.height),
        r.millis.map(|m| format!("{m:.1}")).unwrap_or_default(),
        text(&r.overlay),
        text(&r.map),
        text(&r.error),
    ];
    format!("{}\n", fields.join(","))
}

/// Write `results.csv` and `results.json` into `dir`, each atomically.
pub fn write_tables(dir: &Path, rows: &[ResultRow]) -> Result<()> {
    let json = serde_json::to_string_pretty(rows).map_err(|e| {
        crate::error::HvqError::Config(format!("{}: {e}", dir.join(RESULTS_JSON).display()))
    })?;
    write_atomic(&dir.join(RESULTS_JSON), json.as_bytes())?;
    write_atomic(&dir.join(RESULTS_CSV), to_csv(rows).as_bytes())
}

/// The per-image files of an output folder, each written atomically: `<stem>_overlay.png` (the
/// map blended over the photo, colour scale from `overlay::color_scale`) and, when `maps` is
/// set, `<stem>_map.npy` (the map at the image's resolution, float32) and `<stem>_map224.npy`
/// (at the model's scale: 224×224, or a tiled image's stitched map). Returns the overlay's and the map's file names.
pub fn write_image_outputs(
    out: &Path,
    stem: &str,
    img: &image::DynamicImage,
    r: &Inspection,
    maps: bool,
) -> Result<(String, Option<String>)> {
    use crate::overlay::{blend, npy_bytes};
    let photo = crate::preprocess::to_rgb(img);
    let scale = r.color_scale();
    let overlay = format!("{stem}_overlay.png");
    let mut png = std::io::Cursor::new(Vec::new());
    let full = if r.map.is_empty() {
        let model = (r.model_width, r.model_height);
        let (w, h) = (r.width as usize, r.height as usize);
        std::borrow::Cow::Owned(crate::overlay::resize_map(&r.model_map, model, (w, h)))
    } else {
        std::borrow::Cow::Borrowed(&r.map)
    };
    blend(&photo, &full, &scale, 0.5)
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| crate::error::HvqError::Image {
            path: out.join(&overlay).display().to_string(),
            reason: format!("encoding the overlay: {e}"),
        })?;
    write_atomic(&out.join(&overlay), png.get_ref())?;
    if !maps {
        return Ok((overlay, None));
    }
    let map = format!("{stem}_map.npy");
    write_atomic(
        &out.join(&map),
        &npy_bytes(&full, r.height as usize, r.width as usize),
    )?;
    write_atomic(
        &out.join(format!("{stem}_map224.npy")),
        &npy_bytes(&r.model_map, r.model_height, r.model_width),
    )?;
    Ok((overlay, Some(map)))
}

/// File-name stems for per-image outputs in one folder: the image's stem, with `_2`, `_3`, …
/// when two images share one (the same name in two folders), so no output overwrites another.
#[derive(Debug, Default)]
pub struct OutputNames {
    used: HashSet<String>,
}

impl OutputNames {
    /// Mark `stem` as taken (outputs already in the folder, from an earlier run).
    pub fn reserve(&mut self, stem: impl Into<String>) {
        self.used.insert(stem.into());
    }

    /// A stem for `image` not handed out before.
    pub fn stem(&mut self, image: &Path) -> String {
        let base = image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "image".into());
        let mut stem = base.clone();
        let mut k = 2;
        while !self.used.insert(stem.clone()) {
            stem = format!("{base}_{k}");
            k += 1;
        }
        stem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it_and_matches_the_header() {
        let mut ok = ResultRow::empty(Path::new("a,b.png"), Verdict::Anomalous);
        ok.class = Some("mono".into());
        ok.score = Some(3.0);
        ok.threshold = Some(2.0);
        let bad = ResultRow::failed(Path::new("c.png"), "broken \"header\"\nline 2");
        let csv = to_csv(&[ok, bad]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines[1], "\"a,b.png\",mono,3,2,anomalous,,,,,,");
        assert!(csv.contains("c.png,,,,error,,,,,,\"broken \"\"header\"\"\nline 2\"\n"));
        // The JSON keys are the CSV columns.
        let json =
            serde_json::to_value(ResultRow::empty(Path::new("x"), Verdict::Pending)).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut columns: Vec<&str> = CSV_HEADER.split(',').collect();
        columns.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, columns);
    }

    #[test]
    fn output_stems_never_collide() {
        let mut names = OutputNames::default();
        assert_eq!(names.stem(Path::new("x/a.png")), "a");
        assert_eq!(names.stem(Path::new("y/a.jpg")), "a_2");
        assert_eq!(names.stem(Path::new("a_2.png")), "a_2_2");
        assert_eq!(names.stem(Path::new("z/a.png")), "a_3");
    }
}
