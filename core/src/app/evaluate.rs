//! Running a model over a dataset's test split and computing the field's metrics per class.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::inspect::{ClassChoice, Inspector, MapResolution};
use crate::data::{Dataset, Sample, ScoreKind};
use crate::device::read_back;
use crate::error::{HvqError, Result};
use crate::eval::{ClassMetrics, PixelData, evaluate_class, mean_metrics};

/// How the class (codebooks + expert) of a test image is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassSource {
    /// The ground-truth class, as the released code does at test time.
    Label,
    /// The class whose model reconstructs the image best (no label needed).
    Auto,
}

/// One test image's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageResult {
    /// Sample id.
    pub id: String,
    /// Ground-truth class.
    pub class: String,
    /// Class used for scoring.
    pub used_class: String,
    /// Image score.
    pub score: f32,
    /// Ground truth.
    pub anomalous: bool,
}

/// Metrics per class and their mean, plus every image's score.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Evaluation {
    /// Per class.
    pub classes: BTreeMap<String, ClassMetrics>,
    /// Unweighted mean over classes.
    pub mean: ClassMetrics,
    /// How classes were chosen.
    pub class_source: ClassSource,
    /// Fraction of normal test images whose class the model picks correctly: its classifier's
    /// choice when it has one, else the Auto choice; absent for Label without a classifier.
    pub class_accuracy: Option<f64>,
    /// Every test image.
    pub images: Vec<ImageResult>,
}

/// Score every test image and compute the metrics. Semantic datasets (one "class" per normal
/// category, anomalies from other categories) are scored with [`ClassSource::Auto`] and reported
/// as a single group, as UniAD reports CIFAR-10.
///
/// Pixel metrics compare maps and masks at `pixel_size`² (default: the model's input size, as
/// the field reports MVTec-AD; a larger size keeps small defects of high-resolution photos).
/// A tiled model inspects each test image tiled (`crate::tiling`), as it inspects any photo.
pub fn evaluate(
    inspector: &Inspector,
    dataset: &Dataset,
    source: ClassSource,
    batch: usize,
    pixel_size: Option<usize>,
    progress: &mut dyn FnMut(usize),
) -> Result<Evaluation> {
    let detector = &inspector.detector;
    let device = inspector.device();
    if dataset.test.is_empty() {
        return Err(HvqError::Dataset(format!(
            "{}: no test images",
            dataset.name
        )));
    }
    let names = &detector.config.hvq.class_names;
    if names != &dataset.class_names {
        return Err(HvqError::Dataset(format!(
            "the model knows classes {names:?}, the dataset has {:?}",
            dataset.class_names
        )));
    }
    let semantic = dataset.score_kind == ScoreKind::Mean;
    let source = if semantic { ClassSource::Auto } else { source };
    let size = detector.config.backbone.input_size;
    let n_classes = detector.config.hvq.num_classes;

    let pixel = pixel_size.unwrap_or(size);
    if !(1..=4096).contains(&pixel) {
        return Err(HvqError::Config(format!(
            "pixel size {pixel} is outside 1..=4096"
        )));
    }
    let mut scores = Vec::with_capacity(dataset.test.len());
    let mut used = Vec::with_capacity(dataset.test.len());
    let mut maps: Vec<Vec<f32>> = Vec::new();
    let mut predicted: Vec<usize> = Vec::new();
    if detector.tiling.is_some() {
        for (done, sample) in dataset.test.iter().enumerate() {
            let class = match source {
                ClassSource::Label => ClassChoice::Index(sample.class),
                ClassSource::Auto => ClassChoice::Auto,
            };
            let img = sample.load_image()?;
            let r = inspector.inspect_at(&img, &class, MapResolution::Model)?;
            if dataset.has_masks {
                let dims = (r.model_width, r.model_height);
                maps.push(crate::overlay::resize_map(
                    &r.model_map,
                    dims,
                    (pixel, pixel),
                ));
            }
            scores.push(r.score);
            used.push(r.class_index);
            progress(done + 1);
        }
    } else {
        let mut done = 0;
        for chunk in dataset.test.chunks(batch.max(1)) {
            let inputs = crate::features::input_batch(chunk, &detector.config.backbone, device)?;
            let feats = detector.features(inputs);
            let fixed: Vec<Option<usize>> = match source {
                ClassSource::Label => chunk.iter().map(|s| Some(s.class)).collect(),
                ClassSource::Auto => vec![None; chunk.len()],
            };
            let chosen =
                block_on(detector.score_choosing(feats.clone(), &fixed, dataset.score_kind))?;
            // The classifier's accuracy is reported under either source.
            let classifier = match (&chosen.predicted, source) {
                (Some(p), _) => Some(p.clone()),
                (None, ClassSource::Label) => block_on(detector.predicted_classes(feats))?,
                (None, ClassSource::Auto) => None,
            };
            predicted.extend(classifier.unwrap_or_default());
            if dataset.has_masks {
                let pixels = size * size;
                let values = read_back(chosen.maps)?;
                maps.extend(values.chunks(pixels).map(|m| {
                    if pixel == size {
                        m.to_vec()
                    } else {
                        crate::overlay::resize_map(m, (size, size), (pixel, pixel))
                    }
                }));
            }
            scores.extend(chosen.scores);
            used.extend(chosen.classes);
            done += chunk.len();
            progress(done);
        }
    }
    debug_assert!(used.iter().all(|&c| c < n_classes));

    let images: Vec<ImageResult> = dataset
        .test
        .iter()
        .zip(scores.iter().zip(&used))
        .map(|(s, (&score, &u))| ImageResult {
            id: s.id.clone(),
            class: names[s.class].clone(),
            used_class: names[u].clone(),
            score,
            anomalous: s.anomalous,
        })
        .collect();
    let normals: Vec<usize> = (0..dataset.test.len())
        .filter(|&i| !dataset.test[i].anomalous)
        .collect();
    // Accuracy of the class choice on normal test images (anomalies of semantic datasets belong
    // to no known class): the classifier's when there is one, else Auto's.
    let chosen: Option<&[usize]> = if !predicted.is_empty() {
        Some(&predicted)
    } else if source == ClassSource::Auto {
        Some(&used)
    } else {
        None
    };
    let class_accuracy = chosen.filter(|_| !normals.is_empty()).map(|c| {
        normals
            .iter()
            .filter(|&&i| c[i] == dataset.test[i].class)
            .count() as f64
            / normals.len() as f64
    });

    // Groups: per class, or one group for semantic datasets (anomalies belong to no class).
    let groups: Vec<(String, Vec<usize>)> = if semantic {
        vec![("all".to_string(), (0..dataset.test.len()).collect())]
    } else {
        (0..n_classes)
            .map(|c| {
                (
                    names[c].clone(),
                    (0..dataset.test.len())
                        .filter(|&i| dataset.test[i].class == c)
                        .collect(),
                )
            })
            .filter(|(_, idx): &(String, Vec<usize>)| !idx.is_empty())
            .collect()
    };
    let mut classes = BTreeMap::new();
    for (name, idx) in groups {
        let s: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
        let l: Vec<bool> = idx.iter().map(|&i| dataset.test[i].anomalous).collect();
        let masks: Vec<Vec<bool>> = if dataset.has_masks {
            idx.iter()
                .map(|&i| mask_at(&dataset.test[i], pixel))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let map_refs: Vec<&[f32]> = idx
            .iter()
            .filter_map(|&i| maps.get(i).map(|m| m.as_slice()))
            .collect();
        let mask_refs: Vec<&[bool]> = masks.iter().map(|m| m.as_slice()).collect();
        let pixels = dataset.has_masks.then_some(PixelData {
            maps: &map_refs,
            masks: &mask_refs,
            width: pixel,
            height: pixel,
        });
        let m = evaluate_class(&name, &s, &l, pixels).ok_or_else(|| {
            HvqError::Dataset(format!(
                "class {name}: metrics undefined (the test split needs both normal and anomalous images)"
            ))
        })?;
        classes.insert(name, m);
    }
    let list: Vec<ClassMetrics> = classes.values().cloned().collect();
    Ok(Evaluation {
        mean: mean_metrics(&list),
        classes,
        class_source: source,
        class_accuracy,
        images,
    })
}

fn mask_at(sample: &Sample, size: usize) -> Result<Vec<bool>> {
    Ok(match sample.load_mask(size as u32, size as u32)? {
        Some(m) => m.pixels().map(|p| p.0[0] > 0).collect(),
        None => vec![false; size * size],
    })
}

/// Run a future to completion on this thread (native backends block on read-backs; the CPU
/// backend never waits).
fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    burn::tensor::try_read_sync(future).unwrap_or_else(|| {
        Err(HvqError::Device(
            "this backend cannot read results synchronously here".into(),
        ))
    })
}
