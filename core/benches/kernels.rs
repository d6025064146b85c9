//! The hot kernels of the official configuration on the CPU backend, at the shapes they run at
//! for a batch of 8 (`cargo bench -p core --bench kernels`). Each group compares what the model
//! does with the alternatives considered, so a regression or a faster formulation shows up here
//! before it shows up in `hvq bench`.

use burn::tensor::activation::{sigmoid, silu, softmax};
use burn::tensor::module::{batch_norm, conv2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};

/// Run `f` and read its result back, so lazy work is timed too.
fn run<const D: usize>(f: impl Fn() -> Tensor<D>) {
    let _ = f().into_data();
}

/// EfficientNet-B4 MBConv pieces at the 56×56 stage (expand 32 → 192, depthwise, project).
fn backbone(c: &mut Criterion) {
    let d = Device::flex();
    let (b, cin, e, h) = (8, 32, 192, 56);
    let x = Tensor::<4>::random([b, cin, h, h], Distribution::Default, &d);
    let xe = Tensor::<4>::random([b, e, h, h], Distribution::Default, &d);
    let w_expand = Tensor::<4>::random([e, cin, 1, 1], Distribution::Default, &d);
    let w_dw3 = Tensor::<4>::random([e, 1, 3, 3], Distribution::Default, &d);
    let w_dw5 = Tensor::<4>::random([e, 1, 5, 5], Distribution::Default, &d);
    let w_project = Tensor::<4>::random([cin, e, 1, 1], Distribution::Default, &d);
    let ones = Tensor::<1>::ones([e], &d);
    let mut g = c.benchmark_group("backbone 56x56 b8");
    g.sample_size(20);
    let opts = |s, p, groups| ConvOptions::new([s, s], [p, p], [1, 1], groups);
    g.bench_function("conv 1x1 expand 32->192", |z| {
        z.iter(|| run(|| conv2d(x.clone(), w_expand.clone(), None, opts(1, 0, 1))))
    });
    g.bench_function("conv 1x1 as batched matmul", |z| {
        let w: Tensor<3> = w_expand.clone().reshape([1, e, cin]);
        z.iter(|| {
            run(|| {
                w.clone()
                    .matmul(x.clone().reshape([b, cin, h * h]))
                    .reshape([b, e, h, h])
            })
        })
    });
    g.bench_function("depthwise 3x3", |z| {
        z.iter(|| run(|| conv2d(xe.clone(), w_dw3.clone(), None, opts(1, 1, e))))
    });
    g.bench_function("depthwise 5x5", |z| {
        z.iter(|| run(|| conv2d(xe.clone(), w_dw5.clone(), None, opts(1, 2, e))))
    });
    g.bench_function("conv 1x1 project 192->32", |z| {
        z.iter(|| run(|| conv2d(xe.clone(), w_project.clone(), None, opts(1, 0, 1))))
    });
    g.bench_function("batch norm", |z| {
        z.iter(|| {
            run(|| {
                batch_norm(
                    xe.clone(),
                    ones.clone(),
                    ones.clone(),
                    ones.clone(),
                    ones.clone(),
                    1e-3,
                )
            })
        })
    });
    // Swish, as the backbone computes it (x / (1 + exp(-x))) and as the definition reads.
    g.bench_function("swish x*sigmoid(x)", |z| {
        z.iter(|| run(|| xe.clone() * sigmoid(xe.clone())))
    });
    g.bench_function("swish as x / (1 + exp(-x))", |z| {
        z.iter(|| run(|| xe.clone() / xe.clone().neg().exp().add_scalar(1.0)))
    });
    g.bench_function("silu", |z| z.iter(|| run(|| silu(xe.clone()))));
    g.bench_function("exp", |z| z.iter(|| run(|| xe.clone().exp())));
    g.bench_function("add (memory-bound reference)", |z| {
        z.iter(|| run(|| xe.clone() + xe.clone()))
    });
    g.finish();
}

/// The reconstruction network's kernels: 196 tokens × batch 8, C = 256 (2C = 512 in the decoder),
/// K = 512 codes, FFN 1024.
fn network(c: &mut Criterion) {
    let d = Device::flex();
    let (b, l, c2, k, ffn) = (8, 196, 512, 512, 1024);
    let x = Tensor::<3>::random([b, l, c2], Distribution::Default, &d);
    let books = Tensor::<3>::random([b, c2, k], Distribution::Default, &d);
    let w_ffn = Tensor::<2>::random([c2, ffn], Distribution::Default, &d);
    let mut g = c.benchmark_group("network b8");
    g.sample_size(20);
    g.bench_function("VQ distances + argmin (512-d, K 512)", |z| {
        z.iter(|| {
            run(|| {
                let dots = x.clone().matmul(books.clone());
                let xx = x.clone().powi_scalar(2).sum_dim(2);
                let ee = books.clone().powi_scalar(2).sum_dim(1);
                (xx - dots.mul_scalar(2.0) + ee).argmin(2).float()
            })
        })
    });
    g.bench_function("VQ quantize, codes looked up (512-d, K 512)", |z| {
        z.iter(|| {
            run(|| {
                let codes = hvq::model::BatchCodes::from_columns(books.clone());
                hvq::model::quantize(x.clone(), codes).quantized
            })
        })
    });
    g.bench_function(
        "VQ code lookup as an element gather from the transposed view",
        |z| {
            let idx: Tensor<3, burn::tensor::Int> = x.clone().matmul(books.clone()).argmax(2);
            z.iter(|| {
                run(|| {
                    books
                        .clone()
                        .swap_dims(1, 2)
                        .gather(1, idx.clone().expand([b, l, c2]))
                })
            })
        },
    );
    g.bench_function("OT score (512-d, K 512)", |z| {
        z.iter(|| {
            run(|| {
                let codes = hvq::model::BatchCodes::from_columns(books.clone());
                hvq::model::ot_score(x.clone(), &codes, k as f32)
            })
        })
    });
    g.bench_function("FFN matmul 512->1024", |z| {
        z.iter(|| run(|| x.clone().matmul(w_ffn.clone().unsqueeze_dim(0))))
    });
    g.bench_function("attention scores + softmax (8 heads)", |z| {
        let q: Tensor<4> = x.clone().reshape([b, l, 8, c2 / 8]).swap_dims(1, 2);
        z.iter(|| run(|| softmax(q.clone().matmul(q.clone().swap_dims(2, 3)), 3)))
    });
    // The encoder's products at width 256 (forward projections, and the backward's weight
    // gradient with K = tokens), the sizes where gemm's AVX2 kernels fall behind MKL's (README,
    // "CPUs without AVX-512").
    let tokens = Tensor::<2>::random([b * l, 256], Distribution::Default, &d);
    for n in [256, 768, 1024] {
        let w = Tensor::<2>::random([256, n], Distribution::Default, &d);
        g.bench_function(format!("product {}x256 by 256x{n}", b * l), |z| {
            z.iter(|| run(|| tokens.clone().matmul(w.clone())))
        });
    }
    let grad = Tensor::<2>::random([b * l, 256], Distribution::Default, &d);
    g.bench_function(
        format!("weight gradient 256x{} by {}x256", b * l, b * l),
        |z| z.iter(|| run(|| tokens.clone().transpose().matmul(grad.clone()))),
    );
    // The whole of attention, as the model composes it and as one call of burn's fused op, at
    // the encoder's width (256) and the decoder's (512).
    for width in [256, 512] {
        let q: Tensor<4> = x
            .clone()
            .narrow(2, 0, width)
            .reshape([b, l, 8, width / 8])
            .swap_dims(1, 2);
        g.bench_function(format!("attention composed ({width}-d, 8 heads)"), |z| {
            z.iter(|| {
                run(|| {
                    let scores =
                        hvq::kernels::softmax_last(q.clone().matmul(q.clone().swap_dims(2, 3)));
                    scores
                        .matmul(q.clone())
                        .swap_dims(1, 2)
                        .reshape([b, l, width])
                })
            })
        });
        g.bench_function(format!("attention fused ({width}-d, 8 heads)"), |z| {
            let options = burn::tensor::ops::AttentionModuleOptions {
                scale: Some(1.0),
                ..Default::default()
            };
            z.iter(|| {
                run(|| {
                    burn::tensor::module::attention(
                        q.clone(),
                        q.clone(),
                        q.clone(),
                        None,
                        None,
                        options,
                    )
                    .swap_dims(1, 2)
                    .reshape([b, l, width])
                })
            })
        });
    }
    g.finish();
}

/// The anomaly map's last steps: 14×14 → 224×224 and the 16×16 box-average maximum.
fn map(c: &mut Criterion) {
    use burn::tensor::module::avg_pool2d;
    use burn::tensor::ops::AvgPoolOptions;
    let d = Device::flex();
    let m14 = Tensor::<4>::random([8, 1, 14, 14], Distribution::Default, &d);
    let m224 = hvq::map::upsample(m14.clone(), [224, 224]);
    let mut g = c.benchmark_group("map b8");
    g.sample_size(20);
    g.bench_function("upsample 14 -> 224", |z| {
        z.iter(|| run(|| hvq::map::upsample(m14.clone(), [224, 224])))
    });
    g.bench_function("image score (separable 16x16 average, max)", |z| {
        z.iter(|| run(|| hvq::map::image_score(m224.clone(), 16)))
    });
    g.bench_function("16x16 average pool in one pass", |z| {
        z.iter(|| {
            run(|| {
                avg_pool2d(
                    m224.clone(),
                    AvgPoolOptions::new([16, 16]).with_stride([1, 1]),
                )
            })
        })
    });
    g.finish();
}

criterion_group!(benches, backbone, network, map);
criterion_main!(benches);
