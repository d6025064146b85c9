//! `hvq synth-defects` end to end: a texture photograph in, an MVTec tree out that `hvq train`
//! and `hvq eval` take, with pixel metrics (every defect has its mask); bad input named.

use crate::common::tree::{class_metrics, hvq, output, run, temp, train};

#[test]
fn synthetic_defect_set_trains_and_evaluates_with_pixel_metrics() {
    let data_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let out = temp("synth");
    let set = out.join("set");
    let table = run(hvq()
        .args(["synth-defects", "--texture"])
        .arg(data_dir.join("coffee.png"))
        .arg("--texture")
        .arg(data_dir.join("chelsea.png"))
        .arg("--out")
        .arg(&set)
        .args([
            "--crop",
            "64",
            "--train",
            "4",
            "--test-good",
            "3",
            "--per-kind",
            "2",
        ]));
    assert!(
        table.contains("| coffee | 4 | 3 | 10 |") && table.contains("| chelsea | 4 | 3 | 10 |"),
        "{table}"
    );
    for kind in ["scratch", "hole", "stain", "blur", "foreign"] {
        assert!(set.join(format!("coffee/test/{kind}/001.png")).is_file());
        assert!(
            set.join(format!("coffee/ground_truth/{kind}/001_mask.png"))
                .is_file()
        );
    }

    let data = format!("mvtec:{}", set.display());
    let model = out.join("model");
    run(&mut train(&data, &model, 1));
    let json = out.join("metrics.json");
    run(hvq()
        .args(["eval", "--device", "cpu", "--data", &data, "--weights"])
        .arg(&model)
        .arg("--json")
        .arg(&json));
    class_metrics(&json, &["coffee", "chelsea"]);

    // A texture too narrow for the crop and its held-out band: refused, file named.
    let (code, text) = output(
        hvq()
            .args(["synth-defects", "--texture"])
            .arg(data_dir.join("chelsea.png"))
            .arg("--out")
            .arg(out.join("other"))
            .args(["--crop", "256"]),
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("chelsea.png") && text.contains("too small"),
        "{text}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}
