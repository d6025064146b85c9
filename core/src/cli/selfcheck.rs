//! `hvq selfcheck`: the shipped model on the shipped sample images, on a device and on the CPU,
//! compared (see `hvq::app::selfcheck`). Exit status 0 when the device agrees with the CPU, 1 when not.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use hvq::Inspector;
use hvq::app::ModelSource;
use hvq::device::DeviceChoice;
use hvq::device::precision::Precision;

/// Options of `hvq selfcheck`.
#[derive(Args, Debug)]
pub struct SelfCheckArgs {
    /// The device to check against the CPU: auto (CUDA, else a hardware GPU through wgpu, else
    /// the CPU), cpu, wgpu or cuda.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Also write the comparison as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Run `hvq selfcheck`.
pub fn run(args: SelfCheckArgs) -> Result<()> {
    let selection = super::device(&args.device)?;
    let cpu_device = hvq::device::create(DeviceChoice::Cpu)?;
    let cpu = Inspector::new(ModelSource::Shipped.load(&cpu_device)?, cpu_device);
    let device = Inspector::new(
        ModelSource::Shipped.load(&selection.device)?,
        selection.device.clone(),
    );
    let check = hvq::app::selfcheck::run(&cpu, &device, &hvq::pretrained::SAMPLES)?;
    let precision = hvq::device::precision::current();

    println!(
        "selfcheck: shipped model on {} samples, {} vs cpu (bound: |Δ| ≤ {:.0e} × max|map|)",
        check.samples.len(),
        selection.backend,
        check.bound
    );
    println!(
        "{:<26} {:>6} {:>6} {:>11} {:>11} {:>9} {:>10} {:>9}  ",
        "image", "class", "device", "score cpu", "score dev", "max|map|", "max|Δmap|", "rel Δ"
    );
    for s in &check.samples {
        println!(
            "{:<26} {:>6} {:>6} {:>11.5} {:>11.5} {:>9.3} {:>10.3e} {:>9.2e}  {}",
            s.image,
            s.cpu_class,
            s.device_class,
            s.cpu_score,
            s.device_score,
            s.map_max_abs,
            s.map_max_abs_diff,
            s.relative_diff,
            if s.passed { "ok" } else { "DIFFERS" }
        );
    }
    if let Some(replay) = &check.replay {
        println!(
            "replayed inspections (the samples as one batch, three rounds): {}, {:.2e} of the \
             map's range from the direct ones  {}",
            match &replay.not_recorded {
                None => "recorded and replayed".to_string(),
                Some(why) => format!("not recorded ({why}), run directly"),
            },
            replay.relative_diff,
            if replay.passed { "ok" } else { "DIFFERS" }
        );
    }
    if let Some(path) = &args.json {
        let mut value = serde_json::to_value(&check)?;
        value["backend"] = serde_json::Value::String(selection.backend.name().into());
        value["precision"] = serde_json::to_value(precision)?;
        hvq::fs::write_atomic(path, serde_json::to_string_pretty(&value)?.as_bytes())?;
    }
    let samples_passed = check.samples.iter().all(|s| s.passed);
    if let Some(replay) = check
        .replay
        .as_ref()
        .filter(|r| samples_passed && !r.passed)
    {
        bail!(
            "{}: inspections replayed from a recorded pass differ from the same inspections run \
             directly by up to {:.2e} of the map's range (bound {:.0e}): run with HVQ_REPLAY=off",
            selection.backend,
            replay.relative_diff,
            check.bound
        );
    }
    if !check.passed && precision != Precision::F32 {
        // The CPU side runs at the same precision: a half type there too, f32 for tf32.
        let cpu_precision = match precision.half_dtype() {
            Some(_) => precision,
            None => Precision::F32,
        };
        bail!(
            "{} at --precision {precision} differs from the CPU at {cpu_precision} by up to \
             {:.2e} of the map's range (bound {:.0e}, set for f32 on both sides): run selfcheck \
             at the default --precision f32 to check the device itself",
            selection.backend,
            check.worst_relative_diff,
            check.bound
        );
    }
    if !check.passed {
        bail!(
            "{} differs from the CPU by up to {:.2e} of the map's range (bound {:.0e}): this \
             device computes wrongly; results on it cannot be trusted",
            selection.backend,
            check.worst_relative_diff,
            check.bound
        );
    }
    println!(
        "selfcheck passed: {} agrees with the CPU within {:.2e} (bound {:.0e})",
        selection.backend, check.worst_relative_diff, check.bound
    );
    Ok(())
}
