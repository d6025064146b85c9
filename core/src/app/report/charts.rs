//! Charts as SVG markup: ROC and precision–recall curves from scores and labels, and score
//! histograms of normal vs anomalous images with the decision threshold.

use std::fmt::Write;

use super::html::escape;
use crate::eval::ScoreRanking;

/// Chart size in CSS pixels, and the plot area's margins.
const WIDTH: f64 = 320.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 40.0;

/// Series colours (colour-blind-safe order of the Tableau 10 palette).
const COLOURS: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];
const NORMAL: &str = "#4e79a7";
const ANOMALOUS: &str = "#e15759";

/// A curve's points on the unit square.
pub(super) type Curve = Vec<(f64, f64)>;

/// The ROC curve `(false-positive rate, true-positive rate)` from (0, 0) to (1, 1); `None`
/// without both normal and anomalous images.
pub(super) fn roc_points(scores: &[f32], anomalous: &[bool]) -> Option<Curve> {
    let ranking = ScoreRanking::new(scores, anomalous)?;
    let (p, n) = (ranking.positives() as f64, ranking.negatives() as f64);
    if p == 0.0 || n == 0.0 {
        return None;
    }
    let mut points = vec![(0.0, 0.0)];
    points.extend(
        ranking
            .curve()
            .map(|c| (c.false_positives as f64 / n, c.true_positives as f64 / p)),
    );
    Some(points)
}

/// The precision–recall curve `(recall, precision)`, by descending threshold; `None` without
/// anomalous images.
pub(super) fn pr_points(scores: &[f32], anomalous: &[bool]) -> Option<Curve> {
    let ranking = ScoreRanking::new(scores, anomalous)?;
    let p = ranking.positives() as f64;
    if p == 0.0 {
        return None;
    }
    let mut points = Vec::new();
    for c in ranking.curve() {
        let predicted = (c.true_positives + c.false_positives) as f64;
        let recall = c.true_positives as f64 / p;
        let precision = c.true_positives as f64 / predicted;
        if points.is_empty() {
            points.push((0.0, precision));
        }
        points.push((recall, precision));
    }
    Some(points)
}

fn x_px(x: f64, lo: f64, hi: f64) -> f64 {
    LEFT + (x - lo) / (hi - lo).max(f64::MIN_POSITIVE) * (WIDTH - LEFT - RIGHT)
}

fn y_px(y: f64, lo: f64, hi: f64) -> f64 {
    HEIGHT - BOTTOM - (y - lo) / (hi - lo).max(f64::MIN_POSITIVE) * (HEIGHT - TOP - BOTTOM)
}

fn open(svg: &mut String, label: &str) {
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{}\" \
         font-family=\"sans-serif\" font-size=\"10\">",
        escape(label)
    );
}

/// Axes, a grid and tick labels for `[x0, x1] × [y0, y1]`.
fn axes(
    svg: &mut String,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    x_label: &str,
    y_label: &str,
) {
    for i in 0..=5 {
        let f = i as f64 / 5.0;
        let (x, y) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        let (px, py) = (x_px(x, x0, x1), y_px(y, y0, y1));
        let _ = write!(
            svg,
            "<line x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#eee\"/>\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            HEIGHT - BOTTOM,
            WIDTH - RIGHT,
            HEIGHT - BOTTOM + 12.0,
            tick(x),
            LEFT - 4.0,
            py + 3.0,
            tick(y),
        );
    }
    let _ = write!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" \
         stroke=\"#999\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
         <text transform=\"translate(11 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        WIDTH - LEFT - RIGHT,
        HEIGHT - TOP - BOTTOM,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 6.0,
        escape(x_label),
        (TOP + HEIGHT - BOTTOM) / 2.0,
        escape(y_label),
    );
}

fn tick(v: f64) -> String {
    if v.abs() >= 1000.0 || (v != 0.0 && v.abs() < 0.01) {
        format!("{v:.1e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn polyline(svg: &mut String, points: &[(f64, f64)], colour: &str) {
    let coords: Vec<String> = points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", x_px(x, 0.0, 1.0), y_px(y, 0.0, 1.0)))
        .collect();
    let _ = write!(
        svg,
        "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
        coords.join(" ")
    );
}

fn legend(svg: &mut String, entries: &[(String, &str)], right_aligned_bottom: bool) {
    for (i, (name, colour)) in entries.iter().enumerate() {
        let y = if right_aligned_bottom {
            HEIGHT - BOTTOM - 8.0 - 12.0 * (entries.len() - 1 - i) as f64
        } else {
            TOP + 12.0 + 12.0 * i as f64
        };
        let x = WIDTH - RIGHT - 110.0;
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"3\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\">{}</text>",
            y - 4.0,
            x + 14.0,
            escape(name)
        );
    }
}

/// Curves on the unit square, one per named series; `diagonal` draws chance (ROC).
pub(super) fn curve_chart(
    label: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    diagonal: bool,
) -> String {
    let mut svg = String::new();
    open(&mut svg, label);
    axes(&mut svg, (0.0, 1.0), (0.0, 1.0), x_label, y_label);
    if diagonal {
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{TOP}\" stroke=\"#bbb\" \
             stroke-dasharray=\"4 3\"/>",
            HEIGHT - BOTTOM,
            WIDTH - RIGHT
        );
    }
    let mut entries = Vec::new();
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        polyline(&mut svg, points, colour);
        entries.push((name.clone(), colour));
    }
    legend(&mut svg, &entries, diagonal);
    svg.push_str("</svg>");
    svg
}

/// Histograms of score series (normal first, then anomalous, in their colours) on shared bins,
/// with the threshold as a line.
pub(super) fn histogram_chart(
    label: &str,
    series: &[(String, Vec<f32>)],
    threshold: Option<f32>,
) -> String {
    const BINS: usize = 30;
    let finite = series
        .iter()
        .flat_map(|(_, v)| v)
        .chain(threshold.as_ref())
        .filter(|v| v.is_finite());
    let (mut lo, mut hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
        (a.min(v as f64), b.max(v as f64))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let width = (hi - lo) / BINS as f64;
    let counts: Vec<[usize; BINS]> = series
        .iter()
        .map(|(_, values)| {
            let mut bins = [0usize; BINS];
            for &v in values.iter().filter(|v| v.is_finite()) {
                let b = (((v as f64 - lo) / width) as usize).min(BINS - 1);
                bins[b] += 1;
            }
            bins
        })
        .collect();
    let top = counts.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let mut svg = String::new();
    open(&mut svg, label);
    axes(&mut svg, (lo, hi), (0.0, top), "image score", "images");
    let colours = [NORMAL, ANOMALOUS];
    for (bins, colour) in counts.iter().zip(colours) {
        for (i, &c) in bins.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let x0 = x_px(lo + i as f64 * width, lo, hi);
            let x1 = x_px(lo + (i + 1) as f64 * width, lo, hi);
            let y = y_px(c as f64, 0.0, top);
            let _ = write!(
                svg,
                "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
                 fill=\"{colour}\" fill-opacity=\"0.55\"/>",
                (x1 - x0).max(0.5),
                HEIGHT - BOTTOM - y
            );
        }
    }
    if let Some(t) = threshold.filter(|t| t.is_finite()) {
        let x = x_px(t as f64, lo, hi);
        let _ = write!(
            svg,
            // The label runs up the line from the bottom, clear of the legend at the top.
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#222\" \
             stroke-dasharray=\"5 3\"/><text transform=\"translate({:.1} {:.1}) rotate(-90)\">\
             threshold {}</text>",
            HEIGHT - BOTTOM,
            x - 3.0,
            HEIGHT - BOTTOM - 4.0,
            tick(t as f64)
        );
    }
    let entries: Vec<(String, &str)> = series
        .iter()
        .zip(colours)
        .map(|((name, values), colour)| (format!("{name} ({})", values.len()), colour))
        .collect();
    legend(&mut svg, &entries, false);
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the definitions, by hand: scores 4 3 2 1 with labels A N A N.
    #[test]
    fn curves_follow_the_definitions() {
        let scores = [4.0, 3.0, 2.0, 1.0];
        let labels = [true, false, true, false];
        let roc = roc_points(&scores, &labels).unwrap();
        assert_eq!(
            roc,
            [(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        let pr = pr_points(&scores, &labels).unwrap();
        assert_eq!(
            pr,
            [
                (0.0, 1.0),
                (0.5, 1.0),
                (0.5, 0.5),
                (1.0, 2.0 / 3.0),
                (1.0, 0.5)
            ]
        );
        assert!(roc_points(&scores, &[false; 4]).is_none());
        assert!(pr_points(&scores, &[false; 4]).is_none());
    }

    #[test]
    fn histogram_counts_every_finite_score_once() {
        let series = [
            ("normal".to_string(), vec![1.0, 1.1, 1.2, 5.0]),
            ("anomalous".to_string(), vec![4.0, 4.5, f32::NAN]),
        ];
        let svg = histogram_chart("h", &series, Some(3.0));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("threshold 3"));
        // 30 bins over [1, 5] are 0.133 wide: 1.0 and 1.1 share the first, 1.2 is in the
        // second, 5.0 in the last (3 normal bars); 4.0 and 4.5 one each; NaN in none.
        assert_eq!(svg.matches("fill=\"#4e79a7\" fill-opacity").count(), 3);
        assert_eq!(svg.matches("fill=\"#e15759\" fill-opacity").count(), 2);
    }
}
