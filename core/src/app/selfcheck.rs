//! Does this device compute what the CPU computes? The shipped model on known images, run on the
//! device under test and on the CPU backend, compared end to end.
//!
//! A GPU driver, shader compiler or kernel that computes wrongly shows up as a class, score or map
//! that differs from the CPU's by more than float rounding. The bound is the one the web page's
//! test uses against the CLI: every difference at most 1e-3 of the image's largest map value
//! (maps and scores share that scale; scores are averages of the map). Measured well inside it:
//! wgpu on lavapipe ≤ 1.9e-6 and on an NVIDIA H200 (Vulkan) ≤ 3e-6 relative, CUDA on the H200
//! ≤ 1.3e-4 (maps of the same samples, measured when the CUDA path first ran).

use burn::tensor::Device;
use image::DynamicImage;
use serde::Serialize;

use super::inspect::{ClassChoice, Inspection, Inspector, MapResolution, ReplayState};
use crate::error::Result;

/// Largest allowed |device − CPU| over the CPU's largest |map| value.
pub const RELATIVE_BOUND: f32 = 1e-3;

/// One image's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct SampleDiff {
    /// The image's name.
    pub image: String,
    /// Class the CPU chose (auto).
    pub cpu_class: String,
    /// Class the device chose (auto).
    pub device_class: String,
    /// Image score on the CPU.
    pub cpu_score: f32,
    /// Image score on the device.
    pub device_score: f32,
    /// Largest |map| on the CPU (the scale of the differences).
    pub map_max_abs: f32,
    /// Largest |device − CPU| over the map at the model's resolution.
    pub map_max_abs_diff: f32,
    /// The larger of the score and map differences over `map_max_abs`.
    pub relative_diff: f32,
    /// Same class and `relative_diff` within [`RELATIVE_BOUND`].
    pub passed: bool,
}

/// A GPU's inspections replayed from a recorded pass against the same inspections run directly
/// (`crate::replay`): the samples as one batch with their classes left to the model (as
/// `hvq predict` leaves them by default: the class chosen on the device, recorded with the
/// pass), three rounds (run directly, recorded, replayed), the images in another order each
/// round.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayDiff {
    /// The pass was recorded and replayed; `false`: the device refused the recording and the
    /// batches ran directly (`not_recorded` says why), which inspections then do too.
    pub recorded: bool,
    /// Why the pass was not recorded, when it was not.
    pub not_recorded: Option<String>,
    /// The largest [`SampleDiff::relative_diff`] of a replayed inspection against the direct
    /// one (0: the same bits, as the same kernels on the same values give).
    pub relative_diff: f32,
    /// `relative_diff` within [`RELATIVE_BOUND`].
    pub passed: bool,
}

/// The whole check.
#[derive(Debug, Clone, Serialize)]
pub struct SelfCheck {
    /// The device under test, as the backend names it.
    pub device: String,
    /// Its adapter's name, where the backend reports one.
    pub adapter: Option<String>,
    /// What compiled a wgpu device's kernels (`spirv`, `wgsl`; `device::wgpu_compiler`).
    pub kernel_compiler: Option<String>,
    /// [`RELATIVE_BOUND`].
    pub bound: f32,
    /// Per image.
    pub samples: Vec<SampleDiff>,
    /// The largest `relative_diff`.
    pub worst_relative_diff: f32,
    /// On a GPU: its replayed inspections against its direct ones.
    pub replay: Option<ReplayDiff>,
    /// Every image passed, and the replay where checked.
    pub passed: bool,
}

/// Compare two inspections of one image.
pub fn compare(image: &str, cpu: &Inspection, device: &Inspection) -> SampleDiff {
    // `f32::max` drops NaN, so a NaN difference is made infinite first: NaN anywhere must fail.
    let finite = |d: f32| if d.is_nan() { f32::INFINITY } else { d };
    let map_max_abs = cpu
        .model_map
        .iter()
        .fold(0.0f32, |m, v| m.max(finite(v.abs())));
    let map_max_abs_diff = if cpu.model_map.len() == device.model_map.len() {
        cpu.model_map
            .iter()
            .zip(&device.model_map)
            .fold(0.0f32, |m, (a, b)| m.max(finite((a - b).abs())))
    } else {
        f32::INFINITY
    };
    let score_diff = finite((cpu.score - device.score).abs());
    let relative_diff =
        finite(score_diff.max(map_max_abs_diff) / map_max_abs.max(f32::MIN_POSITIVE));
    SampleDiff {
        image: image.to_string(),
        cpu_class: cpu.class_name.clone(),
        device_class: device.class_name.clone(),
        cpu_score: cpu.score,
        device_score: device.score,
        map_max_abs,
        map_max_abs_diff,
        relative_diff,
        passed: cpu.class_name == device.class_name && relative_diff <= RELATIVE_BOUND,
    }
}

/// Run `cpu` and `device` (the same model on two devices) on `images` (name, encoded bytes),
/// class `auto`, and compare.
pub fn run(cpu: &Inspector, device: &Inspector, images: &[(&str, &[u8])]) -> Result<SelfCheck> {
    let mut samples = Vec::with_capacity(images.len());
    for (name, bytes) in images {
        let on_cpu = cpu.inspect_bytes(bytes, name, &ClassChoice::Auto)?;
        let on_device = device.inspect_bytes(bytes, name, &ClassChoice::Auto)?;
        samples.push(compare(name, &on_cpu, &on_device));
    }
    let worst_relative_diff = samples.iter().fold(0.0f32, |m, s| m.max(s.relative_diff));
    let dev: &Device = device.device();
    let adapter = crate::device::adapter_name(dev);
    let replay = match adapter {
        Some(_) => Some(check_replay(device, images)?),
        None => None,
    };
    Ok(SelfCheck {
        device: format!("{dev:?}"),
        adapter,
        kernel_compiler: crate::device::wgpu_compiler::in_use(dev).map(|c| c.name().to_string()),
        bound: RELATIVE_BOUND,
        passed: !samples.is_empty()
            && samples.iter().all(|s| s.passed)
            && replay.as_ref().is_none_or(|r| r.passed),
        samples,
        worst_relative_diff,
        replay,
    })
}

/// [`ReplayDiff`] for `device`'s model on `images`.
fn check_replay(device: &Inspector, images: &[(&str, &[u8])]) -> Result<ReplayDiff> {
    let fresh = |replay: bool| {
        Inspector::new(device.detector.clone(), device.device().clone()).with_replay(replay)
    };
    let (direct, replaying) = (fresh(false), fresh(true));
    let decoded = images
        .iter()
        .map(|(name, bytes)| crate::preprocess::decode(bytes, name))
        .collect::<Result<Vec<_>>>()?;
    let class = ClassChoice::Auto;
    // Each image compared as the samples are (NaN fails), the direct inspection the reference.
    let mut diffs = Vec::new();
    for round in 0..3 {
        let mut batch: Vec<&DynamicImage> = decoded.iter().collect();
        batch.rotate_left(round % decoded.len().max(1));
        let got = replaying.inspect_batch(&batch, &class, MapResolution::Model)?;
        let want = direct.inspect_batch(&batch, &class, MapResolution::Model)?;
        for (got, want) in got.into_iter().zip(want) {
            diffs.push(compare("replayed", &want?, &got?));
        }
    }
    let relative_diff = diffs.iter().fold(0.0f32, |m, d| m.max(d.relative_diff));
    let (recorded, not_recorded) = match replaying.replay_state() {
        ReplayState::Recorded => (true, None),
        ReplayState::Stopped(why) => (false, Some(why)),
        ReplayState::Idle => (false, Some("no batch was recorded".into())),
    };
    Ok(ReplayDiff {
        recorded,
        not_recorded,
        relative_diff,
        passed: !diffs.is_empty() && diffs.iter().all(|d| d.passed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::inspect::StageTimes;

    fn inspection(class: &str, score: f32, map: Vec<f32>) -> Inspection {
        Inspection {
            score,
            threshold: None,
            anomalous: None,
            normal_score: None,
            class_index: 0,
            class_name: class.into(),
            width: 2,
            height: 2,
            map: map.clone(),
            model_map: map,
            model_width: 2,
            model_height: 2,
            tiles: 0,
            times: StageTimes::default(),
        }
    }

    #[test]
    fn differences_are_relative_to_the_largest_map_value() {
        let cpu = inspection("mono", 50.0, vec![0.0, 100.0, -20.0, 10.0]);
        // 0.05 off on a map of maximum 100: 5e-4 relative, inside 1e-3.
        let near = inspection("mono", 50.05, vec![0.0, 100.0, -20.0, 10.05]);
        let d = compare("a", &cpu, &near);
        assert!((d.relative_diff - 5e-4).abs() < 1e-6, "{d:?}");
        assert!(d.passed);
        // 0.2 off: 2e-3, outside.
        let far = inspection("mono", 50.0, vec![0.2, 100.0, -20.0, 10.0]);
        assert!(!compare("a", &cpu, &far).passed);
        // Another class fails whatever the numbers.
        let other = inspection("poly", 50.0, vec![0.0, 100.0, -20.0, 10.0]);
        assert!(!compare("a", &cpu, &other).passed);
        // NaN on the device fails, in the score or in the map.
        let nan = inspection("mono", f32::NAN, vec![0.0, 100.0, -20.0, 10.0]);
        let d = compare("a", &cpu, &nan);
        assert!(!d.passed && d.relative_diff.is_infinite(), "{d:?}");
        let nan_map = inspection("mono", 50.0, vec![0.0, f32::NAN, -20.0, 10.0]);
        let d = compare("a", &cpu, &nan_map);
        assert!(!d.passed && d.relative_diff.is_infinite(), "{d:?}");
    }
}
