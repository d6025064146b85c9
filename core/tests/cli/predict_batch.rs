//! `hvq predict --batch N`: images go through the model N at a time, and each still gets exactly
//! the result it gets alone; an unreadable file in a batch fails alone, in its place.

use crate::common::tree::{hvq, output, temp};

fn rows(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("results.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn batched_predict_gives_each_image_its_own_result() {
    let input = temp("batch-in");
    let samples = crate::common::repo_root().join("samples");
    for entry in std::fs::read_dir(&samples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "png") {
            std::fs::copy(&path, input.join(path.file_name().unwrap())).unwrap();
        }
    }
    // Sorted among the samples: a file that is not a PNG, and one cut short.
    std::fs::write(input.join("mono-garbage.png"), b"not a png at all").unwrap();
    let png = std::fs::read(samples.join("poly-normal-cell0065.png")).unwrap();
    std::fs::write(input.join("poly-cut.png"), &png[..png.len() / 3]).unwrap();

    let mut results = Vec::new();
    for batch in ["1", "3", "16"] {
        let out = temp(&format!("batch-out-{batch}"));
        let (code, text) = output(
            hvq()
                .args(["predict", "--device", "cpu", "--batch", batch, "--out"])
                .arg(&out)
                .arg(&input),
        );
        assert_eq!(code, Some(2), "two unreadable files: exit 2\n{text}");
        assert!(
            text.contains("4 images inspected") && text.contains(&format!("batch {batch})")),
            "{text}"
        );
        assert!(text.contains("images/s"), "{text}");
        let rows = rows(&out);
        results.push((out, rows));
    }
    let (first_dir, first) = &results[0];
    let names: Vec<&str> = first.iter().map(|r| r["image"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 6);
    for (r, n) in first.iter().zip(&names) {
        let bad = n.ends_with("mono-garbage.png") || n.ends_with("poly-cut.png");
        assert_eq!(r["verdict"] == "error", bad, "{r}");
        if bad {
            assert!(
                r["error"]
                    .as_str()
                    .unwrap()
                    .contains(n.rsplit('/').next().unwrap()),
                "{r}"
            );
        }
    }
    for (dir, other) in &results[1..] {
        assert_eq!(other.len(), first.len());
        for (a, b) in first.iter().zip(other) {
            for key in [
                "image", "class", "score", "verdict", "width", "height", "map", "error",
            ] {
                assert_eq!(a[key], b[key], "{key}: {a} vs {b}");
            }
            if let Some(map) = a["map"].as_str() {
                let same = std::fs::read(first_dir.join(map)).unwrap()
                    == std::fs::read(dir.join(map)).unwrap();
                assert!(same, "{map} differs between batch sizes");
            }
        }
    }
    let (code, text) = output(
        hvq()
            .args(["predict", "--device", "cpu", "--batch", "0", "--out"])
            .arg(&results[0].0)
            .arg(&input),
    );
    assert!(code == Some(1) && text.contains("--batch"), "{text}");
    for (dir, _) in results {
        std::fs::remove_dir_all(dir).ok();
    }
    std::fs::remove_dir_all(input).ok();
}
