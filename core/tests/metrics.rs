//! `hvq::eval` against scikit-learn and the MVTec AD evaluation code.
//!
//! The expected values in `fixtures/metrics/` were computed once by
//! `scripts/make_metric_fixtures.py` (scikit-learn for AUROC / AP / F1max, a numpy + scipy port
//! of the MVTec AD code for AUPRO); these tests need no Python.

use std::path::PathBuf;
use std::time::Instant;

use hvq::eval::{
    ClassMetrics, PixelData, ScoreRanking, aupro, auroc, average_precision, connected_components,
    evaluate_class, f1_max, format_table, mean_metrics,
};
use serde::Deserialize;

/// Tolerance against scikit-learn: both sides are exact up to float summation order.
const TOL: f64 = 1e-12;

fn fixture<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metrics")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Scores are stored as decimals; both sides read them as f64 and cast to f32.
fn to_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

fn to_bool(values: &[u8]) -> Vec<bool> {
    values.iter().map(|&v| v != 0).collect()
}

#[derive(Deserialize)]
struct BinaryFile {
    cases: Vec<BinaryCase>,
}

#[derive(Deserialize)]
struct BinaryCase {
    name: String,
    scores: Vec<f64>,
    labels: Vec<u8>,
    auroc: Option<f64>,
    average_precision: Option<f64>,
    f1_max: Option<f64>,
    f1_threshold: Option<f64>,
}

#[derive(Deserialize)]
struct ProFile {
    cases: Vec<ProCase>,
}

#[derive(Deserialize)]
struct ProCase {
    name: String,
    width: usize,
    height: usize,
    maps: Vec<Vec<f64>>,
    masks: Vec<Vec<u8>>,
    regions: Vec<u32>,
    aupro: std::collections::BTreeMap<String, f64>,
}

/// Checks `got` against `want` (both absent, or both present and within `TOL`) and returns the
/// absolute difference.
fn compare(case: &str, metric: &str, got: Option<f64>, want: Option<f64>) -> f64 {
    match (got, want) {
        (None, None) => 0.0,
        (Some(g), Some(w)) => {
            let diff = (g - w).abs();
            assert!(
                diff <= TOL,
                "{case}: {metric} = {g}, scikit-learn {w} (diff {diff:e})"
            );
            diff
        }
        _ => panic!("{case}: {metric} = {got:?}, scikit-learn {want:?}"),
    }
}

#[test]
fn binary_metrics_match_sklearn() {
    let file: BinaryFile = fixture("binary.json");
    let (mut d_auroc, mut d_ap, mut d_f1) = (0.0f64, 0.0f64, 0.0f64);
    for case in &file.cases {
        let scores = to_f32(&case.scores);
        let labels = to_bool(&case.labels);
        let name = case.name.as_str();
        d_auroc = d_auroc.max(compare(name, "auroc", auroc(&scores, &labels), case.auroc));
        d_ap = d_ap.max(compare(
            name,
            "average_precision",
            average_precision(&scores, &labels),
            case.average_precision,
        ));
        let f1 = f1_max(&scores, &labels);
        d_f1 = d_f1.max(compare(name, "f1_max", f1.map(|f| f.0), case.f1_max));
        // The threshold is one of the input scores: it must be exactly the same one.
        assert_eq!(
            f1.map(|f| f.1),
            case.f1_threshold.map(|t| t as f32),
            "{name}: f1 threshold"
        );
        // The ranking API gives the same values as the free functions.
        if let Some(r) = ScoreRanking::new(&scores, &labels) {
            assert_eq!(r.auroc(), auroc(&scores, &labels), "{name}");
            assert_eq!(r.average_precision(), average_precision(&scores, &labels));
        }
    }
    println!(
        "max |diff| vs scikit-learn over {} cases: auroc {d_auroc:e}, ap {d_ap:e}, f1max {d_f1:e}",
        file.cases.len()
    );
}

#[test]
fn aupro_matches_mvtec_reference() {
    let file: ProFile = fixture("aupro.json");
    let mut max_diff = 0.0f64;
    for case in &file.cases {
        let maps: Vec<Vec<f32>> = case.maps.iter().map(|m| to_f32(m)).collect();
        let masks: Vec<Vec<bool>> = case.masks.iter().map(|m| to_bool(m)).collect();
        let map_refs: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
        let mask_refs: Vec<&[bool]> = masks.iter().map(Vec::as_slice).collect();
        for (mask, &want) in masks.iter().zip(&case.regions) {
            let (_, count) = connected_components(mask, case.width, case.height)
                .unwrap_or_else(|| panic!("{}: mask size", case.name));
            assert_eq!(
                count, want,
                "{}: regions (scipy.ndimage.label, 3x3)",
                case.name
            );
        }
        for (limit, &want) in &case.aupro {
            let limit: f64 = limit.parse().unwrap_or_else(|e| panic!("{limit}: {e}"));
            let got = aupro(&map_refs, &mask_refs, case.width, case.height, limit);
            let name = format!("{} (limit {limit})", case.name);
            max_diff = max_diff.max(compare(&name, "aupro", got, Some(want)));
        }
    }
    println!("max |diff| vs the MVTec AD reference: aupro {max_diff:e}");
}

#[test]
fn ties_and_one_class() {
    assert_eq!(auroc(&[0.5, 0.5], &[false, true]), Some(0.5));
    assert_eq!(auroc(&[0.1, 0.9], &[true, true]), None);
    assert_eq!(auroc(&[0.1, 0.9], &[false, false]), None);
    assert_eq!(auroc(&[0.1, 0.9], &[false]), None);
    assert_eq!(auroc(&[f32::NAN, 0.9], &[false, true]), None);
    assert_eq!(average_precision(&[0.1, 0.9], &[false, false]), None);
    assert_eq!(f1_max(&[0.1, 0.9], &[false, false]), None);
}

/// Deterministic pseudo-random numbers in [0, 1) (xorshift), so the large test needs no data.
fn uniform(state: &mut u64) -> f32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 40) as f32 / (1u64 << 24) as f32
}

#[test]
fn full_test_set_is_fast() {
    // 100 maps of 224×224 (5 M pixels), a square defect on every other image; defect pixels
    // score in [0.5, 1.5), normal ones in [0, 1), quantised to create many ties.
    let (w, h, n) = (224usize, 224usize, 100usize);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let masks: Vec<Vec<bool>> = (0..n)
        .map(|i| {
            (0..w * h)
                .map(|p| i % 2 == 1 && (60..100).contains(&(p % w)) && (80..130).contains(&(p / w)))
                .collect()
        })
        .collect();
    let maps: Vec<Vec<f32>> = masks
        .iter()
        .map(|mask| {
            mask.iter()
                .map(|&d| {
                    (uniform(&mut state) * 1000.0).round() / 1000.0 + if d { 0.5 } else { 0.0 }
                })
                .collect()
        })
        .collect();
    let map_refs: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
    let mask_refs: Vec<&[bool]> = masks.iter().map(Vec::as_slice).collect();

    let start = Instant::now();
    let pixels = PixelData {
        maps: &map_refs,
        masks: &mask_refs,
        width: w,
        height: h,
    };
    let image_scores: Vec<f32> = maps
        .iter()
        .map(|m| m.iter().copied().fold(f32::MIN, f32::max))
        .collect();
    let image_labels: Vec<bool> = masks.iter().map(|m| m.contains(&true)).collect();
    let metrics = evaluate_class("synthetic", &image_scores, &image_labels, Some(pixels))
        .unwrap_or_else(|| panic!("both kinds of images are present"));
    let elapsed = start.elapsed();
    println!(
        "evaluate_class on {} pixels: {elapsed:?}\n{}",
        n * w * h,
        format_table(std::slice::from_ref(&metrics))
    );

    // Uniform scores shifted by 0.5 on defects: P(defect > normal) = 1 - 0.5²/2 = 0.875, up to
    // quantisation ties and sampling noise.
    let pixel_auroc = metrics.pixel_auroc.unwrap_or(f64::NAN);
    assert!((pixel_auroc - 0.875).abs() < 0.01, "{pixel_auroc}");
    // At a threshold t in [0.5, 1): FPR = 1 - t and every region's overlap is 1.5 - t, so
    // PRO = 0.5 + FPR, and the normalised area up to 0.3 is (0.5·0.3 + 0.3²/2) / 0.3 = 0.65.
    let pro = metrics.aupro.unwrap_or(f64::NAN);
    assert!((pro - 0.65).abs() < 0.01, "{pro}");
    assert!(elapsed.as_secs_f64() < 20.0, "too slow: {elapsed:?}");
}

#[test]
fn mean_and_serde() {
    let a = ClassMetrics {
        class: "a".into(),
        image_auroc: 0.9,
        image_ap: 0.8,
        image_f1_max: 0.7,
        pixel_auroc: Some(0.95),
        pixel_ap: None,
        aupro: Some(0.6),
    };
    let b = ClassMetrics {
        class: "b".into(),
        image_auroc: 0.7,
        image_ap: 0.6,
        image_f1_max: 0.5,
        pixel_auroc: None,
        pixel_ap: None,
        aupro: Some(0.8),
    };
    let mean = mean_metrics(&[a.clone(), b]);
    assert_eq!(mean.class, "mean");
    assert!((mean.image_auroc - 0.8).abs() < 1e-15);
    assert!((mean.image_ap - 0.7).abs() < 1e-15);
    assert!((mean.image_f1_max - 0.6).abs() < 1e-15);
    assert_eq!(mean.pixel_auroc, Some(0.95));
    assert_eq!(mean.pixel_ap, None);
    assert!((mean.aupro.unwrap_or(f64::NAN) - 0.7).abs() < 1e-15);

    let json = serde_json::to_value(&a).unwrap_or_default();
    for field in [
        "image_auroc",
        "pixel_auroc",
        "aupro",
        "image_ap",
        "pixel_ap",
        "image_f1_max",
    ] {
        assert!(json.get(field).is_some(), "field {field} in {json}");
    }
    let back: ClassMetrics = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, a);
}
