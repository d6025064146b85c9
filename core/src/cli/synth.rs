//! `hvq synth-defects`: a pixel-annotated test set from texture photographs — normal crops and
//! crops with synthetic scratches, holes, stains, smeared patches and foreign material, with
//! exact masks, in MVTec-AD's layout (`hvq train/eval --data mvtec:OUT`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use hvq::data::synthetic::{DefectSetSpec, generate};

use super::panic_report::working_on;
use super::progress::bar;

/// Options of `hvq synth-defects`.
#[derive(Args, Debug)]
pub struct SynthArgs {
    /// A texture photograph; one class per file, named by its file stem. Repeat for several.
    /// At least twice --crop wide: its right-most --crop columns are kept for the test images.
    #[arg(long = "texture", value_name = "IMAGE", required = true)]
    pub textures: Vec<PathBuf>,
    /// Output folder (MVTec layout: <class>/train/good, test/<kind>, ground_truth/<kind>).
    #[arg(long)]
    pub out: PathBuf,
    /// Side of the square crops in pixels.
    #[arg(long, default_value_t = DefectSetSpec::default().crop)]
    pub crop: usize,
    /// Normal training images per class.
    #[arg(long, default_value_t = DefectSetSpec::default().train)]
    pub train: usize,
    /// Normal test images per class.
    #[arg(long, default_value_t = DefectSetSpec::default().test_good)]
    pub test_good: usize,
    /// Defective test images per class and defect kind (sizes small, medium, large in turn).
    #[arg(long, default_value_t = DefectSetSpec::default().per_kind)]
    pub per_kind: usize,
    /// Seed of every random choice: the same seed and textures give the same files.
    #[arg(long, default_value_t = DefectSetSpec::default().seed)]
    pub seed: u64,
}

/// Run `hvq synth-defects`.
pub fn run(args: SynthArgs) -> Result<()> {
    let _input = working_on(format!("writing a defect set to {}", args.out.display()));
    let spec = DefectSetSpec {
        crop: args.crop,
        train: args.train,
        test_good: args.test_good,
        per_kind: args.per_kind,
        seed: args.seed,
    };
    // The generator reports its own total with every step: one count of the images.
    let pb = bar(0, "images");
    let manifests = generate(&args.textures, &args.out, &spec, &mut |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64)
    })?;
    pb.finish_and_clear();
    println!("| class | train | test good | defective | mean defect area |");
    println!("|---|---|---|---|---|");
    for m in &manifests {
        let mean_area =
            m.defects.iter().map(|d| d.area_fraction).sum::<f64>() / m.defects.len().max(1) as f64;
        println!(
            "| {} | {} | {} | {} | {:.2} % |",
            m.class,
            m.train,
            m.test_good,
            m.defects.len(),
            100.0 * mean_area
        );
    }
    println!(
        "written to {} (seed {}); use it as --data mvtec:{}",
        args.out.display(),
        spec.seed,
        args.out.display()
    );
    Ok(())
}
