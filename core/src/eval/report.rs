//! A plain-text table of per-class metrics, for terminals and logs.

use std::fmt::Write;

use super::class_metrics::{ClassMetrics, mean_metrics};

/// Column headers, in the order of [`row_values`].
const HEADERS: [&str; 6] = ["I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "AUPRO"];

/// The metrics of one row, in the order of [`HEADERS`]; `None` = absent.
fn row_values(m: &ClassMetrics) -> [Option<f64>; 6] {
    [
        Some(m.image_auroc),
        Some(m.image_ap),
        Some(m.image_f1_max),
        m.pixel_auroc,
        m.pixel_ap,
        m.aupro,
    ]
}

/// A percentage with one decimal, or `-` for an absent (or non-finite) value.
fn cell(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{:.1}", 100.0 * v),
        _ => "-".to_string(),
    }
}

/// Formats `classes` as an aligned text table: one row per class, then a `mean` row (from
/// [`mean_metrics`]); columns are the metrics as percentages with one decimal, `-` where absent.
/// Every line ends with a newline.
pub fn format_table(classes: &[ClassMetrics]) -> String {
    let mean = mean_metrics(classes);
    let rows: Vec<&ClassMetrics> = classes.iter().chain(std::iter::once(&mean)).collect();
    let name_width = rows
        .iter()
        .map(|m| m.class.chars().count())
        .chain(std::iter::once("class".len()))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    // `write!` into a String cannot fail; the results are ignored for that reason.
    let _ = write!(out, "{:<name_width$}", "class");
    for h in HEADERS {
        let _ = write!(out, "  {h:>7}");
    }
    out.push('\n');
    let rule = name_width + HEADERS.len() * 9;
    let separator = "-".repeat(rule);
    for (i, m) in rows.iter().enumerate() {
        // A rule under the header and above the mean row.
        if i == 0 || i == rows.len() - 1 {
            out.push_str(&separator);
            out.push('\n');
        }
        let _ = write!(out, "{:<name_width$}", m.class);
        for v in row_values(m) {
            let _ = write!(out, "  {:>7}", cell(v));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_layout() {
        let a = ClassMetrics {
            class: "bottle".into(),
            image_auroc: 1.0,
            image_ap: 0.9876,
            image_f1_max: 0.5,
            pixel_auroc: Some(0.98),
            pixel_ap: None,
            aupro: Some(0.9),
        };
        let b = ClassMetrics {
            class: "cable".into(),
            pixel_auroc: None,
            aupro: Some(0.8),
            ..a.clone()
        };
        let table = format_table(&[a, b]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 6, "{table}");
        assert_eq!(
            lines[0],
            "class   I-AUROC     I-AP  I-F1max  P-AUROC     P-AP    AUPRO"
        );
        assert_eq!(
            lines[2],
            "bottle    100.0     98.8     50.0     98.0        -     90.0"
        );
        assert_eq!(
            lines[5],
            "mean      100.0     98.8     50.0     98.0        -     85.0"
        );
    }
}
