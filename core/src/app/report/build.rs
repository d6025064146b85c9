//! Reports from what `hvq eval` and `hvq predict` computed.

use super::charts::{Curve, curve_chart, histogram_chart, pr_points, roc_points};
use super::thumbnail::{THUMBNAIL_SIDE, Thumbnail};
use super::{Report, Section};
use crate::app::evaluate::{Evaluation, ImageResult};
use crate::app::inspect::{ClassChoice, Inspector, MapResolution};
use crate::app::results::ResultRow;
use crate::app::verdict::Verdict;
use crate::data::Dataset;
use crate::error::Result;

/// Images per gallery.
pub const GALLERY_SIZE: usize = 8;

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{:.1}", v * 100.0))
}

/// The report of an evaluation: metrics per class, ROC and PR curves per class, score
/// histograms with the model's threshold, and the worst false positives and false negatives
/// at that threshold (without one: the highest-scoring normal and lowest-scoring anomalous
/// images), re-inspected to show their overlays, with the defect's outline where the dataset
/// has masks.
pub fn evaluation_report(
    evaluation: &Evaluation,
    dataset: &Dataset,
    inspector: &Inspector,
    facts: Vec<(String, String)>,
) -> Result<Report> {
    let threshold = inspector.detector.calibration.as_ref().map(|c| c.threshold);
    let images = &evaluation.images;
    // Groups as the metrics have them: per class, or "all" for semantic datasets.
    let group_of = |name: &str| -> Vec<usize> {
        (0..images.len())
            .filter(|&i| name == "all" || images[i].class == name)
            .collect()
    };
    let groups: Vec<(String, Vec<usize>)> = evaluation
        .classes
        .keys()
        .map(|name| (name.clone(), group_of(name)))
        .collect();

    let mut header: Vec<String> = [
        "class",
        "normal",
        "anomalous",
        "image AUROC %",
        "image AP %",
        "image F1-max %",
        "pixel AUROC %",
        "AUPRO %",
    ]
    .map(String::from)
    .to_vec();
    if threshold.is_some() {
        header.extend(["false positives", "false negatives"].map(String::from));
    }
    let mut rows = Vec::new();
    let mut add_row = |name: &str, idx: &[usize], m: &crate::eval::ClassMetrics| {
        let anomalous = idx.iter().filter(|&&i| images[i].anomalous).count();
        let mut row = vec![
            name.to_string(),
            (idx.len() - anomalous).to_string(),
            anomalous.to_string(),
            percent(Some(m.image_auroc)),
            percent(Some(m.image_ap)),
            percent(Some(m.image_f1_max)),
            percent(m.pixel_auroc),
            percent(m.aupro),
        ];
        if let Some(t) = threshold {
            let fp = idx
                .iter()
                .filter(|&&i| !images[i].anomalous && images[i].score > t)
                .count();
            let fn_ = idx
                .iter()
                .filter(|&&i| images[i].anomalous && images[i].score <= t)
                .count();
            row.extend([fp.to_string(), fn_.to_string()]);
        }
        rows.push(row);
    };
    for (name, idx) in &groups {
        add_row(name, idx, &evaluation.classes[name]);
    }
    if groups.len() > 1 {
        let all: Vec<usize> = (0..images.len()).collect();
        add_row("mean", &all, &evaluation.mean);
    }

    let series = |points: fn(&[f32], &[bool]) -> Option<Curve>| {
        groups
            .iter()
            .filter_map(|(name, idx)| {
                let scores: Vec<f32> = idx.iter().map(|&i| images[i].score).collect();
                let labels: Vec<bool> = idx.iter().map(|&i| images[i].anomalous).collect();
                points(&scores, &labels).map(|p| (name.clone(), p))
            })
            .collect::<Vec<_>>()
    };
    let curves = vec![
        (
            "ROC: detection rate against false-alarm rate over every threshold (dashed: chance)"
                .to_string(),
            curve_chart(
                "ROC curves",
                "false-positive rate",
                "true-positive rate",
                &series(roc_points),
                true,
            ),
        ),
        (
            "Precision–recall: of the images flagged, the fraction truly defective".to_string(),
            curve_chart(
                "Precision–recall curves",
                "recall",
                "precision",
                &series(pr_points),
                false,
            ),
        ),
    ];
    let histogram = |name: &str, idx: &[usize]| {
        let pick = |anomalous: bool| -> Vec<f32> {
            idx.iter()
                .filter(|&&i| images[i].anomalous == anomalous)
                .map(|&i| images[i].score)
                .collect()
        };
        let series = [
            ("normal".to_string(), pick(false)),
            ("anomalous".to_string(), pick(true)),
        ];
        (
            format!("{name}: scores of normal and anomalous test images"),
            histogram_chart(&format!("{name} score histogram"), &series, threshold),
        )
    };
    let mut histograms = Vec::new();
    if groups.len() > 1 {
        let all: Vec<usize> = (0..images.len()).collect();
        histograms.push(histogram("all classes", &all));
    }
    for (name, idx) in &groups {
        histograms.push(histogram(name, idx));
    }

    let mut sections = vec![
        Section::Table {
            title: "Metrics".into(),
            header,
            rows,
        },
        Section::Charts {
            title: "Curves".into(),
            charts: curves,
        },
        Section::Charts {
            title: "Score distributions".into(),
            charts: histograms,
        },
    ];
    let (fp_title, fp_note, fps) = worst(images, false, threshold);
    let (fn_title, fn_note, fns) = worst(images, true, threshold);
    for (title, note, picked) in [(fp_title, fp_note, fps), (fn_title, fn_note, fns)] {
        let items = picked
            .iter()
            .map(|&i| gallery_item(&images[i], dataset, i, inspector))
            .collect::<Result<Vec<_>>>()?;
        sections.push(Section::Gallery { title, note, items });
    }
    Ok(Report {
        title: format!("hvq evaluation: {}", dataset.name),
        facts,
        sections,
    })
}

/// The gallery of the worst errors of one kind: false negatives (`anomalous`) or false positives,
/// worst first; without a threshold, or without any error, the images nearest to being one.
fn worst(
    images: &[ImageResult],
    anomalous: bool,
    threshold: Option<f32>,
) -> (String, String, Vec<usize>) {
    let mut idx: Vec<usize> = (0..images.len())
        .filter(|&i| images[i].anomalous == anomalous)
        .collect();
    // Anomalous images: lowest score first; normal ones: highest first.
    idx.sort_by(|&a, &b| {
        let (sa, sb) = (images[a].score, images[b].score);
        if anomalous {
            sa.total_cmp(&sb)
        } else {
            sb.total_cmp(&sa)
        }
    });
    let wrong = |i: &usize| {
        threshold.is_some_and(|t| {
            if anomalous {
                images[*i].score <= t
            } else {
                images[*i].score > t
            }
        })
    };
    let errors = idx.iter().filter(|i| wrong(i)).count();
    let kind = if anomalous {
        "false negatives"
    } else {
        "false positives"
    };
    let nearest = if anomalous {
        "lowest-scoring anomalous images"
    } else {
        "highest-scoring normal images"
    };
    let (title, note) = match threshold {
        Some(t) if errors > 0 => (
            format!("Worst {kind}"),
            format!(
                "{errors} {kind} at threshold {t}; the {} worst shown, worst first.",
                errors.min(GALLERY_SIZE)
            ),
        ),
        Some(t) => (
            format!("No {kind}"),
            format!("None at threshold {t}; the {nearest} shown instead."),
        ),
        None => (
            format!("The {nearest}"),
            "The model has no threshold (calibrate it): the images nearest to a mistake shown."
                .into(),
        ),
    };
    let take = if errors > 0 {
        errors.min(GALLERY_SIZE)
    } else {
        GALLERY_SIZE
    };
    idx.truncate(take);
    (title, note, idx)
}

fn gallery_item(
    result: &ImageResult,
    dataset: &Dataset,
    index: usize,
    inspector: &Inspector,
) -> Result<Thumbnail> {
    let sample = &dataset.test[index];
    let photo = sample.load_image()?;
    let inspection = inspector.inspect_at(
        &photo,
        &ClassChoice::Name(result.used_class.clone()),
        MapResolution::Model,
    )?;
    let mask = match &sample.mask {
        Some(path) => Some(crate::preprocess::load(path)?.to_luma8()),
        None => None,
    };
    let truth = if result.anomalous {
        format!("anomalous ({})", sample.defect)
    } else {
        "normal".into()
    };
    let caption = format!(
        "{} · {truth} · class {} · score {:.4}",
        result.id, result.used_class, result.score
    );
    Thumbnail::overlay(&photo, &inspection, mask.as_ref(), THUMBNAIL_SIDE, caption)
}

/// The most anomalous images of a run, kept while it goes: thumbnails are made only for images
/// that enter the top [`GALLERY_SIZE`].
#[derive(Debug, Default)]
pub struct MostAnomalous {
    items: Vec<(f32, Thumbnail)>,
}

impl MostAnomalous {
    /// Offer an image with its score; `thumbnail` is called only if it makes the gallery.
    pub fn offer(
        &mut self,
        score: f32,
        thumbnail: impl FnOnce() -> Result<Thumbnail>,
    ) -> Result<()> {
        if !score.is_finite() {
            return Ok(());
        }
        let lowest = self.items.last().map(|(s, _)| *s);
        if self.items.len() >= GALLERY_SIZE && lowest.is_some_and(|l| score <= l) {
            return Ok(());
        }
        self.items.push((score, thumbnail()?));
        self.items.sort_by(|a, b| b.0.total_cmp(&a.0));
        self.items.truncate(GALLERY_SIZE);
        Ok(())
    }
}

/// The report of a `hvq predict` run: counts per verdict, the score histogram with the
/// threshold, the most anomalous images, every image's row, and the errors.
pub fn predict_report(
    rows: &[ResultRow],
    most_anomalous: MostAnomalous,
    threshold: Option<f32>,
    facts: Vec<(String, String)>,
) -> Report {
    let count = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
    let verdicts = [
        Verdict::Normal,
        Verdict::Anomalous,
        Verdict::Uncalibrated,
        Verdict::Error,
    ];
    let summary = verdicts
        .iter()
        .map(|&v| vec![v.as_str().to_string(), count(v).to_string()])
        .filter(|row| row[1] != "0")
        .collect();
    let scores: Vec<f32> = rows.iter().filter_map(|r| r.score).collect();
    let mut sections = vec![
        Section::Table {
            title: "Verdicts".into(),
            header: vec!["verdict".into(), "images".into()],
            rows: summary,
        },
        Section::Charts {
            title: "Score distribution".into(),
            charts: vec![(
                "Scores of the inspected images; above the threshold is anomalous".into(),
                histogram_chart("score histogram", &[("images".into(), scores)], threshold),
            )],
        },
        Section::Gallery {
            title: "Most anomalous".into(),
            note: format!(
                "The {} highest-scoring images, highest first.",
                most_anomalous.items.len()
            ),
            items: most_anomalous.items.into_iter().map(|(_, t)| t).collect(),
        },
    ];
    let mut by_score: Vec<&ResultRow> = rows.iter().filter(|r| r.error.is_none()).collect();
    by_score.sort_by(|a, b| {
        b.score
            .unwrap_or(f32::MIN)
            .total_cmp(&a.score.unwrap_or(f32::MIN))
    });
    sections.push(Section::Table {
        title: "Images, highest score first".into(),
        header: ["image", "class", "score", "verdict"]
            .map(String::from)
            .to_vec(),
        rows: by_score
            .iter()
            .map(|r| {
                vec![
                    r.image.clone(),
                    r.class.clone().unwrap_or_default(),
                    r.score.map(|s| format!("{s:.4}")).unwrap_or_default(),
                    r.verdict.as_str().to_string(),
                ]
            })
            .collect(),
    });
    let errors: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| vec![r.image.clone(), e.clone()]))
        .collect();
    if !errors.is_empty() {
        sections.push(Section::Table {
            title: "Images that could not be inspected".into(),
            header: vec!["image".into(), "error".into()],
            rows: errors,
        });
    }
    Report {
        title: "hvq inspection".into(),
        facts,
        sections,
    }
}
