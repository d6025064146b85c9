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
    /// Codes in use per VQ level of the model evaluated (level 1 first, mean over the level's
    /// codebooks; `HvqModel::codes_in_use`): a collapsed codebook (one or two codes) caps what
    /// the model can reconstruct.
    #[serde(default)]
    pub codes_in_use: Vec<f64>,
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
    evaluate_sharded(
        std::slice::from_ref(inspector),
        dataset,
        source,
        batch,
        pixel_size,
        progress,
    )
}

/// [`evaluate`] with the test split cut into contiguous shards, one per inspector (the same
/// model on different devices), scored in parallel, one thread each; the results are joined in
/// the test split's order, so the metrics are those of one device up to float rounding.
pub fn evaluate_sharded(
    inspectors: &[Inspector],
    dataset: &Dataset,
    source: ClassSource,
    batch: usize,
    pixel_size: Option<usize>,
    progress: &mut dyn FnMut(usize),
) -> Result<Evaluation> {
    let Some(first) = inspectors.first() else {
        return Err(HvqError::Config("evaluation on no device".into()));
    };
    let detector = &first.detector;
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
    let n_classes = detector.config.hvq.num_classes;

    let pixel = pixel_size.unwrap_or(detector.config.backbone.input_size);
    if !(1..=4096).contains(&pixel) {
        return Err(HvqError::Config(format!(
            "pixel size {pixel} is outside 1..=4096"
        )));
    }
    let job = ScoreJob {
        dataset,
        source,
        batch: batch.max(1),
        pixel,
    };
    let sizes = crate::device::shard_sizes(dataset.test.len(), inspectors.len());
    let mut ranges = Vec::with_capacity(sizes.len());
    let mut start = 0;
    for size in sizes {
        ranges.push(start..start + size);
        start += size;
    }
    let done = std::sync::atomic::AtomicUsize::new(0);
    let scored: Vec<Result<Scored>> = std::thread::scope(|scope| {
        let others: Vec<_> = inspectors[1..]
            .iter()
            .zip(&ranges[1.min(ranges.len())..])
            .map(|(inspector, range)| {
                let (job, done) = (&job, &done);
                let range = range.clone();
                scope.spawn(move || job.score(inspector, range, done, &mut |_| {}))
            })
            .collect();
        // Shard 0 on this thread, which reports the progress of all shards.
        let mut all = vec![job.score(first, ranges[0].clone(), &done, progress)];
        all.extend(others.into_iter().map(|h| {
            h.join().unwrap_or_else(|_| {
                Err(HvqError::Device(
                    "a device's evaluation thread panicked".into(),
                ))
            })
        }));
        all
    });
    let mut scores = Vec::with_capacity(dataset.test.len());
    let mut used = Vec::with_capacity(dataset.test.len());
    let mut maps: Vec<Vec<f32>> = Vec::new();
    let mut predicted: Vec<usize> = Vec::new();
    for part in scored {
        let part = part?;
        scores.extend(part.scores);
        used.extend(part.used);
        maps.extend(part.maps);
        predicted.extend(part.predicted);
    }
    progress(dataset.test.len());
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
        codes_in_use: detector.hvq.codes_in_use()?,
        images,
    })
}

/// What evaluation needs to score a range of test images.
struct ScoreJob<'a> {
    dataset: &'a Dataset,
    source: ClassSource,
    batch: usize,
    pixel: usize,
}

/// The scores of a range of test images.
#[derive(Default)]
struct Scored {
    scores: Vec<f32>,
    used: Vec<usize>,
    /// Maps at `pixel`², when the dataset has masks.
    maps: Vec<Vec<f32>>,
    /// The classifier's class per image, when it has one (or Label's choice can be asked).
    predicted: Vec<usize>,
}

impl ScoreJob<'_> {
    /// Score the test images `range` with `inspector`, adding each image done to `done` and
    /// reporting its new value to `progress`.
    fn score(
        &self,
        inspector: &Inspector,
        range: std::ops::Range<usize>,
        done: &std::sync::atomic::AtomicUsize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Scored> {
        use std::sync::atomic::Ordering;
        let (dataset, source, pixel) = (self.dataset, self.source, self.pixel);
        let detector = &inspector.detector;
        let device = inspector.device();
        let size = detector.config.backbone.input_size;
        let samples = &dataset.test[range];
        let mut out = Scored::default();
        if detector.tiling.is_some() {
            for sample in samples {
                let class = match source {
                    ClassSource::Label => ClassChoice::Index(sample.class),
                    ClassSource::Auto => ClassChoice::Auto,
                };
                let img = sample.load_image()?;
                let r = inspector.inspect_at(&img, &class, MapResolution::Model)?;
                if dataset.has_masks {
                    let dims = (r.model_width, r.model_height);
                    out.maps.push(crate::overlay::resize_map(
                        &r.model_map,
                        dims,
                        (pixel, pixel),
                    ));
                }
                out.scores.push(r.score);
                out.used.push(r.class_index);
                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
            }
            return Ok(out);
        }
        // The next batch is read and resized on another thread while the device runs this one.
        let chunks: Vec<&[Sample]> = samples.chunks(self.batch).collect();
        let backbone = &detector.config.backbone;
        crate::prefetch::one_ahead(
            &chunks,
            |chunk| crate::features::input_values(chunk, backbone),
            |chunk, values| {
                let inputs = crate::preprocess::upload(values?, chunk.len(), size, device);
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
                out.predicted.extend(classifier.unwrap_or_default());
                if dataset.has_masks {
                    let pixels = size * size;
                    let values = read_back(chosen.maps)?;
                    out.maps.extend(values.chunks(pixels).map(|m| {
                        if pixel == size {
                            m.to_vec()
                        } else {
                            crate::overlay::resize_map(m, (size, size), (pixel, pixel))
                        }
                    }));
                }
                out.scores.extend(chosen.scores);
                out.used.extend(chosen.classes);
                progress(done.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len());
                Ok(())
            },
        )?;
        Ok(out)
    }
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
