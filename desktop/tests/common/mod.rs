//! Shared test helpers: a small model with the embedded Lite0 backbone and a random
//! reconstruction network, the shipped samples, and where artifacts go.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::Device;
use hvq::Detector;
use hvq::config::{BackboneConfig, HvqConfig, ModelConfig};
use hvq::detector::Calibration;
use hvq_desktop::worker::ModelLoad;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shipped sample images, sorted.
pub fn samples() -> Vec<PathBuf> {
    hvq_desktop::state::images_in_folder(&repo_root().join("samples")).unwrap()
}

/// Test artifacts (screenshots, exports): `$CARGO_TARGET_DIR/desktop-test-artifacts`
/// (`target/desktop-test-artifacts` by default).
pub fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let dir = target.join("desktop-test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh scratch folder.
pub fn scratch(name: &str) -> PathBuf {
    let dir = artifacts().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The small two-class (mono, poly) model of core's inference tests.
pub fn small_config() -> ModelConfig {
    let backbone = BackboneConfig::efficientnet_lite0();
    let mut hvq = HvqConfig::official(
        backbone.feature_channels(),
        vec!["mono".into(), "poly".into()],
    );
    hvq.embed_dim = 16;
    hvq.heads = 2;
    hvq.ffn_dim = 32;
    hvq.codes = 8;
    ModelConfig { backbone, hvq }
}

/// Weights: embedded Lite0 backbone, seeded random reconstruction network.
pub fn random_weights() -> hvq::weights::TensorMap {
    let mut d = Detector::new(small_config(), &Device::flex()).unwrap();
    d.backbone = hvq::pretrained::lite0_tensors()
        .unwrap()
        .load_into(d.backbone)
        .unwrap();
    d.to_tensors()
}

/// The model on `device` from these weights, with a threshold (`None`: uncalibrated).
pub fn detector_from(
    map: &hvq::weights::TensorMap,
    threshold: Option<f32>,
    device: &Device,
) -> Detector {
    let mut d = Detector::from_tensors(small_config(), map, device).unwrap();
    d.calibration = threshold.map(|threshold| Calibration {
        threshold,
        source: "test".into(),
        normal_score: None,
    });
    d
}

/// The same model as a worker's model source.
pub fn model_source(map: hvq::weights::TensorMap, threshold: Option<f32>) -> ModelLoad {
    ModelLoad::Custom(
        "test model (random network, Lite0 backbone)".into(),
        Box::new(move |device| Ok(detector_from(&map, threshold, device))),
    )
}
