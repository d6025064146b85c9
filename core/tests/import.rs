//! `hvq import` on a checkpoint laid out like the released one (`module.` prefix, backbone under
//! `module.enc.`), assembled from the golden sets: the imported model reproduces the reference's
//! anomaly map.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use burn::tensor::{Device, Tensor};
use common::*;
use hvq::Detector;
use hvq::weights::TensorMap;

#[test]
fn imported_official_checkpoint_reproduces_the_reference_map() {
    let backbone = Golden::open("backbone_b4.safetensors");
    let small = Golden::open("hvq_small.safetensors");
    let mut ckpt = TensorMap::new("checkpoint");
    ckpt.extend_prefixed("module.", small.floats.sub("state."));
    ckpt.extend_prefixed("module.enc.", backbone.floats.sub("state."));
    let dir = std::env::temp_dir().join(format!("hvq-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ckpt.safetensors");
    ckpt.save(&file, &BTreeMap::new()).unwrap();

    let out = dir.join("model");
    let status = Command::new(env!("CARGO_BIN_EXE_hvq"))
        .args(["import", "--classes", "a,b,c", "--checkpoint"])
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let device = Device::flex();
    let d = Detector::load_dir(&out, &device).unwrap();
    assert_eq!(d.config.hvq.embed_dim, 64, "sizes read from the file");
    assert_eq!(d.config.hvq.codes, 32);
    assert_eq!(d.config.hvq.ffn_dim, 256);
    let feature: Tensor<4> = small.t("input.feature_align", &device);
    let classes: Vec<usize> = small
        .ints("input.labels")
        .1
        .iter()
        .map(|&c| c as usize)
        .collect();
    let (_, scores) = d.score(feature, &classes).unwrap();
    assert_close(
        "map224 after import",
        &host(scores.map),
        small.f("map224"),
        1e-3,
        0.0,
    );
    // The backbone came along under `enc.`.
    let x: Tensor<4> = backbone.t("input.x", &device);
    assert_close(
        "feature_align after import",
        &host(d.features(x)),
        backbone.f("feature_align"),
        0.0,
        1e-4,
    );

    // Too few class names for the checkpoint's experts: an error naming them.
    let bad = Command::new(env!("CARGO_BIN_EXE_hvq"))
        .args(["import", "--classes", "a,b", "--checkpoint"])
        .arg(&file)
        .arg("--out")
        .arg(dir.join("bad"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("3 classes") && err.contains("output_proj_list"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
