//! Backbone features for a list of samples, computed once (eval-mode backbone) and cached on
//! disk beside the run, so training epochs only run the reconstruction network.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use crate::config::BackboneConfig;
use crate::data::Sample;
use crate::detector::Detector;
use crate::error::Result;
use crate::preprocess;
use crate::weights::{HostTensor, TensorMap};

/// Aligned backbone features of a training set, held on the host.
#[derive(Clone, Debug)]
pub struct FeatureSet {
    /// `[F, H, W]` of one sample.
    pub shape: [usize; 3],
    /// Row-major features, `N × F × H × W`.
    pub values: Vec<f32>,
    /// Class id per sample.
    pub classes: Vec<usize>,
}

impl FeatureSet {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// A batch `[B, F, H, W]` of the given samples.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Tensor<4> {
        let per: usize = self.shape.iter().product();
        let mut v = Vec::with_capacity(per * indices.len());
        for &i in indices {
            v.extend_from_slice(&self.values[i * per..(i + 1) * per]);
        }
        let [f, h, w] = self.shape;
        Tensor::from_data(TensorData::new(v, [indices.len(), f, h, w]), device)
    }
}

/// Aligned features of `samples`, `batch` images at a time; `progress(0)` before the first batch
/// (a caller's clock, a progress bar's rate, starts with the work) and `progress(done)` after
/// each batch.
pub fn extract(
    detector: &Detector,
    samples: &[Sample],
    batch: usize,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> Result<FeatureSet> {
    progress(0);
    let values = extract_values(
        &detector.backbone,
        detector,
        samples,
        batch,
        device,
        progress,
    )?;
    Ok(feature_set(detector, samples, values))
}

/// [`extract`] with the work split across `devices`: contiguous runs of batches, one thread and
/// one copy of the backbone per device. The features come back in sample order, as one device
/// computes them (up to each device's float rounding); `progress(done)` counts all devices'
/// images.
pub fn extract_sharded(
    detector: &Detector,
    samples: &[Sample],
    batch: usize,
    devices: &[Device],
    progress: &mut dyn FnMut(usize),
) -> Result<FeatureSet> {
    let Some(first) = devices.first() else {
        return Err(crate::error::HvqError::Device(
            "feature extraction on no device".into(),
        ));
    };
    if devices.len() == 1 {
        return extract(detector, samples, batch, first, progress);
    }
    progress(0);
    let batch = batch.max(1);
    let shards = crate::device::shard_sizes(samples.len().div_ceil(batch), devices.len());
    let mut parts = Vec::with_capacity(shards.len());
    let mut start = 0;
    for (&batches, device) in shards.iter().zip(devices) {
        let end = (start + batches * batch).min(samples.len());
        parts.push((&samples[start..end], device.clone()));
        start = end;
    }
    let (sender, received) = std::sync::mpsc::channel::<usize>();
    let results: Vec<Result<Vec<f32>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = parts
            .into_iter()
            .map(|(part, device)| {
                let sender = sender.clone();
                let backbone = detector.backbone.clone().to_device(&device);
                scope.spawn(move || {
                    extract_values(&backbone, detector, part, batch, &device, &mut |_| {}).inspect(
                        |_| {
                            let _ = sender.send(part.len());
                        },
                    )
                })
            })
            .collect();
        drop(sender);
        let mut done = 0;
        for images in received {
            done += images;
            progress(done);
        }
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|panic| {
                    Err(crate::error::HvqError::Device(format!(
                        "feature extraction failed on a device: {}",
                        crate::device::panic_capture::payload_text(panic.as_ref())
                    )))
                })
            })
            .collect()
    });
    let mut values = Vec::new();
    for part in results {
        values.extend(part?);
    }
    Ok(feature_set(detector, samples, values))
}

fn feature_set(detector: &Detector, samples: &[Sample], values: Vec<f32>) -> FeatureSet {
    let s = detector.config.backbone.feature_size;
    FeatureSet {
        shape: [detector.config.hvq.feature_channels, s, s],
        values,
        classes: samples.iter().map(|s| s.class).collect(),
    }
}

/// The aligned features of `samples` through `backbone` (the detector's, or a copy of it on
/// `device`), row-major.
fn extract_values(
    backbone: &crate::backbone::Backbone,
    detector: &Detector,
    samples: &[Sample],
    batch: usize,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<f32>> {
    let cfg = &detector.config.backbone;
    let f = detector.config.hvq.feature_channels;
    let s = cfg.feature_size;
    let mut values = Vec::with_capacity(samples.len() * f * s * s);
    // The next batch is read and resized on another thread while the backbone runs this one.
    let chunks: Vec<&[Sample]> = samples.chunks(batch.max(1)).collect();
    let mut done = 0;
    crate::prefetch::one_ahead(
        &chunks,
        |chunk| input_values(chunk, cfg),
        |chunk, host| {
            let input = preprocess::upload(host?, chunk.len(), cfg.input_size, device);
            let taps = backbone.taps(input);
            let feats = crate::backbone::align_features(taps, cfg.feature_size);
            values.extend(HostTensor::from_tensor(&feats).data);
            done += chunk.len();
            progress(done);
            Ok(())
        },
    )?;
    Ok(values)
}

/// The backbone inputs `[N, 3, S, S]` of `samples`: each image decoded, resized and normalised
/// as `cfg` says.
pub fn input_batch<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    cfg: &BackboneConfig,
    device: &Device,
) -> Result<Tensor<4>> {
    let samples: Vec<&Sample> = samples.into_iter().collect();
    let values = input_values(&samples, cfg)?;
    Ok(preprocess::upload(
        values,
        samples.len(),
        cfg.input_size,
        device,
    ))
}

/// The host half of [`input_batch`]: the samples decoded, resized and normalised into one buffer
/// (`preprocess::upload` makes the tensor).
pub fn input_values<S: std::borrow::Borrow<Sample> + Sync>(
    samples: &[S],
    cfg: &BackboneConfig,
) -> Result<Vec<f32>> {
    preprocess::batch_values(
        samples,
        |sample| sample.borrow().load_image(),
        cfg.input_size,
        &cfg.input_norm,
    )
}

/// A string that changes whenever the cached features would: the backbone configuration, its
/// weights' checksum and the exact list of samples.
pub fn cache_key(detector: &Detector, samples: &[Sample]) -> String {
    let mut h = Fnv::default();
    h.write(
        serde_json::to_string(&detector.config.backbone)
            .unwrap_or_default()
            .as_bytes(),
    );
    let weights = TensorMap::from_module(&detector.backbone, "backbone");
    for name in weights.names() {
        h.write(name.as_bytes());
        for v in weights.get(name).iter().flat_map(|t| &t.data) {
            h.write(&v.to_le_bytes());
        }
    }
    for s in samples {
        h.write(s.id.as_bytes());
        h.write(&(s.class as u64).to_le_bytes());
    }
    format!("{:016x}", h.0)
}

/// Load `path` if its key matches, else compute the features (split across `devices`) and
/// write the cache atomically.
pub fn cached(
    path: &Path,
    detector: &Detector,
    samples: &[Sample],
    batch: usize,
    devices: &[Device],
    progress: &mut dyn FnMut(usize),
) -> Result<(FeatureSet, bool)> {
    let key = cache_key(detector, samples);
    if let Ok(bytes) = std::fs::read(path)
        && let Ok((_, meta)) = safetensors::SafeTensors::read_metadata(&bytes)
    {
        let stored = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("hvq_feature_key"))
            .cloned();
        if stored.as_deref() == Some(key.as_str()) {
            let map = TensorMap::from_safetensors(&bytes, &path.display().to_string())?;
            let t = map.require("features")?;
            let shape = [t.shape[1], t.shape[2], t.shape[3]];
            return Ok((
                FeatureSet {
                    shape,
                    values: t.data.clone(),
                    classes: samples.iter().map(|s| s.class).collect(),
                },
                true,
            ));
        }
    }
    let set = extract_sharded(detector, samples, batch, devices, progress)?;
    let mut map = TensorMap::new("feature cache");
    let [f, h, w] = set.shape;
    map.insert(
        "features",
        HostTensor::new(vec![set.len(), f, h, w], set.values.clone()),
    );
    let mut meta = BTreeMap::new();
    meta.insert("hvq_feature_key".to_string(), key);
    map.save(path, &meta)?;
    Ok((set, false))
}

/// 64-bit FNV-1a: a stable, dependency-free fingerprint (not for security).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HvqConfig, ModelConfig};
    use crate::data::ImageSource;

    /// Reading a batch ahead changes nothing: every sample's features land in its place, equal
    /// to the same batches computed one after another here, and progress counts every image
    /// (0 first, then after each batch).
    #[test]
    fn extraction_reads_ahead_and_keeps_every_sample_in_place() {
        let _generator = crate::test_rng::lock();
        let backbone = BackboneConfig::efficientnet_lite0();
        let hvq = HvqConfig::official(backbone.feature_channels(), vec!["a".into()]);
        let device = Device::flex();
        let detector = Detector::new(ModelConfig { backbone, hvq }, &device).unwrap();
        let samples: Vec<Sample> = (0..5u8)
            .map(|i| Sample {
                id: format!("s{i}"),
                source: ImageSource::Pixels {
                    width: 20 + u32::from(i),
                    height: 17,
                    channels: 3,
                    data: (0..(20 + usize::from(i)) * 17 * 3)
                        .map(|p| (p * (7 + usize::from(i)) % 251) as u8)
                        .collect::<Vec<u8>>()
                        .into(),
                },
                class: 0,
                anomalous: false,
                defect: "good".into(),
                mask: None,
            })
            .collect();
        let mut reported = Vec::new();
        let set = extract(&detector, &samples, 2, &device, &mut |d| reported.push(d)).unwrap();
        assert_eq!(reported, vec![0, 2, 4, 5]);
        let cfg = &detector.config.backbone;
        let mut expected = Vec::new();
        for chunk in samples.chunks(2) {
            let taps = detector
                .backbone
                .taps(input_batch(chunk, cfg, &device).unwrap());
            let feats = crate::backbone::align_features(taps, cfg.feature_size);
            expected.extend(HostTensor::from_tensor(&feats).data);
        }
        assert_eq!(set.values, expected);
    }
}
