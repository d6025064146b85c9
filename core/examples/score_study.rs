//! How should an anomaly map become an image score? Scores a dataset's test split once (class from
//! the label) and compares image AUROC for several rules computed from the same 224×224 maps:
//! the official one (max after 16×16 box averaging), other box sizes, the mean of the map, and
//! the mean of its top-k pixels. Part of the accuracy study (docs/quality.md).
//!
//! ```sh
//! cargo run --release -p core --example score_study -- WEIGHTS_DIR DATASET_SPEC [--json out.json]
//! ```

use std::path::PathBuf;

use hvq::app::ModelSource;
use hvq::app::{ClassChoice, Inspector, MapResolution};
use hvq::eval::auroc;

/// Largest mean of a `pool`×`pool` window (stride 1, inside the map): core's own image score, the
/// one `hvq eval` uses, on this one map; pool 1 = the maximum.
fn max_box_mean(map: &[f32], w: usize, h: usize, pool: usize) -> f32 {
    let device = burn::tensor::Device::flex();
    let map = burn::tensor::Tensor::<4>::from_data(
        burn::tensor::TensorData::new(map.to_vec(), [1, 1, h, w]),
        &device,
    );
    hvq::map::image_score(map, pool).into_scalar()
}

/// Mean of the largest `fraction` of the map's pixels (at least one).
fn top_mean(map: &[f32], fraction: f64) -> f32 {
    let mut v = map.to_vec();
    v.sort_by(|a, b| b.total_cmp(a));
    let k = ((v.len() as f64 * fraction).round() as usize).max(1);
    v[..k].iter().sum::<f32>() / k as f32
}

/// A named rule: map values, width, height → image score.
type Rule = (String, Box<dyn Fn(&[f32], usize, usize) -> f32>);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(weights), Some(spec)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: score_study WEIGHTS_DIR DATASET_SPEC [--json OUT]");
    };
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let device = burn::tensor::Device::flex();
    let source = ModelSource::from_option(Some(std::path::Path::new(weights)));
    let inspector = Inspector::new(source.load(&device)?, device);
    let dataset = hvq::data::open(spec)?;
    let rules: Vec<Rule> = vec![
        (
            "max (pool 1)".into(),
            Box::new(|m, w, h| max_box_mean(m, w, h, 1)),
        ),
        (
            "max of 8×8 means".into(),
            Box::new(|m, w, h| max_box_mean(m, w, h, 8)),
        ),
        (
            "max of 16×16 means (official)".into(),
            Box::new(|m, w, h| max_box_mean(m, w, h, 16)),
        ),
        (
            "max of 32×32 means".into(),
            Box::new(|m, w, h| max_box_mean(m, w, h, 32)),
        ),
        (
            "max of 64×64 means".into(),
            Box::new(|m, w, h| max_box_mean(m, w, h, 64)),
        ),
        ("top 1 % mean".into(), Box::new(|m, _, _| top_mean(m, 0.01))),
        ("top 5 % mean".into(), Box::new(|m, _, _| top_mean(m, 0.05))),
        (
            "top 10 % mean".into(),
            Box::new(|m, _, _| top_mean(m, 0.10)),
        ),
        ("mean".into(), Box::new(|m, _, _| top_mean(m, 1.0))),
    ];
    let n_classes = dataset.class_names.len();
    // scores[rule][class] = (score, anomalous) pairs.
    let mut scores = vec![vec![Vec::<(f32, bool)>::new(); n_classes]; rules.len()];
    let total = dataset.test.len();
    for (i, sample) in dataset.test.iter().enumerate() {
        let img = sample.load_image()?;
        let got = inspector.inspect_at(
            &img,
            &ClassChoice::Index(sample.class),
            MapResolution::Model,
        )?;
        let (m, w, h) = (&got.model_map, got.model_width, got.model_height);
        for (r, (_, rule)) in rules.iter().enumerate() {
            scores[r][sample.class].push((rule(m, w, h), sample.anomalous));
        }
        if (i + 1) % 100 == 0 || i + 1 == total {
            eprintln!("{}/{total} images scored", i + 1);
        }
    }
    let mut header = String::from("| image score |");
    for c in &dataset.class_names {
        header.push_str(&format!(" {c} |"));
    }
    println!("{header} mean |");
    println!("|---{}|---|", "|---".repeat(n_classes));
    let mut out = Vec::new();
    for (r, (name, _)) in rules.iter().enumerate() {
        let per: Vec<f64> = scores[r]
            .iter()
            .map(|pairs| {
                let (s, l): (Vec<f32>, Vec<bool>) = pairs.iter().copied().unzip();
                auroc(&s, &l).unwrap_or(f64::NAN)
            })
            .collect();
        let mean = per.iter().sum::<f64>() / per.len() as f64;
        let cells: String = per.iter().map(|a| format!(" {a:.3} |")).collect();
        println!("| {name} |{cells} {mean:.3} |");
        out.push(serde_json::json!({"rule": name, "per_class": per, "mean": mean}));
    }
    if let Some(path) = json {
        let doc = serde_json::json!({"weights": weights, "data": spec, "classes": dataset.class_names, "rules": out});
        std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
    }
    Ok(())
}
