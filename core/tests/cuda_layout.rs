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
//! as a child per layout and model (the official network and the shipped default), each writing
//! the kernel profile of one pass (`hvq::app::bench::profile_pass`: the inference stages, then a
//! training step) for the parent to compare.

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

/// Set in a child: the model it runs, by name ([`MODELS`]).
const CHILD_MODEL: &str = "HVQ_CUDA_LAYOUT_TEST_MODEL";

/// The models compared, by name: the official network (random weights; B4 with squeeze-and-
/// excitation, 272 feature channels) and the shipped default (Lite0, 192).
const MODELS: [(&str, BenchModel); 2] = [
    ("official", BenchModel::Official),
    ("default", BenchModel::Default),
];

/// This test's name, which a child is asked to run.
const NAME: &str = "padded_rows_launch_the_kernels_unpadded_memory_launches";

/// Layout copies a pass may add under padding, by stage, each for a reason named here; any
/// other difference in the launches fails. Inference: the encoder's input projection reshapes
/// the aligned features `[B, F, 14, 14]` (rows of 14 padded to 16) into tokens, a copy (one
/// image's features, 213 KB for the official network's 272 channels). Training: the same
/// reshape in the step's forward; in the backward, the reconstruction error's gradient (burn's
/// output, padded) copied where the decoder's output layer takes it (`gpu_linear_autodiff`
/// reads its output gradient contiguous); the optimiser, which
/// flattens each gradient, copies one more of the default model's (stored with padded rows; a
/// parameter's gradient, at most a few hundred KB).
const COPIES_ALLOWED: [(&str, usize); 4] = [
    ("encoder", 1),
    ("train forward", 1),
    ("train backward", 1),
    ("optimizer", 1),
];

#[test]
fn padded_rows_launch_the_kernels_unpadded_memory_launches() {
    if let Some(output) = std::env::var_os(CHILD_OUTPUT) {
        let model = std::env::var(CHILD_MODEL).unwrap();
        let (_, model) = MODELS.into_iter().find(|(name, _)| *name == model).unwrap();
        return profile_into(model, Path::new(&output));
    }
    let dir = std::env::temp_dir().join(format!("hvq-cuda-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut differences = Vec::new();
    for (model, _) in MODELS {
        // `WgpuLayout::ALL`: contiguous first.
        let [plain, padded] = WgpuLayout::ALL.map(|layout| {
            let output = dir.join(format!("{model}-{}", layout.name()));
            let child = Command::new(std::env::current_exe().unwrap())
                .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_OUTPUT, &output)
                .env(CHILD_MODEL, model)
                .env(wgpu_layout::VARIABLE, layout.name())
                .output()
                .unwrap();
            assert!(
                child.status.success(),
                "the {model} {} child failed:\n{}\n{}",
                layout.name(),
                String::from_utf8_lossy(&child.stdout),
                String::from_utf8_lossy(&child.stderr)
            );
            let profile: KernelProfile =
                serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
            by_stage(&profile)
        });
        differences.extend(compare(model, &plain, &padded));
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        differences.is_empty(),
        "launches that padded rows change:\n{}",
        differences.join("\n")
    );
}

/// Per stage, launches per kernel name.
type Launches = BTreeMap<String, BTreeMap<String, usize>>;

/// The differences between `model`'s launches unpadded (`plain`) and padded, but for the copies
/// [`COPIES_ALLOWED`]. First, that its backbone ran hvq's convolution (the comparison means
/// something only where hvq's kernels run), and for the official network its squeeze-and-
/// excitation kernels.
fn compare(model: &str, plain: &Launches, padded: &Launches) -> Vec<String> {
    let mut expected = vec!["ConvKernel"];
    if model == "official" {
        expected.extend(["PartialSumsKernel", "ExciteKernel", "SeGateKernel"]);
    }
    for kernel in expected {
        assert!(
            plain["backbone"].contains_key(kernel),
            "{model}: {kernel} not launched: {:?}",
            plain["backbone"]
        );
    }
    let empty = BTreeMap::new();
    let mut differences = Vec::new();
    for stage in plain.keys().chain(padded.keys()) {
        let (a, b) = (
            plain.get(stage).unwrap_or(&empty),
            padded.get(stage).unwrap_or(&empty),
        );
        let allowed = COPIES_ALLOWED
            .iter()
            .find(|(s, _)| s == stage)
            .map_or(0, |(_, n)| *n);
        for name in a.keys().chain(b.keys()) {
            let (x, y) = (
                a.get(name).copied().unwrap_or(0),
                b.get(name).copied().unwrap_or(0),
            );
            let copy = name.starts_with("Copy");
            if x != y && !(copy && y >= x && y - x <= allowed) {
                differences.push(format!("{model}, {stage}: {name} {x} unpadded, {y} padded"));
            }
        }
    }
    differences.sort();
    differences.dedup();
    differences
}

fn by_stage(profile: &KernelProfile) -> Launches {
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

/// The child's part: `model` at batch 1 on wgpu, one warm-up pass (the BatchNorm folds,
/// compilation) and one profiled, written to `output` as JSON.
fn profile_into(model: BenchModel, output: &Path) {
    let asked = wgpu_layout::check_variable().unwrap();
    let device = create(DeviceChoice::Wgpu).unwrap();
    assert_eq!(
        wgpu_layout::current(),
        asked,
        "the layout the child was asked for"
    );
    let detector = bench::model(model, &device).unwrap();
    let hvq = &detector.config.hvq;
    let ad = device.clone().autodiff();
    let net = HvqModel::new(hvq, &ad)
        .unwrap()
        .load_native(&detector.hvq.to_native())
        .unwrap();
    let mut opt = AdamW::new(AdamWConfig::default());
    let classes = [1];
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
