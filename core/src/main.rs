//! The `hvq` command line.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use hvq::device::DeviceChoice;
use hvq::weights::TensorMap;
use hvq::{ClassChoice, Detector, Inspector};

/// HVQ-Trans anomaly detection.
#[derive(Parser, Debug)]
#[command(name = "hvq", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
    /// Score images: for each one an overlay PNG, the raw map (`.npy`, image resolution) and a
    /// row in `results.json` / `results.csv` with score and verdict.
    Predict {
        /// Model directory (`config.json` + `model.safetensors`).
        #[arg(long)]
        weights: PathBuf,
        /// Class name, or `auto`.
        #[arg(long, default_value = "auto")]
        class: String,
        /// Override the model's stored threshold.
        #[arg(long)]
        threshold: Option<f32>,
        /// cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Image files or directories.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::ConvertBackbone {
            pth,
            out,
            name,
            split,
        } => convert_backbone(&pth, &out, &name, split),
        Command::Predict {
            weights,
            class,
            threshold,
            device,
            out,
            images,
        } => predict(&weights, &class, threshold, &device, &out, &images),
    }
}

fn convert_backbone(
    pth: &std::path::Path,
    out: &std::path::Path,
    name: &str,
    split: usize,
) -> Result<()> {
    let map = TensorMap::read(pth)?.without_wrappers();
    if map.is_empty() {
        bail!("{}: no float tensors found", pth.display());
    }
    let mut features = TensorMap::new(name);
    let mut head = TensorMap::new(name);
    for n in map.names() {
        let t = map.get(n).expect("listed").clone();
        let block = n
            .strip_prefix("_blocks.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        let in_features = match block {
            Some(i) => i <= split,
            None => n.starts_with("_conv_stem") || n.starts_with("_bn0"),
        };
        if in_features {
            features.insert(n, t);
        } else {
            head.insert(n, t);
        }
    }
    let meta = [(
        "source".to_string(),
        pth.file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default(),
    )]
    .into_iter()
    .collect();
    let f1 = out.join(format!("{name}.safetensors"));
    let f2 = out.join(format!("{name}-head.safetensors"));
    features
        .save(&f1, &meta)
        .with_context(|| format!("writing {}", f1.display()))?;
    head.save(&f2, &meta)
        .with_context(|| format!("writing {}", f2.display()))?;
    println!(
        "{}: {} tensors; {}: {} tensors",
        f1.display(),
        features.len(),
        f2.display(),
        head.len()
    );
    Ok(())
}

fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.extension()
                        .map(|e| {
                            matches!(
                                e.to_ascii_lowercase().to_str(),
                                Some("png" | "jpg" | "jpeg")
                            )
                        })
                        .unwrap_or(false)
                })
                .collect();
            inner.sort();
            files.extend(inner);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            bail!("{}: no such file or directory", p.display());
        }
    }
    if files.is_empty() {
        bail!("no PNG or JPEG images found in {:?}", inputs);
    }
    Ok(files)
}

fn predict(
    weights: &std::path::Path,
    class: &str,
    threshold: Option<f32>,
    device: &str,
    out: &std::path::Path,
    images: &[PathBuf],
) -> Result<()> {
    let device = hvq::device::create(device.parse::<DeviceChoice>()?)?;
    let mut detector = Detector::load_dir(weights, &device)?;
    if let Some(t) = threshold {
        detector.calibration = Some(hvq::detector::Calibration {
            threshold: t,
            source: "command line".into(),
        });
    }
    let choice = if class == "auto" {
        ClassChoice::Auto
    } else {
        ClassChoice::Name(class.to_string())
    };
    let inspector = Inspector::new(detector, device);
    let files = collect_images(images)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut rows = Vec::new();
    let mut csv = String::from("image,class,score,threshold,verdict,error\n");
    for file in &files {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let result = hvq::preprocess::load(file)
            .and_then(|img| inspector.inspect(&img, &choice).map(|r| (img, r)));
        match result {
            Ok((img, r)) => {
                let photo = hvq::preprocess::to_rgb(&img);
                let hi = r.threshold.unwrap_or(r.score).max(r.score);
                let lo = r.model_map.iter().cloned().fold(f32::MAX, f32::min);
                let overlay = hvq::overlay::blend(&photo, &r.map, lo, hi, 0.5);
                let png = out.join(format!("{stem}_overlay.png"));
                overlay
                    .save(&png)
                    .with_context(|| format!("writing {}", png.display()))?;
                let npy = out.join(format!("{stem}_map.npy"));
                hvq::weights::write_atomic(
                    &npy,
                    &hvq::overlay::npy_bytes(&r.map, r.height as usize, r.width as usize),
                )?;
                let verdict = match r.anomalous {
                    Some(true) => "anomalous",
                    Some(false) => "normal",
                    None => "uncalibrated",
                };
                println!(
                    "{:<40} {:>10.4} {:<10} {}",
                    file.display(),
                    r.score,
                    verdict,
                    r.class_name
                );
                csv.push_str(&format!(
                    "{},{},{},{},{},\n",
                    file.display(),
                    r.class_name,
                    r.score,
                    r.threshold.map(|t| t.to_string()).unwrap_or_default(),
                    verdict
                ));
                let mut row = serde_json::to_value(&r)?;
                row["image"] = serde_json::Value::String(file.display().to_string());
                row["verdict"] = serde_json::Value::String(verdict.into());
                rows.push(row);
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                csv.push_str(&format!(
                    "{},,,,error,\"{}\"\n",
                    file.display(),
                    e.to_string().replace('"', "'")
                ));
                rows.push(serde_json::json!({"image": file.display().to_string(), "error": e.to_string()}));
            }
        }
    }
    hvq::weights::write_atomic(
        &out.join("results.json"),
        serde_json::to_string_pretty(&rows)?.as_bytes(),
    )?;
    hvq::weights::write_atomic(&out.join("results.csv"), csv.as_bytes())?;
    println!("wrote {} results to {}", rows.len(), out.display());
    Ok(())
}
