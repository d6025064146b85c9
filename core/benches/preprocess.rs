//! The host side of inference for one image (`cargo bench -p core --bench preprocess`): PNG
//! decode, RGB conversion, the antialiased resize to the model's input and normalisation, on the
//! shipped sample cell (300×300 grayscale → 224×224). On a GPU these run on the CPU while the
//! device waits, so they bound the images per second of `hvq bench` there.

use criterion::{Criterion, criterion_group, criterion_main};
use hvq::config::InputNorm;
use hvq::preprocess;

fn steps(c: &mut Criterion) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../samples/mono-defect-cell0001.png"
    );
    let bytes = std::fs::read(path).expect("the shipped sample image");
    let img = preprocess::decode(&bytes, "sample").expect("decodes");
    let resized = preprocess::resize_rgb(&img, 224);
    let norm = InputNorm::imagenet();
    let mut g = c.benchmark_group("preprocess 300x300 gray -> 224");
    g.bench_function("decode PNG", |z| {
        z.iter(|| preprocess::decode(&bytes, "sample").unwrap())
    });
    g.bench_function("to RGB", |z| z.iter(|| preprocess::to_rgb(&img)));
    g.bench_function("resize (from decoded)", |z| {
        z.iter(|| preprocess::resize_rgb(&img, 224))
    });
    g.bench_function("normalise", |z| {
        z.iter(|| preprocess::normalise(&resized, &norm))
    });
    g.bench_function("RGB route: resize_rgb + normalise", |z| {
        z.iter(|| preprocess::normalise(&preprocess::resize_rgb(&img, 224), &norm))
    });
    g.bench_function("input_values (gray shortcut)", |z| {
        z.iter(|| preprocess::input_values(&img, 224, &norm))
    });
    let slots: Vec<usize> = (0..8).collect();
    let device = burn::tensor::Device::flex();
    g.bench_function("batch_input of 8, decode included (flex)", |z| {
        z.iter(|| {
            let batch = preprocess::batch_input(
                &slots,
                |_| preprocess::decode(&bytes, "sample"),
                224,
                &norm,
                &device,
            )
            .unwrap();
            batch.into_data()
        })
    });
    g.finish();
}

criterion_group!(benches, steps);
criterion_main!(benches);
