//! Timing the pipeline stage by stage (`hvq bench`): warm-up, repeated runs, median and minimum.
//!
//! Each stage is followed by a device sync so its time is its own; the end-to-end time comes from
//! separate runs without intermediate syncs (what a user sees). Results serialise to JSON so a
//! later run can be compared with this one.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::{BackboneConfig, HvqConfig, ModelConfig};
use crate::detector::Detector;
use crate::device::kernel_profile::KernelProfile;
use crate::error::{HvqError, Result};
use crate::model::HvqModel;
use crate::preprocess;
use crate::train::{AdamW, AdamWConfig, objective};

/// Which model to time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchModel {
    /// The paper's full configuration: EfficientNet-B4 + C = 256, K = 512, 15 classes (random weights).
    Official,
    /// The shipped default model (Lite0 + its network).
    Default,
}

/// What became of [`BenchReport::end_to_end_replayed`]'s recording.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplayCheck {
    /// The pass was recorded and each batch replayed it; `false`: the pass ran again for each
    /// batch (the backend records nothing, or refused this recording).
    pub recorded: bool,
    /// Why the pass was not recorded (the backend's words), when it was not.
    pub not_recorded: Option<String>,
    /// The largest difference between a replay's image scores and those of the pass run
    /// directly on the same images (0 when the replay runs the same kernels on the same values);
    /// `None` when no replay ran.
    pub max_score_difference: Option<f64>,
    /// What the recording took, once, before the first replay: its warm-up passes and the
    /// recorded pass, until the device is idle (milliseconds, the routines already chosen and
    /// the kernels compiled by the runs before, as for an inspector's second batch); `None`
    /// when it failed (or in reports from before 2026-12-07).
    #[serde(default)]
    pub record_ms: Option<f64>,
}

/// Median and minimum of one stage, milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageTime {
    /// Stage name.
    pub stage: String,
    /// Median over the timed runs.
    pub median_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
}

/// Everything one `hvq bench` run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    /// CPU model and thread count, OS.
    pub machine: String,
    /// The CPU's vector instruction sets and which the CPU kernels used (`HVQ_CPU_ISA`): what a
    /// CPU figure ran on.
    #[serde(default)]
    pub cpu_isa: Option<crate::kernels::isa::CpuIsa>,
    /// Backend.
    pub device: String,
    /// The adapter the backend ran on, as it names itself (`NVIDIA H200`, `llvmpipe (LLVM …)`);
    /// `None` on the CPU backend. Tells a GPU figure from one taken on a software driver.
    #[serde(default)]
    pub adapter: Option<String>,
    /// How the matrix products were computed (`--precision`).
    #[serde(default)]
    pub precision: crate::device::precision::Precision,
    /// The routine of the products no tensor core took (`HVQ_GPU_MATMUL`,
    /// `device::gpu_matmul`); `None` on the CPU backend and in reports from before it existed.
    #[serde(default)]
    pub gpu_matmul: Option<String>,
    /// With `HVQ_GPU_MATMUL=auto`, each kind of product the run met and what burn's routine and
    /// hvq's tiled kernel took for it (`kernels::product_choice`); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub product_timings: Vec<crate::kernels::product_choice::ProductTiming>,
    /// With `HVQ_GPU_ATTENTION=auto` on a GPU where attention is timed, each kind of inference
    /// attention the run met and what hvq's split kernel and burn's flash kernel took for it
    /// (`kernels::attention_choice`); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attention_timings: Vec<crate::kernels::attention_choice::AttentionTiming>,
    /// With `HVQ_TRAIN_ATTENTION=auto` on a GPU where training attention is timed, each kind of
    /// training attention the run met and what the fused and the composed form took for it, a
    /// forward and backward pass each (`kernels::train_attention_choice`); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train_attention_timings: Vec<crate::kernels::train_attention_choice::TrainAttentionTiming>,
    /// How training's attention ran on the GPU (`HVQ_TRAIN_ATTENTION`,
    /// `kernels::train_attention`: fused, composed or auto); `None` on the CPU backend and in
    /// reports from before it existed.
    #[serde(default)]
    pub train_attention: Option<String>,
    /// Which kernel inference's attention ran on the GPU (`HVQ_GPU_ATTENTION`,
    /// `kernels::inference_attention`: split, flash or auto); `None` on the CPU backend and in reports
    /// from before it existed.
    #[serde(default)]
    pub inference_attention: Option<String>,
    /// Which thread ran the GPU device's work (`HVQ_DEVICE_THREAD`, `device::device_thread`:
    /// runner or caller); `None` on the CPU backend and in reports from before it existed.
    #[serde(default)]
    pub device_thread: Option<String>,
    /// What compiled the wgpu device's kernels (`HVQ_WGPU_COMPILER`, `device::wgpu_compiler`:
    /// spirv or wgsl, as the started device got it); `None` on the CPU and CUDA and in reports
    /// from before it existed.
    #[serde(default)]
    pub kernel_compiler: Option<String>,
    /// Whether this hvq was built with debug assertions (cargo's `dev` and `test` profiles, as
    /// `cargo build` and the tests make) rather than `--release`. Its dependencies then keep
    /// their checks too (wgpu-core traces every snatch lock, capturing a backtrace when
    /// `RUST_BACKTRACE` is set, and wgpu's instance takes its `DEBUG` and `VALIDATION` flags), so
    /// its host costs are not a release build's: the H200 runs of 2026-12-04 timed such a build.
    /// `None` in reports from before it existed.
    #[serde(default)]
    pub debug_assertions: Option<bool>,
    /// Model timed.
    pub model: BenchModel,
    /// Images per batch.
    pub batch: usize,
    /// Timed runs per measurement (after warm-up).
    pub runs: usize,
    /// Per-stage times (synchronised after each stage).
    pub stages: Vec<StageTime>,
    /// End to end, no intermediate syncs: decode + preprocess + forward + map + readback, until
    /// the device is idle.
    pub end_to_end: StageTime,
    /// Images per second from the end-to-end median.
    pub images_per_second: f64,
    /// The host's share of an end-to-end run: from its start until everything is queued (the
    /// scores returned, before the read-back waits for the device). On a GPU backend, where
    /// launching is asynchronous, an end-to-end time close to this is bound by the host's
    /// per-launch work, not by the kernels (on CUDA; cubecl's wgpu stream waits for its previous
    /// submission after 512 queued tasks, so there a slow device shows in it too). `None` in
    /// reports from before it existed.
    #[serde(default)]
    pub end_to_end_queued: Option<StageTime>,
    /// End to end with the inference pass recorded once and replayed for each batch
    /// ([`crate::replay`]; GPU backends only): decode and preprocess on the host as in
    /// `end_to_end`, the values written into the recorded input, the replay, the read-back.
    /// `None` on the CPU and in reports from before it existed.
    #[serde(default)]
    pub end_to_end_replayed: Option<StageTime>,
    /// Of `end_to_end_replayed`, the time until the replay is queued (see `end_to_end_queued`).
    #[serde(default)]
    pub end_to_end_replayed_queued: Option<StageTime>,
    /// Whether the pass was recorded, and the replays' scores against the pass run directly.
    #[serde(default)]
    pub replay: Option<ReplayCheck>,
    /// Of the staged preprocess: the upload of the host's finished batch to the device and the
    /// wait for it (the rest is decoding, resizing and normalising on the host). On the H200
    /// (2026-12-04, wgpu) preprocess took 7.8 ms at batch 1 where the CPU backend's (no upload)
    /// takes about 1 ms: this says whether the transfer is the difference. `None` in reports
    /// from before it existed.
    #[serde(default)]
    pub preprocess_upload: Option<StageTime>,
    /// One training step (batch `batch`) on cached features.
    pub train_step_cached: StageTime,
    /// The host's share of a training step on cached features: until the forward, backward and
    /// update are queued, before the sync (see `end_to_end_queued`). `None` in reports from
    /// before it existed.
    #[serde(default)]
    pub train_step_queued: Option<StageTime>,
    /// The host's cost of one operation, microseconds: [`OVERHEAD_OPS`] element-wise additions
    /// on a one-element tensor issued back to back, the time until all are queued divided by
    /// their number (median over the runs). Multiplied by a pass's launches (`--kernels`) it is
    /// that pass's floor however fast the device. `None` in reports from before it existed.
    #[serde(default)]
    pub operation_host_us: Option<f64>,
    /// One training step including the frozen backbone's forward.
    pub train_step_uncached: StageTime,
    /// Transformer dropout during the timed training steps (0 unless asked: the PyTorch script
    /// trains without it).
    #[serde(default)]
    pub train_dropout: f64,
    /// Peak resident memory of the process, MiB (host).
    pub peak_rss_mib: Option<f64>,
    /// The kernels of one extra, profiled pass (inference stages and a training step on cached
    /// features), when asked for (`--kernels`; GPU backends only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<KernelProfile>,
}

fn stats(stage: &str, mut v: Vec<f64>) -> StageTime {
    v.sort_by(f64::total_cmp);
    StageTime {
        stage: stage.to_string(),
        median_ms: median_of_sorted(&v),
        min_ms: v.first().copied().unwrap_or(f64::NAN),
    }
}

/// The upper median of sorted values (NaN for none).
fn median_of_sorted(v: &[f64]) -> f64 {
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn sync(device: &Device) -> Result<()> {
    device
        .sync()
        .map_err(|e| HvqError::Device(format!("{e:?}")))
}

/// The map and the image scores read back to the host as values, as `hvq predict` reads them.
/// burn's `into_data` alone is not that on a GPU backend: it returned in 0.2 ms, and touching its
/// values then took 270 ms, the launched work still queued or running (lavapipe, the shipped
/// model's backbone at batch 8, 2026-12-04), so a bench that dropped it unread timed its
/// end-to-end run short and charged the rest to whatever synchronised next.
fn read_values(map: Tensor<4>, image: Tensor<1>) -> Result<()> {
    crate::device::read_back(map)?;
    crate::device::read_back(image)?;
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Build the model to time.
pub fn model(which: BenchModel, device: &Device) -> Result<Detector> {
    match which {
        BenchModel::Default => super::ModelSource::Shipped.load(device),
        BenchModel::Official => {
            let backbone = BackboneConfig::efficientnet_b4();
            let mut hvq =
                HvqConfig::official(backbone.feature_channels(), HvqConfig::mvtec_classes());
            // The PyTorch side (scripts/pytorch/bench_torch.py) trains without dropout: the
            // training steps compare the same computation.
            hvq.dropout = 0.0;
            Detector::new(ModelConfig { backbone, hvq }, device)
        }
    }
}

/// A description of this machine.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu}, {threads} threads, {}", std::env::consts::OS)
}

/// Peak resident set size (VmHWM) of this process.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The inference stages `hvq bench` times, in order (the model's own are named by
/// [`Detector::score_staged`]).
pub const STAGES: [&str; 8] = [
    "preprocess",
    "backbone",
    "encoder",
    "vq",
    "decoder",
    "map + ot",
    "upsample + score",
    "readback",
];

/// Operations per measurement of [`BenchReport::operation_host_us`]: below the 512 queued tasks
/// after which cubecl's wgpu stream waits for its previous submission, so a slow device does not
/// show in it.
pub const OVERHEAD_OPS: usize = 256;

/// The parts of a training step the kernel profile tells apart.
pub const TRAIN_STAGES: [&str; 3] = ["train forward", "train backward", "optimizer"];

/// How many images per batch and how many runs.
#[derive(Clone, Copy, Debug)]
pub struct BenchOptions {
    /// Images per batch.
    pub batch: usize,
    /// Untimed runs first (kernel compilation, caches, autotuning).
    pub warmup: usize,
    /// Timed runs.
    pub runs: usize,
    /// Transformer dropout in the timed training steps.
    pub train_dropout: f64,
    /// After the timed runs, profile the kernels of one more pass ([`KernelProfile`]).
    pub kernels: bool,
}

/// Time inference and training of `detector` on `device` with an encoded sample image.
pub fn run(
    detector: &Detector,
    which: BenchModel,
    device: &Device,
    device_name: &str,
    image_bytes: &[u8],
    options: BenchOptions,
) -> Result<BenchReport> {
    let BenchOptions {
        batch,
        warmup,
        runs,
        train_dropout,
        kernels,
    } = options;
    if kernels {
        profiler_available(device)?;
    }
    let cfg = &detector.config;
    let size = cfg.backbone.input_size;
    let classes: Vec<usize> = (0..batch).map(|i| i % cfg.hvq.num_classes).collect();
    let names = STAGES;
    let mut per_stage: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let (mut e2e, mut e2e_queued, mut uploads) = (Vec::new(), Vec::new(), Vec::new());

    let slots: Vec<usize> = (0..batch).collect();
    let host_values = || {
        preprocess::batch_values(
            &slots,
            |_| preprocess::decode(image_bytes, "bench image"),
            size,
            &cfg.backbone.input_norm,
        )
    };
    let preprocess_batch =
        || -> Result<Tensor<4>> { Ok(preprocess::upload(host_values()?, batch, size, device)) };

    for it in 0..warmup + runs {
        // Staged, synchronised.
        let mut t = Vec::with_capacity(names.len());
        let t0 = Instant::now();
        let values = host_values()?;
        let uploading = Instant::now();
        let x = preprocess::upload(values, batch, size, device);
        sync(device)?;
        t.push(ms(t0));
        let upload_ms = ms(uploading);
        let t0 = Instant::now();
        let feat = detector.features(x);
        sync(device)?;
        t.push(ms(t0));
        // The model's own stages, each synchronised and timed where it ends.
        let mut t0 = Instant::now();
        let mut failed = None;
        let (_, scores) = detector.score_staged(feat, &classes, &mut |_| {
            if let Err(e) = sync(device) {
                failed.get_or_insert(e);
            }
            t.push(ms(t0));
            t0 = Instant::now();
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        let (map224, score) = (scores.map, scores.image);
        let t0 = Instant::now();
        read_values(map224, score)?;
        t.push(ms(t0));
        if it >= warmup {
            for (s, v) in per_stage.iter_mut().zip(t) {
                s.push(v);
            }
            uploads.push(upload_ms);
        }

        // End to end without intermediate syncs.
        let t0 = Instant::now();
        let x = preprocess_batch()?;
        let feat = detector.features(x);
        let (_, s) = detector.score(feat, &classes)?;
        let queued = ms(t0);
        read_values(s.map, s.image)?;
        // Until the device is idle, as PyTorch's read-back (which waits for its stream) is:
        // launched work the map and scores do not depend on would otherwise finish inside the
        // next run's first timed stage.
        sync(device)?;
        if it >= warmup {
            e2e.push(ms(t0));
            e2e_queued.push(queued);
        }
    }

    let operation_host_us = operation_host_cost(device, warmup, runs)?;

    // Training steps (the reconstruction network only; the backbone stays frozen).
    let ad = device.clone().autodiff();
    let mut train_cfg = cfg.hvq.clone();
    train_cfg.dropout = train_dropout;
    let mut net = HvqModel::new(&train_cfg, &ad)?.load_native(&detector.hvq.to_native())?;
    let mut opt = AdamW::new(AdamWConfig::default());
    let (mut cached, mut uncached, mut cached_queued) = (Vec::new(), Vec::new(), Vec::new());
    let f = cfg.hvq.feature_channels;
    let side = cfg.hvq.feature_size;
    for it in 0..warmup + runs {
        for with_backbone in [false, true] {
            let t0 = Instant::now();
            let feat: Tensor<4> = if with_backbone {
                let x = preprocess_batch()?;
                detector.features(x).autodiff()
            } else {
                Tensor::random([batch, f, side, side], Distribution::Normal(0.0, 1.0), &ad)
            };
            net = train_step(net, &mut opt, feat, &classes, &cfg.hvq, &mut |_| {})?;
            let queued = ms(t0);
            sync(&ad)?;
            if it >= warmup {
                if with_backbone {
                    uncached.push(ms(t0));
                } else {
                    cached.push(ms(t0));
                    cached_queued.push(queued);
                }
            }
        }
    }

    // One more pass, every kernel launch recorded (after the timed runs, which it would slow).
    let kernels = if kernels {
        let train_feat: Tensor<4> =
            Tensor::random([batch, f, side, side], Distribution::Normal(0.0, 1.0), &ad);
        Some(profile_pass(
            detector,
            preprocess_batch,
            &classes,
            (net, &mut opt),
            train_feat,
        )?)
    } else {
        None
    };

    let end_to_end = stats("end to end", e2e);
    // The GPU's identity, asked once (`None` on the CPU backend).
    let adapter = crate::device::adapter_info(device);
    // On a GPU, the end-to-end runs again with the pass recorded once and replayed; last, so
    // that a failure there (reported, not fatal) cannot spoil the measurements above.
    let replayed = adapter.as_ref().map(|_| {
        time_replayed(detector, device, &classes, host_values, warmup, runs).unwrap_or_else(|e| {
            ReplayedRuns {
                whole: Vec::new(),
                queued: Vec::new(),
                check: ReplayCheck {
                    recorded: false,
                    not_recorded: Some(format!("the replayed runs failed: {e}")),
                    max_score_difference: None,
                    record_ms: None,
                },
            }
        })
    });

    Ok(BenchReport {
        machine: machine(),
        cpu_isa: Some(crate::kernels::isa::CpuIsa::detect()),
        device: device_name.to_string(),
        gpu_matmul: adapter
            .as_ref()
            .map(|_| crate::device::gpu_matmul::current().name().to_string()),
        product_timings: crate::kernels::product_choice::timings(),
        attention_timings: crate::kernels::attention_choice::timings(),
        train_attention_timings: crate::kernels::train_attention_choice::timings(),
        train_attention: adapter.as_ref().map(|_| {
            crate::kernels::train_attention::current()
                .name()
                .to_string()
        }),
        inference_attention: adapter.as_ref().map(|_| {
            crate::kernels::inference_attention::current()
                .name()
                .to_string()
        }),
        device_thread: adapter
            .as_ref()
            .map(|_| crate::device::device_thread::current().name().to_string()),
        kernel_compiler: crate::device::wgpu_compiler::in_use(device).map(|c| c.name().to_string()),
        adapter: adapter.map(|identity| identity.name),
        precision: crate::device::precision::current(),
        debug_assertions: Some(cfg!(debug_assertions)),
        model: which,
        batch,
        runs,
        stages: names
            .iter()
            .zip(per_stage)
            .map(|(n, v)| stats(n, v))
            .collect(),
        images_per_second: batch as f64 / (end_to_end.median_ms / 1e3),
        end_to_end,
        end_to_end_queued: Some(stats("end to end, host queued", e2e_queued)),
        preprocess_upload: Some(stats("  of which upload + wait", uploads)),
        end_to_end_replayed: replayed
            .as_ref()
            .filter(|r| !r.whole.is_empty())
            .map(|r| stats("end to end, replayed", r.whole.clone())),
        end_to_end_replayed_queued: replayed
            .as_ref()
            .filter(|r| !r.queued.is_empty())
            .map(|r| stats("end to end, replayed, queued", r.queued.clone())),
        replay: replayed.map(|r| r.check),
        train_step_cached: stats("train step (cached features)", cached),
        train_step_queued: Some(stats("train step, host queued", cached_queued)),
        operation_host_us: Some(operation_host_us),
        train_step_uncached: stats("train step (with backbone)", uncached),
        train_dropout,
        peak_rss_mib: peak_rss_mib(),
        kernels,
    })
}

/// The end-to-end runs of a recorded and replayed pass ([`time_replayed`]).
struct ReplayedRuns {
    whole: Vec<f64>,
    queued: Vec<f64>,
    check: ReplayCheck,
}

/// `runs` end-to-end runs (after `warmup`) of `detector`'s inference recorded once
/// ([`ReplayedInference`](crate::replay::ReplayedInference)) on the batch `images` gives: its
/// values made on the host each run (as the end-to-end runs make them), written into the
/// recorded input, the replay, the scores read back, the device idle. The replays' image scores
/// are compared with the pass run directly on the same batch.
fn time_replayed(
    detector: &Detector,
    device: &Device,
    classes: &[usize],
    images: impl Fn() -> Result<Vec<f32>>,
    warmup: usize,
    runs: usize,
) -> Result<ReplayedRuns> {
    let size = detector.config.backbone.input_size;
    let upload = |values: Vec<f32>| preprocess::upload(values, classes.len(), size, device);
    let direct = {
        let features = detector.features(upload(images()?));
        let (_, scores) = detector.score(features, classes)?;
        crate::device::read_back(scores.image)?
    };
    let input = upload(images()?);
    sync(device)?;
    let t0 = Instant::now();
    let given = crate::class_choice::BatchClasses::Given(classes.to_vec());
    let mut replayed = crate::replay::ReplayedInference::record(detector.clone(), input, &given)?;
    sync(device)?;
    let record_ms = ms(t0);
    let (mut whole, mut queued) = (Vec::new(), Vec::new());
    let mut max_score_difference = 0f64;
    for it in 0..warmup + runs {
        let t0 = Instant::now();
        let values = images()?;
        let resolved = replayed.run(&values)?;
        let launched = ms(t0);
        crate::device::read_back(resolved.maps)?;
        let image = crate::device::read_back(resolved.scores)?;
        sync(device)?;
        if it >= warmup {
            whole.push(ms(t0));
            queued.push(launched);
        }
        for (a, b) in image.iter().zip(&direct) {
            max_score_difference = max_score_difference.max(f64::from((a - b).abs()));
        }
    }
    Ok(ReplayedRuns {
        whole,
        queued,
        check: ReplayCheck {
            recorded: replayed.recorded(),
            not_recorded: replayed.not_recorded().map(str::to_string),
            max_score_difference: Some(max_score_difference),
            record_ms: Some(record_ms),
        },
    })
}

/// Median over `runs` (after `warmup`) of the host's time to queue one element-wise operation,
/// microseconds ([`BenchReport::operation_host_us`]). The device is idle when each run starts.
fn operation_host_cost(device: &Device, warmup: usize, runs: usize) -> Result<f64> {
    let mut per_op = Vec::with_capacity(runs);
    for it in 0..warmup + runs.max(1) {
        let mut x = Tensor::<1>::zeros([1], device);
        sync(device)?;
        let t0 = Instant::now();
        for _ in 0..OVERHEAD_OPS {
            x = x.add_scalar(1.0);
        }
        let queued = ms(t0);
        // The sum read back: the additions ran (and were not dropped unused).
        let total = crate::device::read_back(x)?;
        if total.first().copied() != Some(OVERHEAD_OPS as f32) {
            return Err(HvqError::Device(format!(
                "the operation-cost probe summed {total:?}, not {OVERHEAD_OPS}: the device \
                 computes wrongly"
            )));
        }
        if it >= warmup {
            per_op.push(queued * 1e3 / OVERHEAD_OPS as f64);
        }
    }
    per_op.sort_by(f64::total_cmp);
    Ok(median_of_sorted(&per_op))
}

/// One training step on `feat`, calling `mark` as each of [`TRAIN_STAGES`] begins.
fn train_step(
    mut net: HvqModel,
    opt: &mut AdamW,
    feat: Tensor<4>,
    classes: &[usize],
    cfg: &HvqConfig,
    mark: &mut dyn FnMut(&'static str),
) -> Result<HvqModel> {
    mark(TRAIN_STAGES[0]);
    let out = net.forward_train(feat.clone(), classes)?;
    let loss = objective(&out, feat, classes, cfg);
    mark(TRAIN_STAGES[1]);
    let grads = loss.total.backward();
    mark(TRAIN_STAGES[2]);
    let (net, _) = opt.step(net, &grads, 1e-4);
    Ok(net)
}

/// Whether kernels can be profiled on `device`: a GPU backend of this process (the CPU backend
/// launches no GPU kernels, and a remote device launches them in another process).
fn profiler_available(device: &Device) -> Result<()> {
    let refuse = |why: &str| Err(HvqError::Device(format!("--kernels: {why}")));
    #[cfg(all(any(feature = "wgpu", feature = "cuda"), not(target_family = "wasm")))]
    return match device.as_dispatch() {
        burn::backend::DispatchDevice::Cube(_) => Ok(()),
        _ => refuse(
            "only GPU backends launch kernels to profile (--device wgpu or cuda); this device is \
             not one of this process's GPUs",
        ),
    };
    #[cfg(not(all(any(feature = "wgpu", feature = "cuda"), not(target_family = "wasm"))))]
    {
        let _ = device;
        refuse("this build has no GPU backend (built without the wgpu and cuda features)")
    }
}

/// Run `pass` once with every kernel launch recorded; `pass` calls its argument with a stage
/// name as each stage begins. Waits for both devices (inference, autodiff) before and after.
#[cfg(all(any(feature = "wgpu", feature = "cuda"), not(target_family = "wasm")))]
fn profile_kernels(
    device: &Device,
    ad: &Device,
    pass: impl FnOnce(&mut dyn FnMut(&'static str)) -> Result<()>,
) -> Result<KernelProfile> {
    use crate::device::kernel_profile::KernelProfiler;
    sync(device)?;
    sync(ad)?;
    let profiler = KernelProfiler::start(STAGES[0]);
    let result = pass(&mut |stage| profiler.stage(stage));
    let synced = sync(device).and_then(|()| sync(ad));
    let profile = profiler.finish();
    result.and(synced).map(|()| profile)
}

#[cfg(not(all(any(feature = "wgpu", feature = "cuda"), not(target_family = "wasm"))))]
fn profile_kernels(
    _device: &Device,
    _ad: &Device,
    _pass: impl FnOnce(&mut dyn FnMut(&'static str)) -> Result<()>,
) -> Result<KernelProfile> {
    profiler_available(_device).map(|()| unreachable!("refused above: no GPU backend"))
}

/// The pass `hvq bench --kernels` profiles: the inference stages ([`STAGES`]) on the batch
/// `preprocess` uploads for `classes`, the scores read back, then one step of the training
/// network `net` (on the autodiff form of the detector's device) with `opt` on cached features
/// `train_feat` ([`TRAIN_STAGES`]), every kernel launch recorded under its stage. An error off
/// a GPU backend. `tests/cuda_layout.rs` compares it across memory layouts.
pub fn profile_pass(
    detector: &Detector,
    preprocess: impl FnOnce() -> Result<Tensor<4>>,
    classes: &[usize],
    (net, opt): (HvqModel, &mut AdamW),
    train_feat: Tensor<4>,
) -> Result<KernelProfile> {
    let device = detector.device();
    profiler_available(&device)?;
    let ad = train_feat.device();
    profile_kernels(&device, &ad, |profiler| {
        let x = preprocess()?;
        profiler("backbone");
        let feat = detector.features(x);
        profiler("encoder");
        let (_, s) = detector.score_staged(feat, classes, &mut |ended| {
            if let Some(next) = STAGES.iter().position(|s| *s == ended) {
                profiler(STAGES.get(next + 1).copied().unwrap_or("readback"));
            }
        })?;
        read_values(s.map, s.image)?;
        let hvq = &detector.config.hvq;
        train_step(net, opt, train_feat, classes, hvq, profiler).map(drop)
    })
}

/// Inference attention's `auto` timings ([`BenchReport::attention_timings`]): each kind, the
/// microseconds of both kernels and the one that runs it.
fn format_attention_timings(
    timings: &[crate::kernels::attention_choice::AttentionTiming],
) -> String {
    let kept = timings.iter().filter(|t| t.stored).count();
    let mut out = format!(
        "
inference attention timed (auto): {} kinds; {kept} kept from an earlier run \
         (HVQ_PRODUCT_CHOICES), with its times\n{:<52} {:>9} {:>9}  runs on\n",
        timings.len(),
        "heads × q · k, v (shape, strides)",
        "split µs",
        "flash µs"
    );
    let us = |t: Option<f64>| t.map_or_else(|| "-".to_string(), |us| format!("{us:.1}"));
    for t in timings {
        out.push_str(&format!(
            "{:<52} {:>9} {:>9}  {}{}\n",
            format!(
                "{} × {:?}{:?} · {:?}{:?}, {:?}{:?}",
                t.heads, t.q, t.q_strides, t.k, t.k_strides, t.v, t.v_strides
            ),
            us(t.split_us),
            us(t.flash_us),
            t.runs_on.name(),
            if t.stored { " (kept)" } else { "" }
        ));
    }
    out
}

/// Training attention's `auto` timings ([`BenchReport::train_attention_timings`]): each kind
/// (heads, tokens, how the inputs take the packed projection), the microseconds of a forward
/// and backward pass in both forms and the one that computes it.
fn format_train_attention_timings(
    timings: &[crate::kernels::train_attention_choice::TrainAttentionTiming],
) -> String {
    let kept = timings.iter().filter(|t| t.stored).count();
    let mut out = format!(
        "\ntraining attention timed (auto, forward and backward without dropout): {} kinds; \
         {kept} kept from an earlier run (HVQ_PRODUCT_CHOICES), with its times\n\
         {:<36} {:>10} {:>11}  runs on\n",
        timings.len(),
        "heads × tokens, inputs",
        "fused µs",
        "composed µs"
    );
    let us = |t: Option<f64>| t.map_or_else(|| "-".to_string(), |us| format!("{us:.1}"));
    for t in timings {
        out.push_str(&format!(
            "{:<36} {:>10} {:>11}  {}{}\n",
            format!("{} × {:?}, {}", t.heads, t.tokens(), t.blocks()),
            us(t.fused_us),
            us(t.composed_us),
            t.runs_on.name(),
            if t.stored { " (kept)" } else { "" }
        ));
    }
    out
}

/// The `auto` routine's timings ([`BenchReport::product_timings`]): how many kinds of product
/// the tiled kernel took, then each kind, the most time at stake first.
fn format_product_timings(timings: &[crate::kernels::product_choice::ProductTiming]) -> String {
    use crate::kernels::product_choice::ProductRoutine;
    let on_burn = timings
        .iter()
        .filter(|t| t.runs_on == ProductRoutine::Burn)
        .count();
    let kept = timings.iter().filter(|t| t.stored).count();
    let mut out = format!(
        "\nproducts timed (auto): {} kinds, {} on the tiled kernel, {on_burn} on burn's; {kept} \
         kept from an earlier run (HVQ_PRODUCT_CHOICES), with its times\n",
        timings.len(),
        timings.len() - on_burn
    );
    // One column per tiled routine any kind was timed on, in the routines' order.
    let mut routines: Vec<ProductRoutine> = timings
        .iter()
        .flat_map(|t| t.tiled_us.keys().copied())
        .collect();
    routines.sort();
    routines.dedup();
    out.push_str(&format!(
        "{:<44} {:>9}",
        "operands (shape, strides)", "burn µs"
    ));
    for r in &routines {
        out.push_str(&format!(" {:>9}", r.name()));
    }
    out.push_str(&format!(" {:>8}  runs on\n", "GFLOP/s"));
    let mut sorted: Vec<_> = timings.iter().collect();
    sorted.sort_by(|a, b| b.slowest_us().total_cmp(&a.slowest_us()));
    for t in sorted {
        out.push_str(&format!(
            "{:<44} {:>9.1}",
            format!(
                "{:?}{:?} · {:?}{:?}{}",
                t.lhs,
                t.lhs_strides,
                t.rhs,
                t.rhs_strides,
                // Timed with its layer's bias, activation and residual.
                if t.epilogue { " + epilogue" } else { "" }
            ),
            t.burn_us
        ));
        for r in &routines {
            match t.tiled_us.get(r) {
                Some(us) => out.push_str(&format!(" {us:>9.1}")),
                None => out.push_str(&format!(" {:>9}", "-")),
            }
        }
        // What the chosen routine achieves: the distance from the GPU's f32 ceiling.
        out.push_str(&format!(
            " {:>8.0}  {}{}\n",
            t.flops() / (t.chosen_us() * 1e3),
            t.runs_on.name(),
            if t.stored { " (kept)" } else { "" }
        ));
    }
    out
}

/// What the report's heading says of the build: nothing for a release build (or a report that
/// does not say), a warning for one with debug assertions, whose host costs may differ.
pub fn build_note(debug_assertions: Option<bool>) -> &'static str {
    match debug_assertions {
        Some(true) => {
            ", built with debug assertions (not --release: its host costs are not a release build's)"
        }
        _ => "",
    }
}

/// A readable table of a report.
pub fn format_report(r: &BenchReport) -> String {
    let mut out = format!(
        "{} on {} ({}), {} products{}, batch {}, {} runs, training dropout {}{}{}{}{}\n{:<30} {:>12} {:>12}\n",
        serde_json::to_string(&r.model)
            .unwrap_or_default()
            .trim_matches('"'),
        match &r.adapter {
            Some(adapter) => format!("{} [{adapter}]", r.device),
            None => r.device.clone(),
        },
        r.machine,
        r.precision,
        match &r.gpu_matmul {
            Some(routine) => format!(" (without tensor cores: {routine} routine)"),
            None => String::new(),
        },
        r.batch,
        r.runs,
        r.train_dropout,
        match (&r.inference_attention, &r.train_attention) {
            (Some(kernel), Some(form)) => {
                format!(", {kernel} inference attention, {form} training attention")
            }
            (None, Some(form)) => format!(", {form} training attention"),
            _ => String::new(),
        },
        match &r.device_thread {
            Some(thread) => format!(", device work on the {thread} thread"),
            None => String::new(),
        },
        match &r.kernel_compiler {
            Some(compiler) => format!(", kernels compiled to {compiler}"),
            None => String::new(),
        },
        build_note(r.debug_assertions),
        "stage",
        "median ms",
        "min ms"
    );
    // The preprocess stage's upload share on the line below it.
    let staged = r.stages.iter().flat_map(|s| {
        let part = (s.stage == STAGES[0])
            .then_some(r.preprocess_upload.as_ref())
            .flatten();
        std::iter::once(s).chain(part)
    });
    for s in staged.chain(
        [
            Some(&r.end_to_end),
            r.end_to_end_queued.as_ref(),
            r.end_to_end_replayed.as_ref(),
            r.end_to_end_replayed_queued.as_ref(),
            Some(&r.train_step_cached),
            r.train_step_queued.as_ref(),
            Some(&r.train_step_uncached),
        ]
        .into_iter()
        .flatten(),
    ) {
        out.push_str(&format!(
            "{:<30} {:>12.1} {:>12.1}\n",
            s.stage, s.median_ms, s.min_ms
        ));
    }
    out.push_str(&format!(
        "{:<30} {:>12.1}\n{:<30} {:>12.1}\n",
        "ms per image (end to end)",
        r.end_to_end.median_ms / r.batch as f64,
        "images per second",
        r.images_per_second
    ));
    if let Some(check) = &r.replay {
        if let Some(replayed) = &r.end_to_end_replayed {
            out.push_str(&format!(
                "{:<30} {:>12.1}\n",
                "images per second, replayed",
                r.batch as f64 / (replayed.median_ms / 1e3)
            ));
        }
        if let Some(record) = check.record_ms {
            out.push_str(&format!("{:<30} {:>12.1}\n", "recording, once", record));
            // How many replayed batches the saving takes to pay the recording back.
            if let Some(replayed) = &r.end_to_end_replayed {
                let saved = r.end_to_end.median_ms - replayed.median_ms;
                if check.not_recorded.is_none() && saved > 0.0 {
                    out.push_str(&format!(
                        "{:<30} {:>12.0}\n",
                        "batches to repay it",
                        (record / saved).ceil()
                    ));
                }
            }
        }
        out.push_str(&match &check.not_recorded {
            None => format!(
                "(replayed: the pass recorded once; image scores within {:e} of the pass run \
                 directly)\n",
                check.max_score_difference.unwrap_or(f64::NAN)
            ),
            Some(why) => format!(
                "(replayed: not recorded, the pass ran again for each batch: {})\n",
                why.lines().last().unwrap_or_default()
            ),
        });
    }
    if let Some(us) = r.operation_host_us {
        out.push_str(&format!("{:<30} {:>12.1}\n", "host µs per operation", us));
    }
    if let Some(m) = r.peak_rss_mib {
        out.push_str(&format!("{:<30} {:>12.0}\n", "peak host memory (MiB)", m));
    }
    if !r.product_timings.is_empty() {
        out.push_str(&format_product_timings(&r.product_timings));
    }
    if !r.attention_timings.is_empty() {
        out.push_str(&format_attention_timings(&r.attention_timings));
    }
    if !r.train_attention_timings.is_empty() {
        out.push_str(&format_train_attention_timings(&r.train_attention_timings));
    }
    if let Some(profile) = &r.kernels {
        let stage_ms = |name: &str| {
            r.stages
                .iter()
                .find(|s| s.stage == name)
                .map(|s| s.median_ms)
        };
        if let Some(us) = r.operation_host_us {
            // What the host alone costs a pass: its launches at the measured cost of one.
            let launches = |names: &[&str]| -> usize {
                profile
                    .stages
                    .iter()
                    .filter(|s| names.contains(&s.stage.as_str()))
                    .map(|s| s.launches)
                    .sum()
            };
            for (what, names) in [
                ("inference", &STAGES[..]),
                ("training step", &TRAIN_STAGES[..]),
            ] {
                let n = launches(names);
                out.push_str(&format!(
                    "{:<30} {:>12.1}   ({n} launches × {us:.1} µs)\n",
                    format!("host floor, {what} (ms)"),
                    n as f64 * us / 1e3
                ));
            }
        }
        out.push('\n');
        out.push_str(&crate::device::kernel_profile::format_profile(
            profile, stage_ms, 5,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::product_choice::{ProductRoutine, ProductTiming};

    fn timing(rows: usize, us: [f64; 4], runs_on: ProductRoutine) -> ProductTiming {
        ProductTiming {
            device: "gpu".into(),
            lhs: vec![rows, 256],
            lhs_strides: vec![256, 1],
            rhs: vec![256, 512],
            rhs_strides: vec![1, 256],
            burn_us: us[0],
            tiled_us: [
                (ProductRoutine::Tiled64, us[1]),
                (ProductRoutine::Tiled32, us[2]),
                (ProductRoutine::Quads128, us[3]),
            ]
            .into(),
            runs_on,
            epilogue: false,
            stored: false,
        }
    }

    /// A report from a build with debug assertions says so in its heading; a release build's,
    /// or one from before the field existed, says nothing of the build.
    #[test]
    fn the_heading_names_a_build_with_debug_assertions() {
        assert!(build_note(Some(true)).contains("built with debug assertions (not --release"));
        assert_eq!(build_note(Some(false)), "");
        assert_eq!(build_note(None), "");
    }

    /// The H200 report of 2026-12-04 (written before the field existed) still reads, as a build
    /// of unknown kind.
    #[test]
    fn a_report_without_the_build_field_still_reads() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../bench-results/h200-2026-12-04/b1/hvq-wgpu-official.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let report: BenchReport = serde_json::from_str(&text).unwrap();
        assert_eq!(report.debug_assertions, None);
        assert_eq!(report.batch, 1);
        assert!(build_note(report.debug_assertions).is_empty());
    }

    /// A GPU report's replayed runs: their rows below the end-to-end ones, the images per second
    /// they give, and whether the pass was recorded (with the scores' agreement) or why not;
    /// a report without them (the CPU's, older ones) prints none of it.
    #[test]
    fn the_table_shows_the_replayed_runs_and_their_recording() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../bench-results/h200-2026-12-04/b1/hvq-wgpu-official.json"
        );
        let mut report: BenchReport =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(report.replay.is_none() && report.end_to_end_replayed.is_none());
        let plain = format_report(&report);
        assert!(!plain.contains("replayed"), "{plain}");

        report.end_to_end_replayed = Some(stats("end to end, replayed", vec![20.0, 25.0, 30.0]));
        report.end_to_end_replayed_queued =
            Some(stats("end to end, replayed, queued", vec![1.0, 2.0, 3.0]));
        report.end_to_end = stats("end to end", vec![45.0]);
        report.replay = Some(ReplayCheck {
            recorded: true,
            not_recorded: None,
            max_score_difference: Some(0.0),
            record_ms: Some(130.0),
        });
        let table = format_report(&report);
        let row = |name: &str| {
            table
                .lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with("  "))
                .unwrap_or_else(|| panic!("no row {name:?} in\n{table}"))
                .split_whitespace()
                .last()
                .unwrap()
                .to_string()
        };
        // The last column is the fastest run (20 and 1 ms); the median 25 ms at batch 1 gives
        // 40 images/s.
        assert_eq!(row("end to end, replayed"), "20.0");
        assert_eq!(row("end to end, replayed, queued"), "1.0");
        assert_eq!(row("images per second, replayed"), "40.0");
        // 130 ms of recording, 45 − 25 = 20 ms saved per batch: repaid by the seventh.
        assert_eq!(row("recording, once"), "130.0");
        assert_eq!(row("batches to repay it"), "7");
        assert!(
            table.contains("image scores within 0e0 of the pass run directly"),
            "{table}"
        );

        report.end_to_end_replayed = None;
        report.end_to_end_replayed_queued = None;
        report.replay = Some(ReplayCheck {
            recorded: false,
            not_recorded: Some("the replayed runs failed: device lost".into()),
            max_score_difference: None,
            record_ms: None,
        });
        let table = format_report(&report);
        assert!(
            table.contains("not recorded, the pass ran again for each batch: the replayed runs failed: device lost"),
            "{table}"
        );
        assert!(!table.contains("images per second, replayed"), "{table}");
        assert!(!table.contains("recording, once"), "{table}");
    }

    /// The `auto` table counts the kinds each way and lists them, the most time at stake first,
    /// with every candidate's time, the chosen one's GFLOP/s (2·196·256·512 flops in 20 µs:
    /// 2569) and the routine by its JSON name, kinds kept from an earlier run and kinds timed
    /// with their layer's epilogue marked.
    #[test]
    fn product_timings_table_lists_each_kind_the_slowest_first() {
        let mut kept = ProductTiming {
            stored: true,
            epilogue: true,
            ..timing(196, [40.0, 30.0, 20.0, 35.0], ProductRoutine::Tiled32)
        };
        // Kept by a build that had no such routine: a dash in its column.
        kept.tiled_us.remove(&ProductRoutine::Quads128);
        let table = format_product_timings(&[
            kept,
            timing(1568, [90.0, 120.0, 100.0, 150.0], ProductRoutine::Burn),
        ]);
        assert!(
            table.contains("2 kinds, 1 on the tiled kernel, 1 on burn's; 1 kept from an earlier"),
            "{table}"
        );
        let header = table.lines().find(|l| l.starts_with("operands")).unwrap();
        let columns: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(
            columns[3..],
            [
                "burn", "µs", "tiled64", "tiled32", "quads128", "GFLOP/s", "runs", "on"
            ],
            "{table}"
        );
        let lines: Vec<&str> = table.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[0].starts_with("[1568, 256][256, 1] · [256, 512][1, 256]"));
        assert!(
            lines[0].ends_with("burn") && lines[0].contains("150.0"),
            "{table}"
        );
        assert!(
            lines[1].ends_with("-     2569  tiled32 (kept)") && lines[1].contains("20.0"),
            "{table}"
        );
        // Timed with its layer's epilogue: marked beside its operands.
        assert!(
            lines[1].starts_with("[196, 256][256, 1] · [256, 512][1, 256] + epilogue"),
            "{table}"
        );
        assert!(!lines[0].contains("epilogue"), "{table}");
    }
    /// Inference attention's table: a line per kind with both kernels' times (a dash for one
    /// that does not take the inputs), the chosen kernel, kept kinds marked.
    #[test]
    fn attention_timings_table_lists_both_kernels_and_the_choice() {
        use crate::kernels::attention_choice::AttentionTiming;
        use crate::kernels::inference_attention::InferenceAttention;
        let timing = |rows: usize, split: Option<f64>, flash, runs_on, stored| AttentionTiming {
            device: "gpu".into(),
            heads: 8,
            q: vec![8, rows, 256],
            q_strides: vec![rows * 768, 768, 1],
            k: vec![8, 196, 256],
            k_strides: vec![196 * 768, 768, 1],
            v: vec![8, 196, 256],
            v_strides: vec![196 * 768, 768, 1],
            split_us: split,
            flash_us: flash,
            runs_on,
            stored,
        };
        let table = format_attention_timings(&[
            timing(
                196,
                Some(31.5),
                Some(240.0),
                InferenceAttention::Split,
                false,
            ),
            timing(49, None, Some(12.34), InferenceAttention::Flash, true),
        ]);
        assert!(
            table.contains("2 kinds; 1 kept from an earlier run"),
            "{table}"
        );
        let lines: Vec<&str> = table.lines().filter(|l| l.starts_with("8 × ")).collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(
            lines[0].starts_with("8 × [8, 196, 256][150528, 768, 1] · [8, 196, 256]")
                && lines[0].ends_with("31.5     240.0  split"),
            "{table}"
        );
        assert!(lines[1].ends_with("-      12.3  flash (kept)"), "{table}");
    }

    /// Training attention's table: a line per kind with both forms' times (a dash for a fused
    /// form that does not take the inputs), the chosen form, kept kinds marked.
    #[test]
    fn train_attention_timings_table_lists_both_forms_and_the_choice() {
        use crate::kernels::train_attention::TrainAttention;
        use crate::kernels::train_attention_choice::{InputLayout, TrainAttentionTiming};
        let input = InputLayout::official;
        let own = vec![input(0, 2, vec![0, 1]), input(2, 3, vec![0])];
        let cross = vec![
            input(0, 1, vec![0, 1]),
            input(1, 2, vec![2, 1]),
            input(2, 3, vec![2]),
        ];
        let timing = |inputs, fused, composed, runs_on, stored| TrainAttentionTiming {
            device: "gpu".into(),
            heads: 8,
            inputs,
            fused_us: fused,
            composed_us: composed,
            runs_on,
            stored,
        };
        let table = format_train_attention_timings(&[
            timing(own, Some(412.5), Some(977.0), TrainAttention::Fused, false),
            timing(cross, None, Some(1234.56), TrainAttention::Composed, true),
        ]);
        assert!(
            table.contains("2 kinds; 1 kept from an earlier run"),
            "{table}"
        );
        let lines: Vec<&str> = table.lines().filter(|l| l.starts_with("8 × ")).collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(
            lines[0].starts_with("8 × [8, 196, 256], qk+pos v")
                && lines[0].ends_with("412.5       977.0  fused"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("8 × [8, 196, 256], q+pos k+pos v")
                && lines[1].ends_with("-      1234.6  composed (kept)"),
            "{table}"
        );
    }
}
