//! Data-parallel training (`--devices`): N replicas with a batch split across them must train
//! as one device with the whole batch — the same parameters and the same EMA codebooks, up to
//! float rounding — keep every replica equal to the first after each step, and checkpoint runs
//! that resume exactly on another device count.
//!
//! The reference is an independent computation: the single-device trainer, whose step is
//! pinned to the official code by the golden tests (`golden_hvq_small_trainstep_*`).

mod common;

use std::path::Path;

use burn::tensor::Device;
use hvq::config::{HvqConfig, ModelConfig};
use hvq::device::DeviceChoice;
use hvq::features::FeatureSet;
use hvq::train::{TrainConfig, Trainer, TrainingData};
use hvq::weights::TensorMap;

use common::tree::{make_tree, run, temp, train};

/// Three classes (so samples of one class fall into both shards of a batch), the paper's
/// objective (POT loss and classifier on) at a small width, dropout off: with dropout each
/// device draws its own masks, and the runs are no longer comparable.
fn model_config() -> ModelConfig {
    let names: Vec<String> = (0..3).map(|i| format!("c{i}")).collect();
    let mut hvq = HvqConfig::paper(12, names);
    hvq.embed_dim = 8;
    hvq.heads = 2;
    hvq.ffn_dim = 16;
    hvq.codes = 6;
    hvq.dropout = 0.0;
    ModelConfig {
        backbone: hvq::config::BackboneConfig::efficientnet_lite0(),
        hvq,
    }
}

/// 26 samples of 12×14×14 features: the last batch of 8 is a partial one (2 samples).
fn features() -> FeatureSet {
    let shape = [12, 14, 14];
    let per: usize = shape.iter().product();
    let n = 26;
    // A fixed pseudo-random pattern per sample, offset by its class so the classes differ.
    let classes: Vec<usize> = (0..n).map(|i| (i * 7 + i / 3) % 3).collect();
    let values = (0..n * per)
        .map(|k| {
            let (i, j) = (k / per, k % per);
            let h = (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            (h as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
                + classes[i] as f32 * 0.3 * ((j % 5) as f32 - 2.0)
        })
        .collect();
    FeatureSet {
        shape,
        values,
        classes,
    }
}

/// The trainer seeds the CPU's generator (initial weights): runs in parallel test threads would
/// interleave their draws.
fn generator_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn schedule(epochs: usize) -> TrainConfig {
    let mut t = TrainConfig::official();
    t.epochs = epochs;
    t.batch_size = 8;
    t.lr_steps = vec![];
    t.optimizer.lr = 1e-3;
    t.checkpoint_every = 1;
    t
}

/// Train `epochs` (of `schedule(total)`) on `replicas` (the first is replica 0), from a fresh
/// run or resumed from `out`; after every epoch the replicas must be equal to replica 0.
fn train_on(replicas: &[Device], out: &Path, total: usize, epochs: usize, resume: bool) -> Trainer {
    let features = features();
    let mut trainer = if resume {
        Trainer::resume(out, "synthetic", None, &replicas[0], None).unwrap()
    } else {
        Trainer::new(
            model_config(),
            schedule(total),
            "synthetic",
            out,
            &replicas[0],
            None,
        )
        .unwrap()
    };
    trainer.add_replicas(&replicas[1..]).unwrap();
    assert_eq!(trainer.device_count(), replicas.len());
    for _ in 0..epochs {
        trainer
            .run(TrainingData::Features(&features), Some(1), &mut |_| {})
            .unwrap();
        assert_eq!(
            trainer.replica_divergence().unwrap(),
            0.0,
            "replicas out of step after epoch {}",
            trainer.epochs_done
        );
    }
    trainer
}

/// Largest absolute difference per parameter group (codebooks apart from the rest).
fn differences(a: &TensorMap, b: &TensorMap) -> (f32, f32) {
    let (mut network, mut codebooks) = (0.0f32, 0.0f32);
    for name in a.names() {
        let (x, y) = (a.get(name).unwrap(), b.get(name).unwrap());
        assert_eq!(x.shape, y.shape, "{name}");
        let d = x
            .data
            .iter()
            .zip(&y.data)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(d.is_finite(), "{name}");
        if name.starts_with("quantize_list") {
            codebooks = codebooks.max(d);
        } else {
            network = network.max(d);
        }
    }
    (network, codebooks)
}

/// Some batch of the run splits a class across the two shards: otherwise the EMA order across
/// replicas would not be exercised.
fn a_class_spans_both_shards(epochs: usize) {
    let f = features();
    let spans = (0..epochs).any(|e| {
        hvq::train::epoch_order(f.len(), 133, e)
            .chunks(8)
            .any(|batch| {
                let (a, b) = batch.split_at(batch.len().div_ceil(2));
                a.iter()
                    .any(|&i| b.iter().any(|&j| f.classes[i] == f.classes[j]))
            })
    });
    assert!(
        spans,
        "the fixture must put a class in both shards of a batch"
    );
}

// Tolerances, from the numbers measured on this fixture (flex on a 2-core AMD EPYC, lavapipe for
// wgpu; 8 steps at lr 1e-3, 2026-12-01), with a factor ~4 of headroom. One device and N
// replicas compute the same sums in different groupings (per-shard products, gradients summed
// over shards) and AdamW amplifies rounding where a gradient is near zero (up to lr per step);
// the codebooks follow encoder outputs that carry those differences. Measured: 2 replicas vs one
// device 1.1e-5 (network) and 1.3e-4 (codebooks); resumed across device counts 4.5e-5 and
// 1.6e-3; a CPU and a wgpu replica vs the CPU alone 5.8e-4 and 9.7e-3 (wgpu's own rounding).
// Not yet measured: how far a wrong EMA order or gradient weighting lands (to show these bounds
// discriminate) — next step on issue 17.
const CPU: (f32, f32) = (5e-5, 5e-4);
const RESUMED: (f32, f32) = (2e-4, 6e-3);
const MIXED: (f32, f32) = (2.5e-3, 4e-2);

#[test]
fn replicas_on_the_cpu_train_as_one_device_with_the_whole_batch() {
    let _generator = generator_lock();
    a_class_spans_both_shards(2);
    let cpu = Device::flex();
    let one = train_on(std::slice::from_ref(&cpu), &temp("dp-one"), 2, 2, false).network();
    for replicas in [2, 3] {
        let many = train_on(&vec![cpu.clone(); replicas], &temp("dp-many"), 2, 2, false).network();
        let (network, codebooks) = differences(&one, &many);
        eprintln!(
            "{replicas} replicas vs one device: network {network:e}, codebooks {codebooks:e}"
        );
        assert!(
            network <= CPU.0,
            "{replicas} replicas: network differs by {network}"
        );
        assert!(
            codebooks <= CPU.1,
            "{replicas} replicas: codebooks differ by {codebooks}"
        );
    }
}

#[test]
fn a_multi_device_run_resumes_exactly_on_another_device_count() {
    let _generator = generator_lock();
    let cpu = Device::flex();
    let straight = train_on(
        std::slice::from_ref(&cpu),
        &temp("dp-straight"),
        3,
        3,
        false,
    )
    .network();
    // Epoch 1 on two replicas, epoch 2 on one device, epoch 3 on three replicas.
    let out = temp("dp-resumed");
    train_on(&[cpu.clone(), cpu.clone()], &out, 3, 1, false);
    train_on(std::slice::from_ref(&cpu), &out, 3, 1, true);
    let resumed = train_on(&vec![cpu.clone(); 3], &out, 3, 1, true);
    assert_eq!(resumed.epochs_done, 3);
    let (network, codebooks) = differences(&straight, &resumed.network());
    eprintln!(
        "resumed across device counts vs straight: network {network:e}, codebooks {codebooks:e}"
    );
    assert!(network <= RESUMED.0, "network differs by {network}");
    assert!(codebooks <= RESUMED.1, "codebooks differ by {codebooks}");
}

#[test]
fn a_cpu_and_a_wgpu_replica_train_as_the_cpu_alone() {
    let _generator = generator_lock();
    let cpu = Device::flex();
    let gpu = hvq::device::create(DeviceChoice::Wgpu)
        .expect("wgpu (lavapipe) is set up by scripts/setup.sh");
    let one = train_on(std::slice::from_ref(&cpu), &temp("dp-cpu"), 2, 2, false).network();
    let mixed = train_on(&[cpu, gpu], &temp("dp-mixed"), 2, 2, false).network();
    let (network, codebooks) = differences(&one, &mixed);
    eprintln!("cpu + wgpu vs cpu: network {network:e}, codebooks {codebooks:e}");
    assert!(network <= MIXED.0, "network differs by {network}");
    assert!(codebooks <= MIXED.1, "codebooks differ by {codebooks}");
}

/// The CLI: `--devices cpu*2` trains, says how the batch is split, and saves a model.
#[test]
fn the_cli_trains_on_a_device_list() {
    let root = temp("dp-tree");
    make_tree(&root);
    let data = format!("mvtec:{}", root.display());
    let out = temp("dp-cli");
    let text = run(train(&data, &out, 1).args(["--devices", "cpu*2"]));
    assert!(text.contains("devices: 2 replicas (cpu*2)"), "{text}");
    assert!(out.join("model.safetensors").exists(), "{text}");
    let (code, text) = common::tree::output(train(&data, &out, 1).args(["--devices", "cpu*0"]));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("zero copies"), "{text}");
    for d in [root, out] {
        std::fs::remove_dir_all(d).ok();
    }
}
