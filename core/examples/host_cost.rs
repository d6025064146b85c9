//! The host's cost per operation on a GPU device, long enough to profile (`perf record`): N
//! one-element additions queued, then read back.
//!
//! The start-up variables apply (`HVQ_DEVICE_THREAD=caller` times the other transport). With the
//! features of `scripts/cuda-bundle.sh`'s release build, nothing but the example is compiled:
//! `cargo run --release -p core --no-default-features --features
//! cuda,wgpu,vulkan,parallel,embedded-weights --example host_cost -- [wgpu|cuda] [operations]`
//! (docs/gpu.md, "Where device work runs").

use std::time::Instant;

use burn::tensor::Tensor;
use hvq::device::{DeviceChoice, select};
use hvq::error::HvqError;

fn main() -> hvq::Result<()> {
    hvq::app::environment::apply_variables()?;
    let mut args = std::env::args().skip(1);
    let choice: DeviceChoice = args.next().as_deref().unwrap_or("wgpu").parse()?;
    let ops: usize = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|_| HvqError::Config(format!("operations: {n:?} is not a count")))?,
        None => 100_000,
    };
    let device = select(choice)?.device;
    let mut x = Tensor::<1>::zeros([1], &device);
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
