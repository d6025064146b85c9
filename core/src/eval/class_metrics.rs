//! The metrics reported for one class of a benchmark, and their mean over classes.

use serde::{Deserialize, Serialize};

use super::pro::{DEFAULT_FPR_LIMIT, aupro};
use super::ranking::ScoreRanking;

/// The evaluation of one class: image-level detection and, when ground-truth masks are
/// available, pixel-level localisation. Every value is a fraction in `[0, 1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class name (`"mean"` for the average over classes).
    pub class: String,
    /// Image AUROC (scikit-learn `roc_auc_score` of image scores).
    pub image_auroc: f64,
    /// Image average precision.
    pub image_ap: f64,
    /// Best image F1 over thresholds.
    pub image_f1_max: f64,
    /// Pixel AUROC over all pixels of all test images; absent without masks.
    #[serde(default)]
    pub pixel_auroc: Option<f64>,
    /// Pixel average precision; absent without masks.
    #[serde(default)]
    pub pixel_ap: Option<f64>,
    /// AUPRO up to 30% FPR, normalised; absent without masks or without any defect region.
    #[serde(default)]
    pub aupro: Option<f64>,
}

/// Anomaly maps and ground-truth masks of a class's test images, all `width`×`height`,
/// row-major, one map and one mask per image.
#[derive(Debug, Clone, Copy)]
pub struct PixelData<'a> {
    /// Anomaly maps (higher = more anomalous).
    pub maps: &'a [&'a [f32]],
    /// Ground-truth masks (`true` = defect); all `false` for a good image.
    pub masks: &'a [&'a [bool]],
    /// Map width in pixels.
    pub width: usize,
    /// Map height in pixels.
    pub height: usize,
}

impl PixelData<'_> {
    /// Pixel AUROC and AP from one ranking of all pixels; `None` for mismatched sizes or NaN.
    fn auroc_ap(&self) -> (Option<f64>, Option<f64>) {
        let pixels = self.width.checked_mul(self.height);
        let consistent = self.maps.len() == self.masks.len()
            && self
                .maps
                .iter()
                .zip(self.masks)
                .all(|(m, k)| Some(m.len()) == pixels && Some(k.len()) == pixels);
        if !consistent {
            return (None, None);
        }
        let pairs = self
            .maps
            .iter()
            .zip(self.masks)
            .flat_map(|(map, mask)| map.iter().copied().zip(mask.iter().copied()));
        match ScoreRanking::from_pairs(pairs) {
            Some(ranking) => (ranking.auroc(), ranking.average_precision()),
            None => (None, None),
        }
    }
}

/// Evaluates one class: image scores with their labels (`true` = anomalous image) and,
/// optionally, the pixel maps with their masks.
///
/// `None` when the image metrics are undefined: only one kind of image, mismatched lengths or a
/// NaN score. Pixel metrics that are undefined (no defect pixel, inconsistent sizes, NaN) are
/// left absent rather than failing the whole class.
pub fn evaluate_class(
    class: &str,
    image_scores: &[f32],
    image_labels: &[bool],
    pixels: Option<PixelData<'_>>,
) -> Option<ClassMetrics> {
    let images = ScoreRanking::new(image_scores, image_labels)?;
    let (pixel_auroc, pixel_ap) = pixels.map_or((None, None), |p| p.auroc_ap());
    let aupro = pixels.and_then(|p| aupro(p.maps, p.masks, p.width, p.height, DEFAULT_FPR_LIMIT));
    Some(ClassMetrics {
        class: class.to_string(),
        image_auroc: images.auroc()?,
        image_ap: images.average_precision()?,
        image_f1_max: images.f1_max()?.0,
        pixel_auroc,
        pixel_ap,
        aupro,
    })
}

/// Mean of the values present.
fn mean_of(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, count) = values.fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    (count > 0).then(|| sum / count as f64)
}

/// The unweighted mean over classes of each metric (benchmarks average classes, not images),
/// named `"mean"`. An optional metric is averaged over the classes that have it, and absent if
/// none has; the image metrics of an empty slice are NaN.
pub fn mean_metrics(classes: &[ClassMetrics]) -> ClassMetrics {
    let image = |f: fn(&ClassMetrics) -> f64| mean_of(classes.iter().map(f)).unwrap_or(f64::NAN);
    let pixel = |f: fn(&ClassMetrics) -> Option<f64>| mean_of(classes.iter().filter_map(f));
    ClassMetrics {
        class: "mean".to_string(),
        image_auroc: image(|m| m.image_auroc),
        image_ap: image(|m| m.image_ap),
        image_f1_max: image(|m| m.image_f1_max),
        pixel_auroc: pixel(|m| m.pixel_auroc),
        pixel_ap: pixel(|m| m.pixel_ap),
        aupro: pixel(|m| m.aupro),
    }
}
