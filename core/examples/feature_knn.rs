//! Do the backbone's features see a defect at all? A reference that learns nothing: each test
//! feature vector (one per cell of the 14×14 grid) is scored by its distance to the nearest
//! training vector of the same class (PatchCore's idea without coreset or reweighting), the
//! image score is the largest cell score. Where this reference finds a defect kind and HVQ-Trans
//! does not, the reconstruction model is the limit; where both fail, the features are. Part of
//! the accuracy study (docs/quality.md).
//!
//! ```sh
//! cargo run --release -p core --example feature_knn -- WEIGHTS_DIR DATASET_SPEC OUT.json [INPUT_SIZE]
//! python3 scripts/defect_breakdown.py OUT.json SET_DIR    # per defect kind and size
//! ```
//! OUT.json holds `images` as `hvq eval --json` writes them (id, class, score, anomalous).
//! INPUT_SIZE (a multiple of 16; default the model's) runs the backbone on larger or smaller
//! inputs, with a grid of INPUT_SIZE / 16 cells a side: does a finer grid see more?

use burn::tensor::{Device, Tensor, TensorData};
use hvq::app::ModelSource;
use hvq::features::extract;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (weights, spec, out, input_size) = match args.as_slice() {
        [w, d, o] => (w, d, o, None),
        [w, d, o, s] => (w, d, o, Some(s.parse::<usize>()?)),
        _ => anyhow::bail!("usage: feature_knn WEIGHTS_DIR DATASET_SPEC OUT.json [INPUT_SIZE]"),
    };
    let device = Device::flex();
    let mut detector =
        ModelSource::from_option(Some(std::path::Path::new(weights))).load(&device)?;
    if let Some(size) = input_size {
        detector.config.backbone = detector.config.backbone.with_input_size(size)?;
        detector.config.hvq.feature_size = detector.config.backbone.feature_size;
    }
    let dataset = hvq::data::open(spec)?;
    eprintln!("features of {} training images", dataset.train.len());
    let train = extract(&detector, &dataset.train, 16, &device, &mut |_| {})?;
    eprintln!("features of {} test images", dataset.test.len());
    let test = extract(&detector, &dataset.test, 16, &device, &mut |_| {})?;
    let [f, h, w] = train.shape;
    let cells = h * w;
    // [N·cells, F] rows of one class's samples.
    let rows = |set: &hvq::features::FeatureSet, keep: &dyn Fn(usize) -> bool| {
        let per = f * cells;
        let mut v = Vec::new();
        let mut n = 0;
        for i in (0..set.len()).filter(|&i| keep(i)) {
            let s = &set.values[i * per..(i + 1) * per];
            for c in 0..cells {
                v.extend((0..f).map(|k| s[k * cells + c]));
            }
            n += cells;
        }
        Tensor::<2>::from_data(TensorData::new(v, [n, f]), &device)
    };
    let mut images = Vec::new();
    for class in 0..dataset.class_names.len() {
        let bank = rows(&train, &|i| train.classes[i] == class);
        let n_bank = bank.dims()[0];
        let bank_sq = bank.clone().powi_scalar(2).sum_dim(1).reshape([1, n_bank]);
        for (i, sample) in dataset
            .test
            .iter()
            .enumerate()
            .filter(|(_, s)| s.class == class)
        {
            let q = rows(&test, &|j| j == i);
            // ‖q − b‖² = ‖q‖² + ‖b‖² − 2 q·b, the smallest over the bank, per cell.
            let d2 = q.clone().powi_scalar(2).sum_dim(1) + bank_sq.clone()
                - q.matmul(bank.clone().transpose()).mul_scalar(2.0);
            let nearest = d2.min_dim(1).clamp_min(0.0).sqrt();
            let score: f32 = nearest.max().into_scalar();
            images.push(serde_json::json!({
                "id": sample.id, "class": dataset.class_names[class], "score": score,
                "anomalous": sample.anomalous,
            }));
        }
    }
    let scores: Vec<f32> = images
        .iter()
        .map(|i| i["score"].as_f64().unwrap() as f32)
        .collect();
    let labels: Vec<bool> = images
        .iter()
        .map(|i| i["anomalous"].as_bool().unwrap())
        .collect();
    for class in &dataset.class_names {
        let (s, l): (Vec<f32>, Vec<bool>) = images
            .iter()
            .zip(scores.iter().zip(&labels))
            .filter(|(i, _)| i["class"] == class.as_str())
            .map(|(_, (&s, &l))| (s, l))
            .unzip();
        eprintln!(
            "{class}: image AUROC {:.3}",
            hvq::eval::auroc(&s, &l).unwrap_or(f64::NAN)
        );
    }
    eprintln!(
        "pooled over classes, image AUROC {:.3}",
        hvq::eval::auroc(&scores, &labels).unwrap_or(f64::NAN)
    );
    std::fs::write(
        out,
        serde_json::to_vec_pretty(&serde_json::json!({"images": images}))?,
    )?;
    Ok(())
}
