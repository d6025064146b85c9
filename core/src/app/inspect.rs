//! The inference API every front end calls: image in; anomaly map at the image's own resolution,
//! image score, verdict and the class used out.

use std::sync::Mutex;

use burn::tensor::Device;
use image::DynamicImage;
use serde::Serialize;

use crate::class_choice::{BatchClasses, Resolved};
use crate::detector::Detector;
use crate::device::read_back_async;
use crate::error::{HvqError, Result};
use crate::map::ScoreKind;
use crate::preprocess;
use crate::replay::ReplayedInference;
// `std::time::Instant` panics in the browser; web-time is std's on native and `performance.now()`
// on wasm.
use web_time::Instant;

/// The result of a batch of one image.
fn only(mut results: Vec<Result<Inspection>>) -> Result<Inspection> {
    results.pop().unwrap_or_else(|| {
        Err(HvqError::Device(
            "a batch of one image gave no result".into(),
        ))
    })
}

/// Tiles per pass through the model when a tiled model inspects a large image.
const TILE_BATCH: usize = 16;

/// Which class's codebooks and expert to use.
#[derive(Clone, Debug, PartialEq)]
pub enum ClassChoice {
    /// By index.
    Index(usize),
    /// By name.
    Name(String),
    /// Let the model choose: its classifier's prediction when it has one (the paper's preset),
    /// otherwise the class whose codebooks and expert reconstruct the image best (lowest score).
    Auto,
}

impl std::str::FromStr for ClassChoice {
    type Err = std::convert::Infallible;

    /// `auto`, or a class name (what `--class`, the desktop's menu and the web page pass).
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "auto" => ClassChoice::Auto,
            name => ClassChoice::Name(name.to_string()),
        })
    }
}

/// Time spent in each stage, milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StageTimes {
    /// Resize + normalise + upload.
    pub preprocess_ms: f64,
    /// Backbone + align (0 for a replayed batch, whose whole pass counts as the model's).
    pub backbone_ms: f64,
    /// Reconstruction network, map and score (including the read back).
    pub model_ms: f64,
    /// Resizing the map to the image resolution.
    pub upsample_ms: f64,
}

/// The result for one image.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    /// Image score (max of the 16×16-averaged map).
    pub score: f32,
    /// Decision threshold stored with the model, if any.
    pub threshold: Option<f32>,
    /// `score > threshold`, when a threshold is known.
    pub anomalous: Option<bool>,
    /// The model's normal level (median normal score at calibration), the bottom of the overlay's
    /// colour scale (`overlay::color_scale`).
    pub normal_score: Option<f32>,
    /// Class used.
    pub class_index: usize,
    /// Its name.
    pub class_name: String,
    /// Image width (the map's width).
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Anomaly map at the image resolution, row-major `height × width` (empty when
    /// [`MapResolution::Model`] was asked for).
    #[serde(skip)]
    pub map: Vec<f32>,
    /// Anomaly map at the model's scale, row-major: 224 × 224 for a whole image; for a tiled
    /// one, the stitched canvas (`224 / tile` map pixels per image pixel, see `crate::tiling`).
    #[serde(skip)]
    pub model_map: Vec<f32>,
    /// Width of `model_map`.
    pub model_width: usize,
    /// Height of `model_map`.
    pub model_height: usize,
    /// Tiles inspected (0: the image was inspected whole).
    pub tiles: usize,
    /// Stage timings.
    pub times: StageTimes,
}

impl Inspection {
    /// The overlay's colour scale for this result (`overlay::color_scale`: anchored to the model's
    /// normal level and threshold when it has them, else the image's own).
    pub fn color_scale(&self) -> crate::overlay::ColorScale {
        crate::overlay::color_scale(
            &self.model_map,
            self.score,
            self.threshold,
            self.normal_score,
        )
    }

    /// The verdict under the model's threshold.
    pub fn verdict(&self) -> super::Verdict {
        super::Verdict::of(self.score, self.threshold)
    }
}

/// At which resolution [`Inspector::inspect_with`] returns the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapResolution {
    /// The image's own resolution (`Inspection::map` filled): files, the CLI.
    Image,
    /// Only the model's 224×224 map (`Inspection::map` left empty): a display that resamples on
    /// the GPU (the web page's and the desktop's overlay shader, which sample exactly as
    /// `overlay::resize_map`), or a list that keeps thousands of results (the desktop, through
    /// the worker).
    Model,
}

/// A loaded model on a device, ready to inspect images.
///
/// On a GPU, when replaying is on ([`crate::replay::enabled`]: the CLI's and the desktop
/// inspector's default), a batch with the shape and the classes of the batch before it (a
/// fixed class, or `auto`: the class is then chosen on the device, as part of the pass)
/// records the pass, and later such batches replay the recording ([`crate::replay`]): the same
/// values, without the host's work per launch. The recording computes with the weights the
/// detector had when it was made: build a new inspector to change them.
#[derive(Debug)]
pub struct Inspector {
    /// The model.
    pub detector: Detector,
    device: Device,
    replay: bool,
    replays: Mutex<Replays>,
}

/// Where an inspector's replaying stands ([`Inspector::replay_state`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayState {
    /// Not replaying: turned off, not a GPU, or nothing repeated yet.
    Idle,
    /// A pass is recorded; batches of its shape and classes replay it.
    Recorded,
    /// Replaying stopped for this inspector, for the reason given (the backend refused a
    /// recording, or a replay failed): batches run directly.
    Stopped(String),
}

/// An inspector's recording and what it knows of the batches before it.
#[derive(Debug, Default)]
struct Replays {
    /// The shape and classes of the last batch run directly, which a repeat records.
    seen: Option<([usize; 4], BatchClasses)>,
    /// The recorded pass.
    recorded: Option<ReplayedInference>,
    /// Why replaying stopped, once it has.
    stopped: Option<String>,
}

impl Inspector {
    /// Wrap a loaded detector. It replays repeated batches when replaying is on for the
    /// process and `device` is a GPU.
    pub fn new(detector: Detector, device: Device) -> Self {
        let replay = crate::replay::enabled() && crate::device::adapter_info(&device).is_some();
        Self {
            detector,
            device,
            replay,
            replays: Mutex::new(Replays::default()),
        }
    }

    /// This inspector with replaying of repeated batches on or off, whatever the process's
    /// setting (on the CPU, on records nothing: its first repeat stops it, with the reason).
    pub fn with_replay(mut self, on: bool) -> Self {
        self.replay = on;
        self
    }

    /// Where replaying stands.
    pub fn replay_state(&self) -> ReplayState {
        let replays = self.replays.lock().unwrap_or_else(|e| e.into_inner());
        match (&replays.stopped, &replays.recorded) {
            (Some(why), _) => ReplayState::Stopped(why.clone()),
            (None, Some(_)) => ReplayState::Recorded,
            (None, None) => ReplayState::Idle,
        }
    }

    /// The batch `values` (`shape`) scored under `classes` through the recorded pass:
    /// replayed when this batch repeats the recording's shape and classes (or the batch before
    /// it, which records it); `None` to run the batch directly (a new shape or classes, or
    /// replaying stopped: a refused or failed recording, or a failed replay, stops it, with the
    /// reason).
    fn replayed(
        &self,
        values: &[f32],
        shape: [usize; 4],
        classes: &BatchClasses,
    ) -> Option<Resolved> {
        let mut replays = self.replays.lock().unwrap_or_else(|e| e.into_inner());
        // Another thread's recording stays theirs (recording again here would discard it).
        if replays.stopped.is_some()
            || replays
                .recorded
                .as_ref()
                .is_some_and(|r| !r.on_this_thread())
        {
            return None;
        }
        let takes = replays
            .recorded
            .as_ref()
            .is_some_and(|r| r.takes(shape, classes));
        if !takes {
            let repeat = replays
                .seen
                .as_ref()
                .is_some_and(|(s, c)| *s == shape && c == classes);
            if !repeat {
                replays.seen = Some((shape, classes.clone()));
                return None;
            }
            // The previous recording (if any) goes first: its buffers are the device's again.
            replays.recorded = None;
            let images = preprocess::upload(values.to_vec(), shape[0], shape[2], &self.device);
            // A refused or failed recording stops replaying; the batch runs directly (and fails
            // there, with its own error, if the device itself is failing).
            match ReplayedInference::record(self.detector.clone(), images, classes) {
                Ok(recorded) if recorded.recorded() => replays.recorded = Some(recorded),
                Ok(refused) => {
                    let why = refused.not_recorded().unwrap_or("not recorded");
                    replays.stopped = Some(why.to_string());
                    return None;
                }
                Err(e) => {
                    replays.stopped = Some(e.to_string());
                    return None;
                }
            }
        }
        let recorded = replays.recorded.as_mut()?;
        match recorded.run(values) {
            Ok(resolved) => Some(resolved),
            Err(e) => {
                replays.recorded = None;
                replays.stopped = Some(e.to_string());
                None
            }
        }
    }

    /// The device in use.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Resolve a class choice to an index (Auto is resolved during inspection).
    fn fixed_class(&self, class: &ClassChoice) -> Result<Option<usize>> {
        let cfg = &self.detector.config.hvq;
        match class {
            ClassChoice::Index(i) if *i < cfg.num_classes => Ok(Some(*i)),
            ClassChoice::Index(i) => Err(HvqError::UnknownClass {
                given: i.to_string(),
                known: cfg.class_names.clone(),
            }),
            ClassChoice::Name(n) => cfg.class_index(n).map(Some),
            ClassChoice::Auto if cfg.num_classes == 1 => Ok(Some(0)),
            ClassChoice::Auto => Ok(None),
        }
    }

    /// Inspect an encoded image (PNG/JPEG bytes); `name` appears in errors.
    pub fn inspect_bytes(
        &self,
        bytes: &[u8],
        name: &str,
        class: &ClassChoice,
    ) -> Result<Inspection> {
        let img = preprocess::decode(bytes, name)?;
        self.inspect(&img, class)
    }

    /// Inspect a decoded image; the map at the image's resolution.
    pub fn inspect(&self, img: &DynamicImage, class: &ClassChoice) -> Result<Inspection> {
        self.inspect_at(img, class, MapResolution::Image)
    }

    /// [`Inspector::inspect`] with the map at the resolution asked for.
    pub fn inspect_at(
        &self,
        img: &DynamicImage,
        class: &ClassChoice,
        resolution: MapResolution,
    ) -> Result<Inspection> {
        // One implementation for every platform: the async one, run to completion here (native
        // backends block on read-backs; the CPU backend never waits).
        burn::tensor::try_read_sync(self.inspect_with(img, class, resolution)).unwrap_or_else(
            || {
                Err(HvqError::Device(
                    "this backend cannot read results synchronously here: use inspect_with".into(),
                ))
            },
        )
    }

    /// Inspect a decoded image, awaiting the device's read-backs (required on WebGPU, where a
    /// read-back cannot block).
    pub async fn inspect_with(
        &self,
        img: &DynamicImage,
        class: &ClassChoice,
        resolution: MapResolution,
    ) -> Result<Inspection> {
        only(self.inspect_batch_with(&[img], class, resolution).await?)
    }

    /// Inspect several decoded images in one pass through the model (one device batch: what
    /// keeps a GPU busy). Each image gets its own result, in order: an image whose score is not
    /// finite fails alone. The outer error is one that stops the whole batch (an unknown class,
    /// a device failure). Each result's stage times are its equal share of the batch's.
    pub fn inspect_batch(
        &self,
        images: &[&DynamicImage],
        class: &ClassChoice,
        resolution: MapResolution,
    ) -> Result<Vec<Result<Inspection>>> {
        burn::tensor::try_read_sync(self.inspect_batch_with(images, class, resolution))
            .unwrap_or_else(|| {
                Err(HvqError::Device(
                    "this backend cannot read results synchronously here: use \
                     inspect_batch_with"
                        .into(),
                ))
            })
    }

    /// [`Inspector::inspect_batch`], awaiting the device's read-backs.
    pub async fn inspect_batch_with(
        &self,
        images: &[&DynamicImage],
        class: &ClassChoice,
        resolution: MapResolution,
    ) -> Result<Vec<Result<Inspection>>> {
        let fixed = self.fixed_class(class)?;
        if images.is_empty() {
            return Ok(Vec::new());
        }
        // A tiled model inspects each large image as a batch of its own tiles.
        if let Some(tiling) = self.detector.tiling
            && images
                .iter()
                .any(|i| tiling.applies_to(i.width(), i.height()))
        {
            let mut results = Vec::with_capacity(images.len());
            for img in images {
                let r = if tiling.applies_to(img.width(), img.height()) {
                    self.inspect_tiled(img, &tiling, fixed, resolution).await
                } else {
                    only(self.inspect_whole(&[img], fixed, resolution).await?)
                };
                results.push(r);
            }
            return Ok(results);
        }
        self.inspect_whole(images, fixed, resolution).await
    }

    /// Images inspected whole (resized to the model's input), as one batch.
    async fn inspect_whole(
        &self,
        images: &[&DynamicImage],
        fixed: Option<usize>,
        resolution: MapResolution,
    ) -> Result<Vec<Result<Inspection>>> {
        let n = images.len();
        let cfg = &self.detector.config;
        let s = cfg.backbone.input_size;
        let t0 = Instant::now();
        let values = preprocess::host_batch_of(images, s, &cfg.backbone.input_norm);
        let shape = [n, 3, s, s];
        let prepared = Instant::now();
        // Replayed: the images under their class, or under the class the model chooses on the
        // device for each, scored by its maximum as below.
        let replayed = if self.replay {
            let classes = match fixed {
                Some(class) => BatchClasses::Given(vec![class; n]),
                None => BatchClasses::ByModel,
            };
            self.replayed(&values, shape, &classes)
        } else {
            None
        };
        let (t1, t2, classes, scores, maps) = match replayed {
            Some(replayed) => {
                let (classes, scores) = replayed.read().await?;
                let maps = read_back_async(replayed.maps).await?;
                // The whole pass (the values' write included) counts as the model's: the replay
                // does not split it.
                (prepared, prepared, classes, scores, maps)
            }
            None => {
                let input = preprocess::upload(values, n, s, &self.device);
                let t1 = Instant::now();
                let feature = self.detector.features(input);
                let t2 = Instant::now();
                let chosen = self
                    .detector
                    .score_choosing(feature, &vec![fixed; n], ScoreKind::Max)
                    .await?;
                let maps = read_back_async(chosen.maps).await?;
                (t1, t2, chosen.classes, chosen.scores, maps)
            }
        };
        let t3 = Instant::now();
        let threshold = self.detector.calibration.as_ref().map(|c| c.threshold);
        let share = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3 / n as f64;
        let mut results = Vec::with_capacity(n);
        for (i, img) in images.iter().enumerate() {
            let (class_index, score) = (classes[i], scores[i]);
            let class_name = cfg.hvq.class_names[class_index].clone();
            // NaN compares false with any threshold, so a broken model (NaN weights, say) would
            // call every image normal: no finite score, no verdict.
            if !score.is_finite() {
                results.push(Err(HvqError::NonFiniteScore {
                    score,
                    class: class_name,
                }));
                continue;
            }
            let model_map = maps[i * s * s..(i + 1) * s * s].to_vec();
            let t = Instant::now();
            let (w, h) = (img.width(), img.height());
            // On the host from the model's map (not the device): the same values on every
            // backend, and what a front end that keeps only the small map recomputes when it
            // needs the large one (`overlay::resize_map`).
            let map = if resolution == MapResolution::Model {
                Vec::new()
            } else if w as usize == s && h as usize == s {
                model_map.clone()
            } else {
                crate::overlay::resize_map(&model_map, (s, s), (w as usize, h as usize))
            };
            let upsample_ms = (Instant::now() - t).as_secs_f64() * 1e3;
            results.push(Ok(Inspection {
                score,
                threshold,
                anomalous: threshold.map(|t| score > t),
                normal_score: self
                    .detector
                    .calibration
                    .as_ref()
                    .and_then(|c| c.normal_score),
                class_index,
                class_name,
                width: w,
                height: h,
                map,
                model_map,
                model_width: s,
                model_height: s,
                tiles: 0,
                times: StageTimes {
                    preprocess_ms: share(t0, t1),
                    backbone_ms: share(t1, t2),
                    model_ms: share(t2, t3),
                    upsample_ms,
                },
            }));
        }
        Ok(results)
    }

    /// One large image through a tiled model: its tiles in batches, their maps stitched
    /// (`crate::tiling`), the image score over the stitched map. Under `auto` the class is
    /// chosen once for the whole image, from the image inspected whole (a part's class is a
    /// property of the whole part; tiles voting could split it).
    async fn inspect_tiled(
        &self,
        img: &DynamicImage,
        tiling: &crate::tiling::Tiling,
        fixed: Option<usize>,
        resolution: MapResolution,
    ) -> Result<Inspection> {
        let cfg = &self.detector.config;
        let s = cfg.backbone.input_size;
        let t0 = Instant::now();
        let class = match fixed {
            Some(c) => c,
            None => {
                let input = preprocess::batch_of(&[img], s, &cfg.backbone.input_norm, &self.device);
                let feature = self.detector.features(input);
                let chosen = self
                    .detector
                    .score_choosing(feature, &[None], ScoreKind::Max)
                    .await?;
                chosen.classes[0]
            }
        };
        let grid = tiling.grid(img.width(), img.height());
        let mut stitcher = crate::tiling::Stitcher::new(tiling, img.width(), img.height(), s);
        let mut pre = 0f64;
        for chunk in grid.chunks(TILE_BATCH) {
            let ta = Instant::now();
            let crops: Vec<DynamicImage> = chunk
                .iter()
                .map(|t| img.crop_imm(t.x, t.y, t.width, t.height))
                .collect();
            let refs: Vec<&DynamicImage> = crops.iter().collect();
            let input = preprocess::batch_of(&refs, s, &cfg.backbone.input_norm, &self.device);
            let tb = Instant::now();
            let feature = self.detector.features(input);
            let chosen = self
                .detector
                .score_choosing(feature, &vec![Some(class); chunk.len()], ScoreKind::Max)
                .await?;
            let maps = read_back_async(chosen.maps).await?;
            for (i, tile) in chunk.iter().enumerate() {
                stitcher.add(tile, &maps[i * s * s..(i + 1) * s * s], s);
            }
            pre += (tb - ta).as_secs_f64();
        }
        let t1 = Instant::now();
        let (model_map, mw, mh) = stitcher.finish();
        let score = crate::tiling::pooled_max(&model_map, mw, mh, s / cfg.hvq.feature_size);
        let class_name = cfg.hvq.class_names[class].clone();
        if !score.is_finite() {
            return Err(HvqError::NonFiniteScore {
                score,
                class: class_name,
            });
        }
        let (w, h) = (img.width(), img.height());
        let map = match resolution {
            MapResolution::Model => Vec::new(),
            MapResolution::Image => {
                crate::overlay::resize_map(&model_map, (mw, mh), (w as usize, h as usize))
            }
        };
        let threshold = self.detector.calibration.as_ref().map(|c| c.threshold);
        Ok(Inspection {
            score,
            threshold,
            anomalous: threshold.map(|t| score > t),
            normal_score: self
                .detector
                .calibration
                .as_ref()
                .and_then(|c| c.normal_score),
            class_index: class,
            class_name,
            width: w,
            height: h,
            map,
            model_map,
            model_width: mw,
            model_height: mh,
            tiles: grid.len(),
            times: StageTimes {
                preprocess_ms: pre * 1e3,
                backbone_ms: 0.0,
                model_ms: (t1 - t0).as_secs_f64() * 1e3 - pre * 1e3,
                upsample_ms: t1.elapsed().as_secs_f64() * 1e3,
            },
        })
    }
}
