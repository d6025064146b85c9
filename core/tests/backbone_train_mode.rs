//! The train-mode backbone (the official trainer's behaviour) against PyTorch's own train-mode
//! BatchNorm: `scripts/pytorch/make_train_mode_fixture.py` ran EfficientNet-Lite0 with the shipped
//! weights in `torch.nn.BatchNorm2d` train mode (momentum 0.5) on a seeded batch and stored the taps
//! and every running statistic afterwards. Drop-connect is random and is checked statistically in
//! the unit tests, so it is 0 here.

mod common;

use burn::tensor::Device;
use common::*;
use hvq::backbone::{BackboneMode, BackboneTraining, EfficientNet};
use hvq::config::BackboneConfig;
use hvq::weights::TensorMap;

fn fixture() -> TensorMap {
    TensorMap::read(repo_root().join("core/tests/fixtures/backbone_train_mode/lite0.safetensors"))
        .expect("fixture")
}

fn train_mode_matches_pytorch(device: &Device) {
    let want = fixture();
    let mut net = hvq::pretrained::lite0_tensors()
        .expect("embedded weights")
        .load_into(EfficientNet::new(
            &BackboneConfig::efficientnet_lite0(),
            false,
            device,
        ))
        .expect("weights load");
    let before = TensorMap::from_module(&net, "before");
    let settings = BackboneTraining {
        mode: BackboneMode::Train,
        drop_connect: 0.0,
        bn_momentum: 0.5,
    };
    let x = want.require("input").unwrap().to_tensor::<4>(device);
    let taps = net.taps_train(x, &settings);
    // The eval-mode golden tolerance (1e-4 of the largest value). Batch-statistic normalisation
    // divides by per-channel batch standard deviations, some from only 48 values at 4×4, yet the
    // measured error stays below 5e-6 of the largest value on the CPU and on wgpu.
    for (i, tap) in taps.into_iter().enumerate() {
        let name = format!("tap.{i}");
        assert_close(&name, &host(tap), want.require(&name).unwrap(), 0.0, 1e-4);
    }
    let after = TensorMap::from_module(&net, "after");
    let mut checked = 0;
    for name in want.names().filter_map(|n| n.strip_prefix("state.")) {
        let got = after
            .get(name)
            .unwrap_or_else(|| panic!("{name}: not in hvq's backbone"));
        let reference = want.require(&format!("state.{name}")).unwrap();
        // The update must have moved the statistic (else this compares the loaded weights).
        assert_ne!(
            before.get(name).unwrap().data,
            reference.data,
            "{name}: unchanged in PyTorch"
        );
        assert_close(name, got, reference, 1e-6, 1e-4);
        checked += 1;
    }
    // Stem + 11 blocks of Lite0 up to tap 10, 2 or 3 BatchNorms each, mean and variance.
    assert!(checked >= 60, "only {checked} running statistics compared");
}

#[test]
fn train_mode_backbone_matches_pytorch_cpu() {
    train_mode_matches_pytorch(&device("cpu"));
}

#[test]
fn train_mode_backbone_matches_pytorch_wgpu() {
    train_mode_matches_pytorch(&device("wgpu"));
}
