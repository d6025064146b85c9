//! The official network's single operations on the CPU, timed alone at the training step's
//! shapes (batch 8, 196 tokens): each linear layer's three products (forward `x·Wᵀ`, input
//! gradient `∂y·W`, weight gradient `xᵀ·∂y` over all 1568 rows) in GFLOP/s, and an element-wise
//! add of two `[8, 196, 512]` tensors. `scripts/pytorch/op_rates.py` times the same in PyTorch.
//!
//! `cargo run --release -p core --example op_rates`

use std::time::Instant;

use burn::tensor::module::linear;
use burn::tensor::{Device, Distribution, Tensor};

/// Median seconds of 12 timed calls after 3 warm-up calls.
fn median(f: impl Fn()) -> f64 {
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .skip(3)
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    hvq::allocator::keep_freed_memory();
    let device = Device::flex();
    let rows = 8 * 196;
    println!(
        "linear layers, [8, 196, in] -> out, GFLOP/s (forward / input gradient / weight gradient)"
    );
    // Encoder (C 256, FFN 1024) and decoder (2C 512, FFN 1024) widths.
    for (d_in, d_out) in [
        (256, 512),
        (256, 256),
        (256, 1024),
        (1024, 256),
        (512, 1024),
        (512, 512),
        (1024, 512),
    ] {
        let random =
            |shape: [usize; 3]| Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let x = random([8, 196, d_in]);
        let grad = random([8, 196, d_out]);
        let weight = Tensor::<2>::random([d_out, d_in], Distribution::Normal(0.0, 1.0), &device);
        let flops = 2.0 * (rows * d_in * d_out) as f64;
        let forward = median(|| {
            let _ = linear(x.clone(), weight.clone().transpose(), None).into_data();
        });
        let input_grad = median(|| {
            let _ = linear(grad.clone(), weight.clone(), None).into_data();
        });
        let weight_grad = median(|| {
            let xt = x.clone().reshape([rows, d_in]).transpose();
            let _ = xt.matmul(grad.clone().reshape([rows, d_out])).into_data();
        });
        println!(
            "{d_in:>5} -> {d_out:<5} {:>6.0} {:>6.0} {:>6.0}",
            flops / forward / 1e9,
            flops / input_grad / 1e9,
            flops / weight_grad / 1e9
        );
    }
    let a = Tensor::<3>::random([8, 196, 512], Distribution::Normal(0.0, 1.0), &device);
    let b = Tensor::<3>::random([8, 196, 512], Distribution::Normal(0.0, 1.0), &device);
    let add = median(|| {
        let _ = a.clone() + b.clone();
    });
    println!("add of two [8, 196, 512]: {:.3} ms", add * 1e3);
}
