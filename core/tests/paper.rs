//! The paper's additions: POT loss against an independent computation (value and gradient), the
//! classifier choosing codebooks and expert, and each ablation switch changing what it names.

mod common;

use burn::module::Param;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use common::*;
use hvq::config::{BackboneConfig, ClassifierConfig, HvqConfig, ModelConfig};
use hvq::model::{HvqModel, pot_loss};
use hvq::train::objective;
use hvq::{ClassChoice, Detector, Inspector};

/// POT of one sample in f64, straight from the definition in docs/hvq-trans.md §4.
fn pot_reference(x: &[f64], e: &[f64], l: usize, d: usize, k: usize, tau: f64) -> f64 {
    let dot = |n: usize, j: usize| (0..d).map(|i| x[n * d + i] * e[i * k + j]).sum::<f64>();
    let xn = |n: usize| (0..d).map(|i| x[n * d + i].powi(2)).sum::<f64>().sqrt();
    let en = |j: usize| (0..d).map(|i| e[i * k + j].powi(2)).sum::<f64>().sqrt();
    let cost = |n: usize, j: usize| 1.0 - dot(n, j) / (xn(n) * en(j));
    let mut forward = 0.0;
    for n in 0..l {
        let z: f64 = (0..k).map(|j| (dot(n, j) / tau).exp()).sum();
        forward += (0..k)
            .map(|j| (dot(n, j) / tau).exp() / z * cost(n, j))
            .sum::<f64>();
    }
    let mut backward = 0.0;
    for j in 0..k {
        let z: f64 = (0..l).map(|n| (dot(n, j) / tau).exp()).sum();
        backward += (0..l)
            .map(|n| (dot(n, j) / tau).exp() / z * cost(n, j))
            .sum::<f64>();
    }
    forward / l as f64 + backward / k as f64
}

/// On the CPU (burn's operations) and on wgpu (one autodiff operation, `kernels::gpu_pot_loss`).
#[test]
fn pot_loss_matches_the_definition_value_and_gradient() {
    for backend in ["cpu", "wgpu"] {
        let device = common::device(backend).autodiff();
        let (l, d, k, tau) = (5, 4, 6, 2.0);
        let xs: Vec<f32> = (0..l * d)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let es: Vec<f32> = (0..d * k)
            .map(|i| ((i * 53 % 13) as f32 - 6.0) / 4.0)
            .collect();
        let x =
            Tensor::<3>::from_data(TensorData::new(xs.clone(), [1, l, d]), &device).require_grad();
        let e = Tensor::<3>::from_data(TensorData::new(es.clone(), [1, d, k]), &device);
        let loss = pot_loss(x.clone(), e, tau as f32);
        let got = loss.clone().into_scalar::<f32>() as f64;
        let xd: Vec<f64> = xs.iter().map(|&v| v as f64).collect();
        let ed: Vec<f64> = es.iter().map(|&v| v as f64).collect();
        let want = pot_reference(&xd, &ed, l, d, k, tau);
        assert!((got - want).abs() < 1e-5, "{backend}: POT {got} vs {want}");

        let grads = loss.sum().backward();
        let g: Vec<f32> = x
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        for i in 0..l * d {
            let h = 1e-5;
            let (mut plus, mut minus) = (xd.clone(), xd.clone());
            plus[i] += h;
            minus[i] -= h;
            let fd = (pot_reference(&plus, &ed, l, d, k, tau)
                - pot_reference(&minus, &ed, l, d, k, tau))
                / (2.0 * h);
            assert!(
                (g[i] as f64 - fd).abs() < 1e-4 + 1e-3 * fd.abs(),
                "{backend}: dPOT/dx[{i}]: {} vs {fd}",
                g[i]
            );
        }
    }
}

fn tiny(classes: usize) -> HvqConfig {
    let mut c = HvqConfig::official(12, (0..classes).map(|i| format!("c{i}")).collect());
    c.embed_dim = 8;
    c.heads = 2;
    c.ffn_dim = 16;
    c.codes = 6;
    c
}

fn feature(b: usize, device: &Device) -> Tensor<4> {
    Tensor::random([b, 12, 14, 14], Distribution::Normal(0.0, 1.0), device)
}

fn indices(out: &hvq::model::HvqOutput, level: usize) -> Vec<i64> {
    out.levels[level]
        .indices
        .clone()
        .into_data()
        .try_into_vec_as::<i64>()
        .unwrap()
}

#[test]
fn hierarchy_switch_changes_the_number_of_levels() {
    let device = Device::flex();
    let full = HvqModel::new(&tiny(2), &device).unwrap();
    assert_eq!(full.quantize_lists.len(), 5);
    let mut cfg = tiny(2);
    cfg.ablation.hierarchical = false;
    let single = HvqModel::new(&cfg, &device).unwrap();
    assert_eq!(single.quantize_lists.len(), 1, "one VQ layer");
    let x = feature(2, &device);
    let out = single.forward_eval(x, &[0, 1]).unwrap();
    assert_eq!(out.levels.len(), 1);
    // The single level quantises the last encoder output.
    assert_eq!(host(out.inputs[0].clone()), host(out.hidden[3].clone()));
    assert_eq!(out.decoded.dims(), [2, 196, 16]);
}

#[test]
fn codebook_switch_selects_per_class_codebooks() {
    let device = Device::flex();
    let model = HvqModel::new(&tiny(2), &device).unwrap();
    assert_eq!(model.quantize_lists[0].len(), 2);
    let x = feature(1, &device);
    let a = model.forward_eval(x.clone(), &[0]).unwrap();
    let b = model.forward_eval(x.clone(), &[1]).unwrap();
    assert_ne!(
        indices(&a, 4),
        indices(&b, 4),
        "different classes, different codebooks"
    );

    let mut cfg = tiny(2);
    cfg.ablation.switch_codebooks = false;
    let shared = HvqModel::new(&cfg, &device).unwrap();
    assert_eq!(
        shared.quantize_lists[0].len(),
        1,
        "one shared codebook per level"
    );
    let a = shared.forward_eval(x.clone(), &[0]).unwrap();
    let b = shared.forward_eval(x, &[1]).unwrap();
    for level in 0..5 {
        assert_eq!(
            indices(&a, level),
            indices(&b, level),
            "shared codebooks ignore the class"
        );
    }
    // The experts still switch.
    assert_ne!(host(a.rec), host(b.rec));
}

#[test]
fn expert_switch_selects_per_class_experts() {
    let device = Device::flex();
    let mut cfg = tiny(2);
    cfg.ablation.switch_experts = false;
    cfg.ablation.switch_codebooks = false;
    let model = HvqModel::new(&cfg, &device).unwrap();
    assert_eq!(model.output_proj_list.len(), 1, "one shared expert");
    let x = feature(1, &device);
    let a = model.forward_eval(x.clone(), &[0]).unwrap();
    let b = model.forward_eval(x.clone(), &[1]).unwrap();
    assert_eq!(
        host(a.rec),
        host(b.rec),
        "nothing depends on the class any more"
    );

    let mut cfg = tiny(2);
    cfg.ablation.switch_codebooks = false;
    let model = HvqModel::new(&cfg, &device).unwrap();
    assert_eq!(model.output_proj_list.len(), 2);
    let a = model.forward_eval(x.clone(), &[0]).unwrap();
    let b = model.forward_eval(x, &[1]).unwrap();
    // Same codes and decoder output; only the expert differs.
    assert_eq!(host(a.decoded.clone()), host(b.decoded.clone()));
    assert_ne!(host(a.rec), host(b.rec));
}

#[test]
fn pot_switch_adds_alpha_times_pot_to_the_loss() {
    let device = Device::flex();
    let mut cfg = tiny(2);
    let model = HvqModel::new(&cfg, &device).unwrap();
    let x = feature(2, &device);
    let out = model.forward_eval(x.clone(), &[0, 1]).unwrap();
    let off = objective(&out, x.clone(), &[0, 1], &cfg);
    assert!(off.pot.is_none());
    cfg.pot_weight = 0.01;
    let on = objective(&out, x.clone(), &[0, 1], &cfg);
    let pot = on.pot.clone().expect("POT computed").into_scalar::<f32>();
    // Independently: Σ over levels of the batch-mean POT with each sample's class codebook.
    let mut want = 0.0f32;
    for (level, input) in out.levels.iter().zip(&out.inputs) {
        want += pot_loss(
            input.clone(),
            level.prototypes.clone(),
            cfg.pot_temperature(),
        )
        .mean()
        .into_scalar::<f32>();
    }
    assert!((pot - want).abs() < 1e-5 * want.abs().max(1.0));
    let diff = on.total.into_scalar::<f32>() - off.total.into_scalar::<f32>();
    assert!(
        (diff - 0.01 * pot).abs() < 1e-5,
        "total grows by α·POT: {diff} vs {}",
        0.01 * pot
    );
}

#[test]
fn classifier_chooses_codebooks_and_expert_when_no_class_is_given() {
    let device = Device::flex();
    let backbone = BackboneConfig::efficientnet_lite0();
    let mut hvq = HvqConfig::paper(
        backbone.feature_channels(),
        vec!["mono".into(), "poly".into()],
    );
    hvq.embed_dim = 8;
    hvq.heads = 2;
    hvq.ffn_dim = 16;
    hvq.codes = 6;
    hvq.classifier = Some(ClassifierConfig {
        hidden: 4,
        weight: 1.0,
    });
    let config = ModelConfig { backbone, hvq };
    let img = hvq::preprocess::load(&repo_root().join("core/tests/data/chelsea.png")).unwrap();
    for favoured in [0usize, 1] {
        let mut d = Detector::new(config.clone(), &device).unwrap();
        d.backbone = hvq::pretrained::lite0_tensors()
            .unwrap()
            .load_into(d.backbone)
            .unwrap();
        // Logits = bias only: +50 for the favoured class, −50 for the other.
        let head = d.hvq.classifier.as_mut().unwrap();
        head.fc2.weight = Param::from_tensor(Tensor::zeros([2, 4], &device));
        let bias: Vec<f32> = (0..2)
            .map(|c| if c == favoured { 50.0 } else { -50.0 })
            .collect();
        head.fc2.bias = Param::from_tensor(Tensor::from_data(TensorData::new(bias, [2]), &device));
        let inspector = Inspector::new(d, device.clone());
        let auto = inspector.inspect(&img, &ClassChoice::Auto).unwrap();
        assert_eq!(
            auto.class_index, favoured,
            "the classifier's choice is used"
        );
        let explicit = inspector
            .inspect(&img, &ClassChoice::Index(favoured))
            .unwrap();
        assert_eq!(
            auto.model_map, explicit.model_map,
            "same codebooks and expert as the explicit class"
        );
        // A caller-given class overrides the classifier.
        let other = inspector
            .inspect(&img, &ClassChoice::Index(1 - favoured))
            .unwrap();
        assert_eq!(other.class_index, 1 - favoured);
        assert_ne!(other.model_map, explicit.model_map);
    }
}

/// The transformer dropout (the reference's 0.1) acts in training only and changes the
/// computation when on. (That its masks follow the seed, so a resumed run matches, is checked by
/// the CLI's kill-and-resume test, one process per run: the tests here share the device
/// generator with tests running in parallel threads.)
#[test]
fn dropout_applies_in_training_only() {
    let device = Device::flex();
    let x = feature(2, &device);
    let classes = [0, 1];
    let base = HvqModel::new(&tiny(2), &device).unwrap().to_native();
    // The same weights under a given dropout probability.
    let model = |p: f64| {
        let mut cfg = tiny(2);
        cfg.dropout = p;
        HvqModel::new(&cfg, &device)
            .unwrap()
            .load_native(&base)
            .unwrap()
    };
    let rec =
        |out: hvq::model::HvqOutput| -> Vec<f32> { out.rec.into_data().try_to_vec().unwrap() };
    let train = |p: f64, seed: u64| {
        let mut m = model(p);
        device.seed(seed);
        rec(m.forward_train(x.clone(), &classes).unwrap())
    };
    // Off: nothing random in the training forward.
    assert_eq!(train(0.0, 1), train(0.0, 2));
    // On: other masks for another seed, and not the computation without dropout.
    assert_ne!(train(0.5, 1), train(0.5, 2));
    assert_ne!(train(0.5, 1), train(0.0, 1));
    // Inference never drops: the eval forward with p = 0.5 equals the one with p = 0.
    let eval = |p: f64| rec(model(p).forward_eval(x.clone(), &classes).unwrap());
    assert_eq!(eval(0.5), eval(0.0));
}
