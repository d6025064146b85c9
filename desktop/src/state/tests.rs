use std::path::PathBuf;
use std::sync::Arc;

use super::*;

fn outcome(score: f32) -> Outcome {
    Outcome {
        score,
        class_index: 0,
        class_name: "mono".into(),
        width: 2,
        height: 2,
        model_map: Arc::new(vec![0.0, 1.0, 2.0, score]),
        model_width: 2,
        model_height: 2,
        normal_score: None,
        millis: 1.0,
    }
}

fn list_with(scores: &[(&str, Option<f32>)]) -> ImageList {
    let mut list = ImageList::new(SortKey::Name, SortOrder::Ascending);
    let added = list.add(scores.iter().map(|(n, _)| PathBuf::from(n)));
    for ((id, _), (_, s)) in added.into_iter().zip(scores) {
        let r = match s {
            Some(s) => Ok(outcome(*s)),
            None => Err("cannot decode".to_string()),
        };
        list.set_result(id, r, None);
    }
    list
}

fn names(list: &ImageList) -> Vec<String> {
    list.iter().map(Entry::name).collect()
}

#[test]
fn adding_skips_duplicates_and_selects_first() {
    let mut list = ImageList::new(SortKey::Name, SortOrder::Ascending);
    let a = list.add(vec!["b.png".into(), "a.png".into()]);
    assert_eq!(a.len(), 2);
    assert_eq!(list.selected_entry().unwrap().name(), "a.png");
    let again = list.add(vec!["a.png".into(), "c.png".into()]);
    assert_eq!(again.len(), 1);
    assert_eq!(list.len(), 3);
    assert!(matches!(
        list.get(again[0].0).unwrap().status,
        Status::Queued
    ));
}

#[test]
fn sorting_by_score_verdict_and_name() {
    let mut list = list_with(&[
        ("a.png", Some(3.0)),
        ("b.png", None),
        ("c.png", Some(9.0)),
        ("d.png", Some(1.0)),
    ]);
    assert_eq!(names(&list), ["a.png", "b.png", "c.png", "d.png"]);
    list.sort_by(SortKey::Score, Some(2.0));
    assert_eq!(list.sort_order, SortOrder::Descending);
    assert_eq!(names(&list), ["c.png", "a.png", "d.png", "b.png"]);
    list.sort_by(SortKey::Score, Some(2.0));
    assert_eq!(
        names(&list),
        ["d.png", "a.png", "c.png", "b.png"],
        "unscored stay last"
    );
    list.sort_by(SortKey::Verdict, Some(5.0));
    assert_eq!(names(&list), ["c.png", "a.png", "d.png", "b.png"]);
    list.sort_by(SortKey::Name, None);
    assert_eq!(names(&list), ["a.png", "b.png", "c.png", "d.png"]);
    list.sort_by(SortKey::Name, None);
    assert_eq!(names(&list), ["d.png", "c.png", "b.png", "a.png"]);
}

#[test]
fn keyboard_navigation_follows_display_order() {
    let mut list = list_with(&[
        ("a.png", Some(3.0)),
        ("b.png", Some(1.0)),
        ("c.png", Some(2.0)),
    ]);
    list.sort_by(SortKey::Score, None); // descending: a (3), c (2), b (1)
    list.select_end(false);
    assert_eq!(list.selected_entry().unwrap().name(), "a.png");
    list.move_selection(1);
    assert_eq!(list.selected_entry().unwrap().name(), "c.png");
    list.move_selection(5);
    assert_eq!(list.selected_entry().unwrap().name(), "b.png");
    list.move_selection(-1);
    assert_eq!(list.selected_entry().unwrap().name(), "c.png");
    list.select_end(true);
    assert_eq!(list.selected_entry().unwrap().name(), "b.png");
}

#[test]
fn verdicts_follow_the_threshold() {
    assert_eq!(verdict(5.0, Some(4.0)), Verdict::Anomalous);
    assert_eq!(
        verdict(4.0, Some(4.0)),
        Verdict::Normal,
        "equal passes, as the CLI"
    );
    assert_eq!(verdict(5.0, None), Verdict::Uncalibrated);
    let list = list_with(&[("a.png", Some(3.0)), ("b.png", None), ("c.png", Some(9.0))]);
    let c = list.counts(Some(5.0));
    assert_eq!(
        (c.total, c.normal, c.anomalous, c.errors, c.queued),
        (3, 1, 1, 1, 0)
    );
    let c = list.counts(Some(10.0));
    assert_eq!((c.normal, c.anomalous), (2, 0));
}

#[test]
fn unreadable_files_stay_in_the_list_with_their_error() {
    let list = list_with(&[("broken.png", None)]);
    let e = list.iter().next().unwrap();
    assert_eq!(e.verdict(Some(1.0)), Verdict::Error);
    assert!(matches!(&e.status, Status::Failed(m) if m == "cannot decode"));
}

#[test]
fn calibration_max_and_quantile() {
    let good = [1.0, 2.0, 3.0, 4.0];
    assert_eq!(calibrate(&good, CalibrationRule::Max), Some(4.0));
    assert!((calibrate(&good, CalibrationRule::Quantile(0.99)).unwrap() - 3.97).abs() < 1e-6);
    assert_eq!(calibrate(&[], CalibrationRule::Max), None);
    let mut run = CalibrationRun {
        folder: "good".into(),
        total: 3,
        scores: vec![1.0, 2.0],
        errors: vec![],
        rule: CalibrationRule::Max,
    };
    assert_eq!(run.threshold(), None, "not finished");
    run.errors.push(("x.png".into(), "bad".into()));
    assert_eq!(run.threshold(), Some(2.0));
}

#[test]
fn display_scale_is_predicts() {
    use hvq::overlay::{ColorScale, Weighting};
    let own = |lo, hi| ColorScale {
        lo,
        hi,
        weighting: Weighting::Uniform,
    };
    let mut o = outcome(7.0);
    assert_eq!(display_scale(&o, None), own(0.0, 7.0));
    assert_eq!(display_scale(&o, Some(10.0)), own(0.0, 10.0));
    assert_eq!(display_scale(&o, Some(5.0)), own(0.0, 7.0));
    // A model with a normal level: anchored at it and at the threshold in use.
    o.normal_score = Some(3.0);
    let anchored = ColorScale {
        lo: 3.0,
        hi: 5.0,
        weighting: Weighting::Fade,
    };
    assert_eq!(display_scale(&o, Some(5.0)), anchored);
}

#[test]
fn csv_quotes_and_columns() {
    let list = list_with(&[("a,b.png", Some(3.0)), ("c.png", None)]);
    let csv = to_csv(&result_rows(&list, Some(2.0)));
    let lines: Vec<&str> = csv.lines().collect();
    // Core's schema, the one `hvq predict` writes.
    assert_eq!(lines[0], hvq::app::results::CSV_HEADER);
    assert_eq!(lines[1], "\"a,b.png\",mono,3,2,anomalous,2,2,1.0,,,");
    assert_eq!(lines[2], "c.png,,,,error,,,,,,cannot decode");
}

#[test]
fn export_writes_tables_and_overlays() {
    let dir = std::env::temp_dir().join(format!("hvq-desktop-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A real 2×2 photo for the inspected image, and a missing one.
    let photo_path = dir.join("cell.png");
    let photo = image::RgbImage::from_fn(2, 2, |x, y| {
        image::Rgb([(x * 100) as u8, (y * 100) as u8, 50])
    });
    photo.save(&photo_path).unwrap();
    let mut list = ImageList::new(SortKey::Name, SortOrder::Ascending);
    let ids = list.add(vec![photo_path.clone(), dir.join("missing.png")]);
    list.set_result(ids[0].0, Ok(outcome(4.0)), None);
    list.set_result(ids[1].0, Err("no such file".into()), None);
    let out = dir.join("out");
    let summary = export(&out, &list, Some(3.0), 0.5).unwrap();
    assert_eq!((summary.rows, summary.overlays), (2, 1));
    assert!(summary.failures.is_empty());
    let written = image::open(out.join("cell_overlay.png")).unwrap().to_rgb8();
    let own = hvq::overlay::ColorScale {
        lo: 0.0,
        hi: 4.0,
        weighting: hvq::overlay::Weighting::Uniform,
    };
    let expect = hvq::overlay::blend(&photo, &[0.0, 1.0, 2.0, 4.0], &own, 0.5);
    assert_eq!(written, expect);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json[0]["verdict"], "anomalous");
    assert_eq!(json[0]["overlay"], "cell_overlay.png");
    assert_eq!(json[1]["error"], "no such file");
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}
