//! What one data-parallel training step moves between devices (`hvq train --devices`), for the
//! official configuration (EfficientNet-B4 features, the 15 MVTec-AD classes, the paper's
//! objective), counted from the model's own tensors, and the step time it implies on N GPUs from
//! a measured single-GPU step time and an assumed link bandwidth. The numbers in the README's
//! "Training on several devices" come from this program:
//!
//! ```sh
//! cargo run --release -p core --example data_parallel_volume -- [STEP_MS] [LINK_GB_S] [BATCH_PER_GPU]
//! ```
//!
//! Defaults: 151 ms (hvq's CUDA step on cached features at batch 8, H200, issue 16's run),
//! 25 GB/s (device-to-device copies staged through host memory over PCIe 5), batch 8 per GPU.

use burn::tensor::Device;
use hvq::config::HvqConfig;
use hvq::model::HvqModel;

const MB: f64 = 1e6;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .map(|a| a.parse::<f64>())
        .collect::<Result<_, _>>()?;
    let step_ms = args.first().copied().unwrap_or(151.0);
    let link_gb_s = args.get(1).copied().unwrap_or(25.0);
    let batch_per_gpu = args.get(2).copied().unwrap_or(8.0) as usize;

    let config = HvqConfig::paper(272, HvqConfig::mvtec_classes());
    let model = HvqModel::new(&config, &Device::flex())?;
    let tensors = model.to_native();
    let (mut network, mut codebooks) = (0usize, 0usize);
    for name in tensors.names() {
        let n: usize = tensors.get(name).expect("listed").shape.iter().product();
        if name.starts_with("quantize_list") {
            codebooks += n;
        } else {
            network += n;
        }
    }
    let classes = config.num_classes;
    let levels = config.vq_levels();
    let per_class_codebook = codebooks / classes;
    // Tokens per sample and level: 196 positions, 2C wide below the top level, C at the top.
    let positions = config.feature_size * config.feature_size;
    let token_floats_per_sample: usize = (0..levels)
        .map(|l| {
            positions
                * if l == levels - 1 {
                    config.embed_dim
                } else {
                    2 * config.embed_dim
                }
        })
        .sum();
    println!(
        "official configuration: {} network parameters ({:.1} MB), {} codebook floats \
         ({:.1} MB: {} levels × {} classes, embed + EMA sums + counts)",
        network,
        network as f64 * 4.0 / MB,
        codebooks,
        codebooks as f64 * 4.0 / MB,
        levels,
        classes
    );
    println!(
        "assumed: single-GPU step {step_ms} ms at batch {batch_per_gpu}, links {link_gb_s} GB/s, \
         replica 0's link the bottleneck (a star: gather to it, copy back from it)"
    );
    println!();
    println!(
        "| GPUs | global batch | gradients in (MB) | parameters out (MB) | codebooks out (MB) | EMA tokens in (MB) | through replica 0 (MB) | transfer (ms) | step (ms) | images/s | speed-up |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let single_rate = batch_per_gpu as f64 / (step_ms / 1e3);
    for gpus in [1usize, 2, 4, 8] {
        let others = (gpus - 1) as f64;
        let batch = gpus * batch_per_gpu;
        // Classes in a batch of `batch` samples drawn across 15 classes: at most all of them.
        let moved = expected_distinct(classes, batch);
        let gradients = others * network as f64 * 4.0;
        let parameters = others * network as f64 * 4.0;
        let books = others * moved * per_class_codebook as f64 * 4.0;
        // Tokens (and their codes, 4 bytes per position and level) of the other shards.
        let tokens = others
            * batch_per_gpu as f64
            * (token_floats_per_sample + positions * levels) as f64
            * 4.0;
        let total = gradients + parameters + books + tokens;
        let transfer_ms = total / (link_gb_s * 1e9) * 1e3;
        let step = step_ms + transfer_ms;
        let rate = batch as f64 / (step / 1e3);
        println!(
            "| {gpus} | {batch} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.2} |",
            gradients / MB,
            parameters / MB,
            books / MB,
            tokens / MB,
            total / MB,
            transfer_ms,
            step,
            rate,
            rate / single_rate
        );
    }
    println!();
    println!(
        "a ring all-reduce (NCCL) of the gradients instead: 2·(N−1)/N × {:.0} MB per GPU, \
         {:.1} ms at 8 GPUs on the same links",
        network as f64 * 4.0 / MB,
        2.0 * 7.0 / 8.0 * network as f64 * 4.0 / (link_gb_s * 1e9) * 1e3
    );
    Ok(())
}

/// Expected number of distinct classes among `draws` samples drawn uniformly from `classes`.
fn expected_distinct(classes: usize, draws: usize) -> f64 {
    let k = classes as f64;
    k * (1.0 - (1.0 - 1.0 / k).powi(draws as i32))
}
