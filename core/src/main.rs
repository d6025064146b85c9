//! The `hvq` command line: train, evaluate, predict, import weights.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// HVQ-Trans multi-class anomaly detection.
#[derive(Parser, Debug)]
#[command(name = "hvq", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How matrix products are computed, for every command: f32 (the default and the parity
    /// reference) or tf32 (f32 products may use TF32 tensor cores: NVIDIA GPUs from sm_80 on,
    /// through CUDA; other devices stay f32).
    #[arg(long, global = true, default_value = "f32")]
    precision: hvq::device::precision::Precision,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model on a dataset (features cached once, checkpoints, JSON-lines log).
    Train(cli::train::TrainArgs),
    /// Evaluate a model on a dataset's test split: per-class and mean metrics, table and JSON.
    Eval(cli::eval::EvalArgs),
    /// Score images: for each one an overlay PNG, the raw map (`.npy`, image resolution) and a
    /// row in `results.json` / `results.csv` with score and verdict.
    ///
    /// Exit status: 0 when every image was inspected; 2 when some could not be (unreadable,
    /// corrupt, or the model gave no finite score): each gets an error row, the others their
    /// results; 1 when the command could not run (no images, a bad model directory, …).
    Predict(cli::predict::PredictArgs),
    /// Inspect images as they appear in a folder (once completely written): a JSON line and a
    /// CSV row per image, overlays, optionally sorted into verdict folders; restarts carry on.
    Watch(cli::watch::WatchArgs),
    /// Set a model's threshold from known-good images (a dataset's training split).
    Calibrate(cli::calibrate::CalibrateArgs),
    /// Time the pipeline stage by stage, end to end and a training step; table and JSON.
    Bench(cli::bench::BenchArgs),
    /// Check a device against the CPU: the shipped model on the shipped sample images, on both,
    /// compared; exit status 1 when they differ beyond float rounding.
    Selfcheck(cli::selfcheck::SelfCheckArgs),
    /// Compile every kernel a wgpu run launches for NVIDIA GPUs too (burn's CUDA compiler),
    /// on a machine without one: the PTX files and a list; exit status 1 when one is refused.
    /// `scripts/ptx-check.sh` runs it and assembles the PTX with `ptxas`.
    #[cfg(all(feature = "cuda", feature = "wgpu"))]
    PtxCheck(cli::ptx_check::PtxCheckArgs),
    /// Write a pixel-annotated test set from texture photographs: normal crops and crops with
    /// synthetic defects (scratch, hole, stain, blur, foreign material) and exact masks, in
    /// MVTec's layout, all from one seed.
    SynthDefects(cli::synth::SynthArgs),
    /// Host this machine's devices for training on several machines: another process or host
    /// trains with `hvq train --devices cuda:0,ws://HOST:PORT`. Runs until Ctrl+C or SIGTERM.
    DeviceServer(cli::device_server::DeviceServerArgs),
    /// Import an official HVQ-Trans checkpoint (MVTec-AD, EfficientNet-B4) as a model directory.
    Import {
        /// The `.pth` checkpoint (with or without the `module.` prefix).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output model directory.
        #[arg(long)]
        out: PathBuf,
        /// Class names in the checkpoint's order (default: the 15 MVTec-AD classes).
        #[arg(long, value_delimiter = ',')]
        classes: Option<Vec<String>>,
    },
    /// Convert an EfficientNet `.pth` (lukemelas naming) into safetensors files for `weights/`:
    /// `<out>/<name>.safetensors` holds the stem and the blocks up to `--split`, and
    /// `<out>/<name>-head.safetensors` the remaining blocks and the ImageNet head.
    ConvertBackbone {
        /// Input `.pth` (legacy or zip) or safetensors.
        #[arg(long)]
        pth: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Base file name.
        #[arg(long, default_value = "efficientnet-lite0")]
        name: String,
        /// Last block kept in the feature file.
        #[arg(long, default_value_t = 10)]
        split: usize,
    },
}

fn main() -> ExitCode {
    cli::panic_report::install();
    hvq::allocator::keep_freed_memory();
    let cli = Cli::parse();
    hvq::device::precision::set(cli.precision);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain of causes on one line, and never a backtrace (RUST_BACKTRACE is
            // for our bugs, which the panic report covers): these are the user's errors.
            eprintln!("Error: {e:#}");
            match e.downcast_ref::<cli::predict::SomeImagesFailed>() {
                Some(_) => ExitCode::from(cli::predict::SomeImagesFailed::EXIT_CODE),
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn run(command: Command) -> Result<()> {
    hvq::app::environment::apply_variables()?;
    match command {
        Command::Train(args) => cli::train::run(args),
        Command::Eval(args) => cli::eval::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Calibrate(args) => cli::calibrate::run(args),
        Command::Watch(args) => cli::watch::run(args),
        Command::Selfcheck(args) => cli::selfcheck::run(args),
        #[cfg(all(feature = "cuda", feature = "wgpu"))]
        Command::PtxCheck(args) => cli::ptx_check::run(args),
        Command::Predict(args) => cli::predict::run(args),
        Command::DeviceServer(args) => cli::device_server::run(args),
        Command::SynthDefects(args) => cli::synth::run(args),
        Command::Import {
            checkpoint,
            out,
            classes,
        } => cli::convert::import_official(&checkpoint, &out, classes),
        Command::ConvertBackbone {
            pth,
            out,
            name,
            split,
        } => cli::convert::convert_backbone(&pth, &out, &name, split),
    }
}
