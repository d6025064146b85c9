//! `hvq ptx-check` (CUDA builds): run the pipeline on wgpu and compile every kernel it launches
//! for NVIDIA GPUs too, writing the PTX (see `hvq::device::ptx_check`). Exit status 1 when the
//! CUDA backend's compiler refused a kernel for an architecture. `scripts/ptx-check.sh` runs it
//! over several workloads and assembles the PTX with NVIDIA's `ptxas`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use hvq::Inspector;
use hvq::app::ModelSource;
use hvq::app::bench::{self, BenchModel};
use hvq::app::inspect::ClassChoice;
use hvq::device::ptx_check::{self, NvidiaTarget};

use super::bench::{ConfigArg, SAMPLE};

/// Options of `hvq ptx-check`.
#[derive(Args, Debug)]
pub struct PtxCheckArgs {
    /// Folder for the PTX files (`<key>-<architecture>.ptx`, one per kernel and architecture) and
    /// `kernels-<run>.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// A name for this run's list of kernels (`kernels-<run>.json`), so that several runs can
    /// share the folder.
    #[arg(long, default_value = "run")]
    pub run: String,
    /// The model the bench pass runs (the shipped model is inspected as well).
    #[arg(long, value_enum, default_value = "official")]
    pub config: ConfigArg,
    /// Images per batch in the bench pass.
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// The NVIDIA compute capabilities compiled for, packed: 90 (H100, H200), 89 (RTX 40, L4),
    /// 86 (RTX 30, A10), 80 (A100), 75 (T4, RTX 20).
    #[arg(long, value_delimiter = ',', default_values_t = NvidiaTarget::DEFAULT_CAPABILITIES)]
    pub compute_capabilities: Vec<u32>,
    /// The NVIDIA driver's CUDA version, as cuDriverGetVersion gives it (13000: CUDA 13.0), which
    /// sets the PTX version.
    #[arg(long, default_value_t = NvidiaTarget::DRIVER_13_0)]
    pub driver_version: i32,
    /// Time every kind of f32 product on each candidate routine (hvq's tiled variants and
    /// burn's), as `auto` does on a GPU, so that all of them are compiled: on a software adapter
    /// (lavapipe) `auto` otherwise runs burn's routine alone. Slower.
    #[arg(long)]
    pub every_product_routine: bool,
}

/// Run `hvq ptx-check`.
pub fn run(args: PtxCheckArgs) -> Result<()> {
    let targets: Vec<NvidiaTarget> = args
        .compute_capabilities
        .iter()
        .map(|&compute_capability| NvidiaTarget {
            compute_capability,
            driver_version: args.driver_version,
        })
        .collect();
    // Before the device starts, so that its first kernel is seen.
    ptx_check::install(&args.out, &targets)?;
    if args.every_product_routine {
        // On lavapipe `auto` gives every product to burn's routine untimed: timed, each of
        // hvq's tiled variants is launched too.
        hvq::kernels::product_choice::time_on_software_adapters();
    }
    // The list is written whatever the workload's fate: a kernel the workload failed on (on
    // wgpu) leaves the ones before it checked.
    let workload = run_workload(&args);
    let check = ptx_check::finish()?;
    let json = args.out.join(format!("kernels-{}.json", args.run));
    hvq::fs::write_atomic(&json, serde_json::to_string_pretty(&check)?.as_bytes())?;
    let failures: Vec<_> = check.failures().collect();
    let largest_shared = check
        .kernels
        .iter()
        .filter_map(|k| k.shared_memory_bytes)
        .max()
        .unwrap_or(0);
    let kernels = check.kernels.len() / check.architectures.len();
    println!(
        "ptx-check: {kernels} kernels seen, compiled for {} ({}), {} refused; largest shared \
         memory {largest_shared} bytes; PTX in {}, list in {}",
        check.architectures.join(", "),
        check
            .ptx_versions
            .iter()
            .map(|v| v.as_deref().unwrap_or("LLVM's default PTX"))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(", "),
        failures.len(),
        args.out.display(),
        json.display()
    );
    for failure in &failures {
        println!(
            "REFUSED {} for {}: {}",
            failure.name,
            failure.architecture,
            failure.error.as_deref().unwrap_or_default()
        );
    }
    workload?;
    if check.kernels.is_empty() {
        bail!("no kernel was compiled: the observer saw nothing (is this a wgpu device?)");
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} compilations (kernels × architectures) were refused by the CUDA \
             backend's compiler",
            failures.len(),
            check.kernels.len()
        );
    }
    Ok(())
}

/// The shipped model inspected through the application layer, as a user's image goes; then every
/// bench stage of the chosen model, a training step on cached features and one through the
/// backbone, on wgpu.
fn run_workload(args: &PtxCheckArgs) -> Result<()> {
    let selection = super::device("wgpu")?;
    let device = selection.device;
    let inspector = Inspector::new(ModelSource::Shipped.load(&device)?, device.clone());
    for (name, bytes) in hvq::pretrained::SAMPLES {
        inspector.inspect_bytes(bytes, name, &ClassChoice::Auto)?;
    }
    // The shipped model has a classifier, whose largest logit picks the class; a model without
    // one keeps the lowest of every class's scores, the choice's other rule (a kernel variant
    // of its own): compiled from a row of scores.
    let scores = burn::tensor::Tensor::<2>::from_data(
        burn::tensor::TensorData::new(vec![2.0f32, 1.0, 3.0], [1, 3]),
        &device,
    );
    hvq::device::read_back(hvq::class_choice::first_minimum(scores).float())?;
    let which = match args.config {
        ConfigArg::Official => BenchModel::Official,
        ConfigArg::Default => BenchModel::Default,
    };
    let detector = bench::model(which, &device)?;
    let options = bench::BenchOptions {
        batch: args.batch,
        warmup: 0,
        runs: 1,
        train_dropout: 0.1,
        kernels: false,
    };
    bench::run(
        &detector,
        which,
        &device,
        selection.backend.name(),
        SAMPLE,
        options,
    )?;
    Ok(())
}
