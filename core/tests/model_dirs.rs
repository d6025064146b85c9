//! A model directory is user data: sizes in its `config.json` are checked before anything is
//! allocated with them (an absurd width is an error naming the file and the field, not an
//! allocation failure that aborts the process), and a model whose numbers overflow gives no
//! verdict (a NaN score compares false with any threshold and would pass every part).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::tree::{hvq, output, temp};
use hvq::weights::{HostTensor, TensorMap};

/// The shipped model copied into a fresh directory, its config edited by `edit`.
fn shipped_copy(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let dir = temp(name);
    let shipped = common::repo_root().join("weights/elpv-lite0");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shipped.join("config.json")).unwrap())
            .unwrap();
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        shipped.join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    dir
}

fn predict(model: &Path, out: &Path) -> (Option<i32>, String) {
    output(
        hvq()
            .args(["predict", "--device", "cpu", "--weights"])
            .arg(model)
            .arg("--out")
            .arg(out)
            .arg(common::repo_root().join("samples")),
    )
}

#[test]
fn absurd_sizes_in_config_json_are_errors_naming_file_and_field() {
    let cases: [(&str, &str, serde_json::Value, &str); 3] = [
        (
            "embed",
            "/model/hvq/embed_dim",
            (1u64 << 30).into(),
            "hvq.embed_dim 1073741824",
        ),
        (
            "input",
            "/model/backbone/input_size",
            0.into(),
            "backbone.input_size 0",
        ),
        (
            "codes",
            "/model/hvq/codes",
            (1u64 << 40).into(),
            "hvq.codes",
        ),
    ];
    for (name, pointer, value, expected) in cases {
        let dir = shipped_copy(&format!("bad-config-{name}"), |c| {
            *c.pointer_mut(pointer).unwrap() = value;
        });
        let out = temp(&format!("bad-config-{name}-out"));
        let (code, text) = predict(&dir, &out);
        // Exit status 1, not a signal (an abort has no code) and not a panic's 101.
        assert_eq!(code, Some(1), "{text}");
        assert!(
            text.contains("config.json") && text.contains(expected),
            "{text}"
        );
        assert!(
            !text.contains("panicked") && !text.contains("memory allocation"),
            "{text}"
        );
        for d in [dir, out] {
            std::fs::remove_dir_all(d).ok();
        }
    }
}

#[test]
fn a_model_that_overflows_gives_no_verdict() {
    let dir = shipped_copy("overflow", |_| {});
    let path = dir.join("model.safetensors");
    let map = TensorMap::read(&path).unwrap();
    let mut scaled = TensorMap::new("scaled");
    for name in map.names() {
        let t = map.get(name).unwrap();
        let data = t.data.iter().map(|v| v * 1e30).collect();
        scaled.insert(name, HostTensor::new(t.shape.clone(), data));
    }
    scaled.save(&path, &BTreeMap::new()).unwrap();
    let out = temp("overflow-out");
    let (code, text) = predict(&dir, &out);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no finite score"), "{text}");
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    for row in rows.as_array().unwrap() {
        assert_eq!(row["verdict"], "error", "{row}");
        assert!(
            row["error"].as_str().unwrap().contains("no finite score"),
            "{row}"
        );
    }
    for d in [dir, out] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// A panic inside hvq while it inspects an image (injected through the CLI's test hook: nothing
/// is known to panic on user data) becomes that image's error row and one message naming the
/// image, with no backtrace even under RUST_BACKTRACE=1; the other images are still inspected
/// and the exit status says some failed.
#[test]
fn a_panic_names_the_input_and_prints_no_backtrace() {
    let out = temp("panic-out");
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    let result = hvq()
        .args(["predict", "--device", "cpu", "--out"])
        .arg(&out)
        .arg(&samples)
        .env("HVQ_TEST_PANIC", "poly-defect-cell0068")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("internal error while inspecting")
            && stderr.contains("poly-defect-cell0068.png")
            && stderr.contains("bug in hvq"),
        "{stderr}"
    );
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let failed: Vec<&serde_json::Value> = rows.iter().filter(|r| r["verdict"] == "error").collect();
    assert_eq!(failed.len(), 1, "{rows:?}");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("poly-defect-cell0068.png")
    );
    std::fs::remove_dir_all(out).ok();
}
