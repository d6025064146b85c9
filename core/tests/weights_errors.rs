//! Malformed weights give errors that name the tensor or the file, never a panic.

mod common;

use std::collections::BTreeMap;

use burn::tensor::Device;
use hvq::HvqError;
use hvq::config::HvqConfig;
use hvq::model::HvqModel;
use hvq::weights::{HostTensor, TensorMap};

fn tiny() -> HvqConfig {
    let mut c = HvqConfig::official(12, vec!["a".into(), "b".into()]);
    c.embed_dim = 8;
    c.heads = 2;
    c.ffn_dim = 16;
    c.codes = 4;
    c
}

fn saved(device: &Device) -> TensorMap {
    HvqModel::new(&tiny(), device).unwrap().to_native()
}

#[test]
fn round_trip_through_safetensors_is_exact() {
    let device = Device::flex();
    let map = saved(&device);
    let bytes = map.to_safetensors(&BTreeMap::new());
    let back = TensorMap::from_safetensors(&bytes, "mem").unwrap();
    let model = HvqModel::new(&tiny(), &device)
        .unwrap()
        .load_native(&back)
        .unwrap();
    let again = model.to_native();
    assert_eq!(again.len(), map.len());
    for n in map.names() {
        assert_eq!(again.get(n), map.get(n), "{n}");
    }
}

#[test]
fn missing_tensor_is_named() {
    let device = Device::flex();
    let full = saved(&device);
    let mut map = TensorMap::new("model.safetensors");
    for n in full
        .names()
        .filter(|n| *n != "decoder.layers.2.linear1.weight")
    {
        map.insert(n, full.get(n).unwrap().clone());
    }
    let err = HvqModel::new(&tiny(), &device)
        .unwrap()
        .load_native(&map)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HvqError::MissingTensor { .. }), "{msg}");
    assert!(
        msg.contains("decoder.layers.2.linear1.weight") && msg.contains("model.safetensors"),
        "{msg}"
    );
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let device = Device::flex();
    let mut map = saved(&device);
    map.insert(
        "quantize_list_3.1.embed",
        HostTensor::new(vec![16, 5], vec![0.0; 80]),
    );
    let err = HvqModel::new(&tiny(), &device)
        .unwrap()
        .load_native(&map)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("quantize_list_3.1.embed") || msg.contains("quantize_lists.2.1.embed"),
        "{msg}"
    );
    assert!(msg.contains("[16, 5]") && msg.contains("[16, 4]"), "{msg}");
}

#[test]
fn non_finite_values_are_rejected() {
    let device = Device::flex();
    let mut map = saved(&device);
    let mut t = map.get("pos_embed.row_embed.weight").unwrap().clone();
    t.data[3] = f32::NAN;
    map.insert("pos_embed.row_embed.weight", t);
    let err = HvqModel::new(&tiny(), &device)
        .unwrap()
        .load_native(&map)
        .unwrap_err();
    assert!(
        err.to_string().contains("pos_embed.row_embed.weight"),
        "{err}"
    );
}

#[test]
fn truncated_and_garbage_files_are_format_errors() {
    let dir = std::env::temp_dir().join(format!("hvq-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = saved(&Device::flex()).to_safetensors(&BTreeMap::new());
    for (name, content) in [
        ("truncated.safetensors", bytes[..bytes.len() / 2].to_vec()),
        ("header-only.safetensors", bytes[..20].to_vec()),
        ("garbage.pth", b"this is not a checkpoint at all".to_vec()),
        ("empty.pth", Vec::new()),
        ("truncated-zip.pth", b"PK\x03\x04\x14\x00\x00\x00".to_vec()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let err = TensorMap::read(&path).expect_err(name);
        let msg = err.to_string();
        println!("{name}: {msg}");
        assert!(msg.contains(name), "error names the file: {msg}");
    }
    let missing = TensorMap::read(dir.join("does-not-exist.safetensors")).unwrap_err();
    assert!(matches!(missing, HvqError::Io { .. }));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn checkpoint_wrappers_are_removed() {
    let mut map = TensorMap::new("ckpt");
    map.insert(
        "state_dict.module.encoder.w",
        HostTensor::new(vec![1], vec![1.0]),
    );
    map.insert(
        "state_dict.module.enc._bn0.weight",
        HostTensor::new(vec![1], vec![2.0]),
    );
    map.insert(
        "optimizer.state.0.exp_avg",
        HostTensor::new(vec![1], vec![3.0]),
    );
    let clean = map.without_wrappers();
    let names: Vec<&str> = clean.names().collect();
    assert_eq!(names, vec!["enc._bn0.weight", "encoder.w"]);
}
