//! The host's cost on a GPU device, long enough to profile (`perf record`): N one-element
//! additions queued, then read back; or (`inference`) N passes of the official model's inference
//! on a random batch (backbone, encoder, quantiser, decoder, map and score, read back), each
//! pass's queueing time reported apart from its wait for the device.
//!
//! The start-up variables apply (`HVQ_DEVICE_THREAD=caller` times the other transport). With the
//! features of `scripts/cuda-bundle.sh`'s release build, nothing but the example is compiled:
//! `cargo run --release -p core --no-default-features --features
//! cuda,wgpu,vulkan,parallel,embedded-weights --example host_cost -- [wgpu|cuda] [operations]`,
//! or `... -- [wgpu|cuda] inference [passes] [batch]` (docs/gpu.md, "Where device work runs").

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use hvq::app::bench::{BenchModel, model};
use hvq::device::{DeviceChoice, select};
use hvq::error::HvqError;

fn count(arg: Option<String>, what: &str, default: usize) -> hvq::Result<usize> {
    match arg {
        Some(n) => n
            .parse()
            .map_err(|_| HvqError::Config(format!("{what}: {n:?} is not a count"))),
        None => Ok(default),
    }
}

fn main() -> hvq::Result<()> {
    hvq::app::environment::apply_variables()?;
    let mut args = std::env::args().skip(1);
    let choice: DeviceChoice = args.next().as_deref().unwrap_or("wgpu").parse()?;
    let device = select(choice)?.device;
    match args.next() {
        Some(mode) if mode == "inference" => {
            let passes = count(args.next(), "passes", 20)?;
            let batch = count(args.next(), "batch", 1)?;
            inference(&device, passes, batch)
        }
        ops => additions(&device, count(ops, "operations", 100_000)?),
    }
}

fn additions(device: &Device, ops: usize) -> hvq::Result<()> {
    let mut x = Tensor::<1>::zeros([1], device);
    let t0 = Instant::now();
    for _ in 0..ops {
        x = x.add_scalar(1.0);
    }
    let queued = t0.elapsed().as_secs_f64();
    let total = hvq::device::read_back(x)?;
    let all = t0.elapsed().as_secs_f64();
    println!(
        "{ops} additions: queued {:.2} µs each, with the device {:.2} µs each, sum {:?}",
        queued * 1e6 / ops as f64,
        all * 1e6 / ops as f64,
        total.first()
    );
    Ok(())
}

/// The official model's inference, `passes` times after two warm-up passes (kernel compilation,
/// the products' and attention's timing), each read back before the next starts.
fn inference(device: &Device, passes: usize, batch: usize) -> hvq::Result<()> {
    let detector = model(BenchModel::Official, device)?;
    let size = detector.config.backbone.input_size;
    let classes: Vec<usize> = (0..batch)
        .map(|i| i % detector.config.hvq.num_classes)
        .collect();
    let images: Tensor<4> = Tensor::random(
        [batch, 3, size, size],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let mut queued = Vec::with_capacity(passes);
    let mut whole = Vec::with_capacity(passes);
    for pass in 0..passes + 2 {
        let t0 = Instant::now();
        let features = detector.features(images.clone());
        let (_, scores) = detector.score(features, &classes)?;
        let launched = t0.elapsed().as_secs_f64() * 1e3;
        hvq::device::read_back(scores.map)?;
        hvq::device::read_back(scores.image)?;
        if pass >= 2 {
            queued.push(launched);
            whole.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    println!(
        "{passes} passes of the official model at batch {batch}: queued {:.2} ms, with the \
         device {:.2} ms (medians)",
        median(queued),
        median(whole)
    );
    Ok(())
}
