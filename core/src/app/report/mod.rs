//! Reports a quality engineer can read without Python: one self-contained HTML file (inline
//! SVG charts, images as data URIs, no script, nothing fetched) with the metrics per class,
//! ROC and precision–recall curves, score histograms with the threshold, and galleries of the
//! images that matter most (the worst false positives and false negatives, or the most
//! anomalous), each an overlay with the defect's outline where a mask exists.
//!
//! [`Report`] is the document; [`evaluation_report`] and [`predict_report`] build it from what
//! `hvq eval` and `hvq predict` computed.

mod build;
mod charts;
mod html;
mod thumbnail;

pub use build::{GALLERY_SIZE, MostAnomalous, evaluation_report, predict_report};
pub use thumbnail::{THUMBNAIL_SIDE, Thumbnail};

use std::path::Path;

use crate::error::Result;

/// A report: a title, facts about the run, and sections in order.
#[derive(Clone, Debug)]
pub struct Report {
    /// Heading and the page's title.
    pub title: String,
    /// Facts shown under the title (model, data, device, threshold, date).
    pub facts: Vec<(String, String)>,
    /// The body.
    pub sections: Vec<Section>,
}

/// One part of a report.
#[derive(Clone, Debug)]
pub enum Section {
    /// A table with a header row.
    Table {
        /// Heading.
        title: String,
        /// Column names.
        header: Vec<String>,
        /// Cells, row by row.
        rows: Vec<Vec<String>>,
    },
    /// Charts side by side, each an SVG document with a caption.
    Charts {
        /// Heading.
        title: String,
        /// `(caption, svg)` pairs.
        charts: Vec<(String, String)>,
    },
    /// Images with captions.
    Gallery {
        /// Heading.
        title: String,
        /// A sentence under the heading (what is shown and why).
        note: String,
        /// The images.
        items: Vec<Thumbnail>,
    },
}

impl Report {
    /// The whole page.
    pub fn to_html(&self) -> String {
        html::render(self)
    }

    /// Write the page atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::fs::write_atomic(path, self.to_html().as_bytes())
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC` (for a report's facts).
pub fn generated_at() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_day_counts() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_788), (2026, 12, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
