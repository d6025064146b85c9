//! The official network on wgpu allocating as CUDA does (`HVQ_WGPU_LAYOUT=pitched`: each row of a
//! tensor padded to CUDA's pitch, as burn's CUDA backend allocates its outputs and uploads)
//! launches the kernels it launches with unpadded memory. hvq's kernels must take padded tensors
//! as they come: where one declined a padded input, burn's composed operations ran instead, and
//! nothing but the launches showed it (the values are the same). On 2026-12-07 every depthwise
//! convolution, squeeze-and-excitation and swish of the backbone did so (the BatchNorm fold
//! declined the padded loaded kernels, 3 taps a row padded to 4): 444 backbone launches against
//! 180 (`HVQ_WGPU_LAYOUT=pitched hvq bench --device wgpu --config official --batch 1 --runs 1
//! --kernels`), on CUDA the whole backbone in burn's direct convolution.
//!
//! A process chooses its layout once, when its first wgpu device starts, so the test runs itself
//! twice as a child, once per layout, each writing the kernel profile of one pass
//! (`hvq::app::bench::profile_pass`: the inference stages, then a training step) for the parent
//! to compare.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{Distribution, Tensor};
use hvq::app::bench::{self, BenchModel};
use hvq::device::kernel_profile::KernelProfile;
use hvq::device::wgpu_layout::{self, WgpuLayout};
use hvq::device::{DeviceChoice, create};
use hvq::model::HvqModel;
use hvq::train::{AdamW, AdamWConfig};

/// Set in a child: where it writes its profile.
const CHILD_OUTPUT: &str = "HVQ_CUDA_LAYOUT_TEST_OUTPUT";

/// This test's name, which a child is asked to run.
const NAME: &str = "padded_rows_launch_the_kernels_unpadded_memory_launches";

/// Layout copies a pass may add under padding, by stage, each for a reason named here; any
/// other difference in the launches fails. Inference: the encoder's input projection reshapes
/// the aligned features `[B, 272, 14, 14]` (rows of 14 padded to 16) into tokens, a copy (one
/// image's features, 213 KB). Training: the same reshape in the step's forward, and the loss's
/// reconstruction error copies the reconstruction and the features (`gpu_loss_means`); the
/// backward copies nothing more.
const COPIES_ALLOWED: [(&str, usize); 3] =
    [("encoder", 1), ("train forward", 3), ("train backward", 0)];

#[test]
fn padded_rows_launch_the_kernels_unpadded_memory_launches() {
    if let Some(output) = std::env::var_os(CHILD_OUTPUT) {
        return profile_into(Path::new(&output));
    }
    let dir = std::env::temp_dir().join(format!("hvq-cuda-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut launches = Vec::new();
    for layout in WgpuLayout::ALL {
        let output = dir.join(layout.name());
        let child = Command::new(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_OUTPUT, &output)
            .env(wgpu_layout::VARIABLE, layout.name())
            .output()
            .unwrap();
        assert!(
            child.status.success(),
            "the {} child failed:\n{}\n{}",
            layout.name(),
            String::from_utf8_lossy(&child.stdout),
            String::from_utf8_lossy(&child.stderr)
        );
        let profile: KernelProfile =
            serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
        launches.push(by_stage(&profile));
    }
    std::fs::remove_dir_all(&dir).ok();
    // `WgpuLayout::ALL`: contiguous first.
    let (plain, padded) = (&launches[0], &launches[1]);
    // The backbone ran hvq's own kernels (the check means something only if they run here).
    for kernel in [
        "ConvKernel",
        "PartialSumsKernel",
        "ExciteKernel",
        "SeGateKernel",
    ] {
        assert!(
            plain["backbone"].contains_key(kernel),
            "{kernel} not launched: {:?}",
            plain["backbone"]
        );
    }
    let mut differences = Vec::new();
    for stage in plain.keys().chain(padded.keys()) {
        let empty = BTreeMap::new();
        let (a, b) = (
            plain.get(stage).unwrap_or(&empty),
            padded.get(stage).unwrap_or(&empty),
        );
        for name in a.keys().chain(b.keys()) {
            let (x, y) = (
                a.get(name).copied().unwrap_or(0),
                b.get(name).copied().unwrap_or(0),
            );
            let allowed = COPIES_ALLOWED
                .iter()
                .find(|(s, _)| s == stage)
                .map_or(0, |(_, n)| *n);
            let copy = name.starts_with("Copy");
            if x != y && !(copy && y >= x && y - x <= allowed) {
                differences.push(format!("{stage}: {name} {x} unpadded, {y} padded"));
            }
        }
    }
    differences.dedup();
    assert!(
        differences.is_empty(),
        "launches that padded rows change:\n{}",
        differences.join("\n")
    );
}

/// Per stage, launches per kernel name.
fn by_stage(profile: &KernelProfile) -> BTreeMap<String, BTreeMap<String, usize>> {
    profile
        .stages
        .iter()
        .map(|s| {
            let kernels = s
                .kernels
                .iter()
                .map(|k| (k.name.clone(), k.launches))
                .collect();
            (s.stage.clone(), kernels)
        })
        .collect()
}

/// The child's part: the official network (random weights) at batch 1 on wgpu, one warm-up pass
/// (the BatchNorm folds, compilation) and one profiled, written to `output` as JSON.
fn profile_into(output: &Path) {
    let asked = wgpu_layout::check_variable().unwrap();
    let device = create(DeviceChoice::Wgpu).unwrap();
    assert_eq!(
        wgpu_layout::current(),
        asked,
        "the layout the child was asked for"
    );
    let detector = bench::model(BenchModel::Official, &device).unwrap();
    let hvq = &detector.config.hvq;
    let ad = device.clone().autodiff();
    let net = HvqModel::new(hvq, &ad)
        .unwrap()
        .load_native(&detector.hvq.to_native())
        .unwrap();
    let mut opt = AdamW::new(AdamWConfig::default());
    let classes = [3];
    let image = || {
        Ok(Tensor::<4>::random(
            [1, 3, 224, 224],
            Distribution::Default,
            &device,
        ))
    };
    let features = || {
        let [f, side] = [hvq.feature_channels, hvq.feature_size];
        Tensor::<4>::random([1, f, side, side], Distribution::Default, &ad)
    };
    // The second pass is profiled: the first folds the BatchNorms, compiles, and gives the
    // optimiser its state (the same parameters, so the second step updates it).
    let mut pass = || {
        let step = (net.clone(), &mut opt);
        bench::profile_pass(&detector, image, &classes, step, features()).unwrap()
    };
    pass();
    let json = serde_json::to_vec(&pass()).unwrap();
    std::fs::write(PathBuf::from(output), json).unwrap();
}
