//! Loop one part of the official network on the CPU so a profiler (`perf record`) sees only it:
//! `encoder` (1×1 projection + 4 encoder layers, inference), `forward` (the whole reconstruction
//! network, inference), `train` (one training step on cached features: forward, objective,
//! backward, AdamW) or `attention` (the operations of one encoder self-attention composed as
//! PyTorch does, q scaled before the product, each timed). Batch 8, random features, random
//! init: the shapes of `hvq bench --config official`, without the backbone. `attention` also
//! times the same attention as the model runs it on the CPU (`kernels::fused_attention`).
//!
//! `vq` times the quantisation of every level and the pieces of the top level's, for the bench's
//! batch (a different class per sample) and for a batch of one class.
//!
//! `cargo run --release -p core --example profile_network -- [encoder|forward|train|attention|vq]
//! [N] [official|shipped]` (N iterations, default 10; `shipped`: the architecture of the
//! embedded default model, `weights/elpv-lite0`).

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use hvq::config::{BackboneConfig, HvqConfig};
use hvq::model::HvqModel;
use hvq::train::{AdamW, AdamWConfig, objective};

fn main() -> hvq::error::Result<()> {
    hvq::allocator::keep_freed_memory();
    let mut args = std::env::args().skip(1);
    let part = args.next().unwrap_or_else(|| "train".into());
    let iterations: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    let model = args.next().unwrap_or_else(|| "official".into());
    let (mut cfg, batch) = match model.as_str() {
        "official" => {
            let backbone = BackboneConfig::efficientnet_b4();
            let cfg = HvqConfig::official(backbone.feature_channels(), HvqConfig::mvtec_classes());
            (cfg, 8)
        }
        // The shipped default model's architecture, at the same batch of 8.
        "shipped" => {
            let saved = hvq::detector::SavedModel::parse(
                hvq::pretrained::DEFAULT_CONFIG,
                "embedded default config.json",
            )?;
            (saved.model.hvq, 8)
        }
        other => {
            eprintln!("unknown model {other}: official or shipped");
            std::process::exit(2);
        }
    };
    cfg.dropout = 0.0;
    let classes: Vec<usize> = (0..batch).map(|i| i % cfg.num_classes).collect();
    let shape = [
        batch,
        cfg.feature_channels,
        cfg.feature_size,
        cfg.feature_size,
    ];
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let mut times = Vec::new();
    match part.as_str() {
        "encoder" | "forward" => {
            let net = HvqModel::new(&cfg, &device)?;
            for _ in 0..iterations {
                let feature = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
                let t = Instant::now();
                if part == "encoder" {
                    let encoded = net.encode(feature);
                    let _ = encoded.hidden.last().expect("layers").clone().into_data();
                } else {
                    let out = net.forward_eval(feature, &classes)?;
                    let _ = out.rec.into_data();
                }
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        "train" => {
            let mut net = HvqModel::new(&cfg, &ad)?;
            let mut opt = AdamW::new(AdamWConfig::default());
            // The CPU backend runs eagerly, so the clock splits the step into its phases.
            let mut phases: [(&str, Vec<f64>); 3] = [
                ("forward + objective", Vec::new()),
                ("backward", Vec::new()),
                ("AdamW", Vec::new()),
            ];
            for _ in 0..iterations {
                let feature = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &ad);
                let t = Instant::now();
                let out = net.forward_train(feature.clone(), &classes)?;
                let loss = objective(&out, feature, &classes, &cfg);
                let t_forward = t.elapsed();
                let grads = loss.total.backward();
                let t_backward = t.elapsed();
                let (stepped, _) = opt.step(net, &grads, 1e-4);
                net = stepped;
                let _ = net.quantize_conv_t.bias.val().into_data();
                let t_all = t.elapsed();
                phases[0].1.push(t_forward.as_secs_f64() * 1e3);
                phases[1]
                    .1
                    .push((t_backward - t_forward).as_secs_f64() * 1e3);
                phases[2].1.push((t_all - t_backward).as_secs_f64() * 1e3);
                times.push(t_all.as_secs_f64() * 1e3);
            }
            for (name, mut v) in phases {
                v.sort_by(f64::total_cmp);
                println!("{name:>24}: median {:.1} ms", v[v.len() / 2]);
            }
        }
        "attention" => {
            // The pieces of one encoder self-attention, each timed on its own (the CPU backend
            // runs every operation eagerly, so a clock around one call times that call).
            let (b, l, e, h) = (
                batch,
                cfg.feature_size * cfg.feature_size,
                cfg.embed_dim,
                cfg.heads,
            );
            let hd = e / h;
            let mut pieces: Vec<(&str, Vec<f64>)> = Vec::new();
            let mut clock = |name: &'static str, t: Instant| {
                let ms = t.elapsed().as_secs_f64() * 1e3;
                match pieces.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, v)) => v.push(ms),
                    None => pieces.push((name, vec![ms])),
                }
            };
            let w = Tensor::<2>::random([e, 2 * e], Distribution::Default, &device);
            for _ in 0..iterations {
                let x = Tensor::<3>::random([b, l, e], Distribution::Default, &device);
                let t = Instant::now();
                let both = x.clone().matmul(w.clone().unsqueeze_dim(0));
                clock("q,k projection", t);
                // The same attention as one fused operation (what the model runs on the CPU):
                // from the packed projection to merged heads, no scale pass (kernels::attention).
                let t = Instant::now();
                let fused = hvq::kernels::fused_attention(
                    both.clone().narrow(2, 0, e),
                    both.clone().narrow(2, e, e),
                    both.clone().narrow(2, e, e),
                    h,
                    0.0,
                );
                let _ = fused.into_data();
                clock("fused: heads .. merge", t);
                let t = Instant::now();
                let q = both
                    .clone()
                    .narrow(2, 0, e)
                    .reshape([b, l, h, hd])
                    .swap_dims(1, 2);
                let k = both.narrow(2, e, e).reshape([b, l, h, hd]).swap_dims(1, 2);
                clock("split heads (views)", t);
                let t = Instant::now();
                let q = q.mul_scalar(0.5);
                clock("scale q", t);
                let t = Instant::now();
                let kt = k.clone().swap_dims(2, 3);
                let scores = q.matmul(kt);
                clock("scores q.kT", t);
                let t = Instant::now();
                let attn = hvq::kernels::softmax_last(scores);
                clock("softmax", t);
                let t = Instant::now();
                let out = attn.matmul(k);
                clock("attn.v", t);
                let t = Instant::now();
                let out = out.swap_dims(1, 2).reshape([b, l, e]);
                let _ = out.into_data();
                clock("merge heads + read", t);
            }
            for (name, mut v) in pieces {
                v.sort_by(f64::total_cmp);
                println!("{name:>24}: median {:.2} ms", v[v.len() / 2]);
            }
        }
        "vq" => {
            // The levels' quantisation, piece by piece, on the encoder's real outputs.
            let net = HvqModel::new(&cfg, &device)?;
            let mut pieces: Vec<(String, Vec<f64>)> = Vec::new();
            let mut clock = |name: String, t: Instant| {
                let ms = t.elapsed().as_secs_f64() * 1e3;
                match pieces.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, v)) => v.push(ms),
                    None => pieces.push((name, vec![ms])),
                }
            };
            // The bench's batch (classes 0, 1, …: one codebook per sample) and a batch of one
            // class (one codebook for the whole batch).
            let one_class = vec![0; batch];
            for _ in 0..iterations {
                let feature = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
                let encoded = net.encode(feature);
                for (batch_kind, classes) in [("mixed", &classes), ("one class", &one_class)] {
                    let t = Instant::now();
                    let (levels, _) = net.quantize_eval(&encoded, classes);
                    let _ = levels[0].quantized.clone().into_data();
                    clock(format!("all levels, {batch_kind}"), t);
                    // The top level's pieces.
                    let x = encoded.hidden.last().expect("layers").clone();
                    let [b, l, d] = x.dims();
                    let t = Instant::now();
                    let codes = hvq::model::BatchCodes::for_slots(
                        &net.quantize_lists[net.quantize_lists.len() - 1],
                        &net.codebook_slots(classes),
                    );
                    let _ = codes.code_rows().into_data();
                    clock(format!("codes as rows, {batch_kind}"), t);
                    let k = codes.codes();
                    let t = Instant::now();
                    let x_sq = x.clone().powi_scalar(2).sum_dim(2);
                    let e_sq = codes.squared_norms();
                    let _ = e_sq.clone().into_data();
                    clock(format!("squares, {batch_kind}"), t);
                    let t = Instant::now();
                    let prod = codes.dots(x.clone());
                    let _ = prod.clone().into_data();
                    clock(format!("x.E {b}x[{l}x{d} by {d}x{k}], {batch_kind}"), t);
                    let t = Instant::now();
                    let dist =
                        x_sq.expand([b, l, k]) - prod.mul_scalar(2.0) + e_sq.expand([b, l, k]);
                    let _ = dist.clone().into_data();
                    clock(format!("distances, {batch_kind}"), t);
                    let t = Instant::now();
                    let idx = dist.argmin(2).reshape([b, l]);
                    let _ = idx.clone().into_data();
                    clock(format!("argmin, {batch_kind}"), t);
                    let t = Instant::now();
                    let rows = (idx + codes.row_offsets(b).expand([b, l])).reshape([b * l]);
                    let q = codes.code_rows().select(0, rows);
                    let _ = q.into_data();
                    clock(format!("select rows, {batch_kind}"), t);
                }
            }
            for (name, mut v) in pieces {
                v.sort_by(f64::total_cmp);
                println!("{name:>44}: median {:.2} ms", v[v.len() / 2]);
            }
        }
        other => {
            eprintln!("unknown part {other}: encoder, forward, train, attention or vq");
            std::process::exit(2);
        }
    }
    if times.is_empty() {
        return Ok(());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{part}: median {:.1} ms, min {:.1} ms over {iterations} iterations",
        times[times.len() / 2],
        times[0]
    );
    Ok(())
}
