//! End to end through the `hvq` binary on a generated MVTec-format tree: train, eval, predict,
//! and a training run killed mid-way and resumed, which must end with the weights of an
//! uninterrupted run.

mod common;
// In this test binary rather than their own: one link less each on a cold CI.
#[path = "cli/predict_batch.rs"]
mod predict_batch;
#[path = "cli/synth.rs"]
mod synth;
#[path = "cli/watch.rs"]
mod watch;

use std::path::Path;
use std::time::{Duration, Instant};

use common::tree::{
    METRIC_KEYS, SMALL, class_metrics, hvq, make_tree, npy_shape, output, read_json, run, temp,
    train,
};
use hvq::weights::TensorMap;

#[test]
fn train_eval_predict_on_a_generated_tree() {
    let root = temp("tree");
    make_tree(&root);
    let data = format!("mvtec:{}", root.display());
    let model = temp("model");
    let log = run(&mut train(&data, &model, 3));
    assert!(log.contains("model saved"), "{log}");
    for f in [
        "config.json",
        "model.safetensors",
        "checkpoint.safetensors",
        "train-log.jsonl",
        "feature-cache.safetensors",
    ] {
        assert!(model.join(f).is_file(), "{f} written");
    }
    let lines = std::fs::read_to_string(model.join("train-log.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3, "one JSON line per epoch");
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["loss"].as_f64().unwrap().is_finite());
    }
    let config = read_json(&model.join("config.json"));
    assert!(
        config["calibration"]["threshold"]
            .as_f64()
            .unwrap()
            .is_finite()
    );

    // A second training run on the same data reuses the feature cache.
    // Its stderr is a pipe, not a terminal: the progress bars come as plain log lines
    // (every redraw with HVQ_PROGRESS_SECONDS=0), with no terminal escape codes.
    let again = run(train(&data, &temp("model2"), 1)
        .arg("--device")
        .arg("cpu")
        .env("HVQ_PROGRESS_SECONDS", "0"));
    assert!(
        !again.contains("from cache"),
        "a new output directory has no cache yet"
    );
    assert!(
        again.contains("features [") && again.contains("train ["),
        "progress lines in a piped log:\n{again}"
    );
    assert!(
        !again.contains('\x1b'),
        "no escape codes in a log:\n{again}"
    );

    let json = model.join("metrics.json");
    let report = model.join("report.html");
    let table = run(hvq()
        .args(["eval", "--data", &data, "--weights"])
        .arg(&model)
        .arg("--json")
        .arg(&json)
        .arg("--report")
        .arg(&report));
    check_eval_report(&std::fs::read_to_string(&report).unwrap());
    assert!(table.contains("alpha") && table.contains("mean"), "{table}");
    let m = class_metrics(&json, &["alpha", "beta"]);
    for key in METRIC_KEYS {
        assert!(m["mean"][key].as_f64().is_some(), "mean.{key}");
    }

    let pred = temp("pred");
    let junk = root.join("junk.png");
    std::fs::write(&junk, b"\x89PNG but not really").unwrap();
    let (code, out) = output(
        hvq()
            .args(["predict", "--class", "alpha", "--weights"])
            .arg(&model)
            .arg("--out")
            .arg(&pred)
            .arg(root.join("alpha/test/scratch"))
            .arg(root.join("alpha/test/good/000.png"))
            .arg(&junk),
    );
    // An unreadable file becomes an error row; the others are still scored, and the exit status
    // (2, documented in --help) tells a script that not every image was inspected.
    assert!(
        out.contains("wrote 5 results") && out.contains("junk.png"),
        "{out}"
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("1 of 5 images could not be inspected"),
        "{out}"
    );
    let help = run(hvq().args(["predict", "--help"]));
    assert!(
        help.contains("Exit status") && help.contains("2 when some"),
        "{help}"
    );
    let overlay = image::open(pred.join("000_overlay.png")).unwrap();
    assert_eq!(
        (overlay.width(), overlay.height()),
        (64, 64),
        "overlay at the image's own size"
    );
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pred.join("results.json")).unwrap()).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 5);
    assert!(
        rows[4]["error"].as_str().unwrap().contains("junk.png"),
        "{rows}"
    );
    assert!(rows[0]["score"].as_f64().is_some() && rows[0]["verdict"].is_string());
    let npy = std::fs::read(pred.join("000_map.npy")).unwrap();
    assert_eq!(&npy[..6], b"\x93NUMPY");
    // The model-resolution map too (the web page's parity reference): 224×224 float32 values
    // whose 16×16-pooled maximum is the image score.
    let npy224 = std::fs::read(pred.join("000_map224.npy")).unwrap();
    let header = u16::from_le_bytes([npy224[8], npy224[9]]) as usize;
    assert!(String::from_utf8_lossy(&npy224[10..10 + header]).contains("(224, 224)"));
    let map224: Vec<f32> = npy224[10 + header..]
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(map224.len(), 224 * 224);
    let mut pooled = f64::MIN;
    for y in 0..=224 - 16 {
        for x in 0..=224 - 16 {
            let mut sum = 0.0f64;
            for dy in 0..16 {
                for dx in 0..16 {
                    sum += map224[(y + dy) * 224 + x + dx] as f64;
                }
            }
            pooled = pooled.max(sum / 256.0);
        }
    }
    // Two images are named 000.png (in two folders): the first keeps the stem, the second gets
    // `000_2`, so no output overwrites another; each row names its files.
    let named: Vec<&serde_json::Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["image"].as_str().unwrap_or("").ends_with("000.png"))
        .collect();
    assert_eq!(named.len(), 2, "{rows}");
    assert_eq!(named[0]["map"], "000_map.npy");
    assert_eq!(named[1]["map"], "000_2_map.npy");
    assert_eq!(named[1]["overlay"], "000_2_overlay.png");
    assert!(pred.join("000_2_map224.npy").exists());
    let row = named[0];
    let score = row["score"].as_f64().unwrap();
    assert!(
        (pooled - score).abs() <= 1e-5 * score.abs(),
        "{pooled} vs {score}"
    );
    assert!(
        std::fs::read_to_string(pred.join("results.csv"))
            .unwrap()
            .lines()
            .count()
            == 6
    );
    for d in [root, model, pred] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// The report of the generated tree: both classes' rows, curves and histograms, and galleries
/// whose anomalous images (they all have masks) show the defect's outline.
fn check_eval_report(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
    for text in [
        "<td>alpha</td>",
        "<td>beta</td>",
        "<td>mean</td>",
        "ROC curves",
        "AUPRO %",
    ] {
        assert!(html.contains(text), "{text} missing");
    }
    // ROC + PR + histograms of all, alpha and beta.
    assert_eq!(html.matches("<svg").count(), 5);
    assert!(!html.contains("<script"), "no script in a report");
    let images: Vec<Vec<u8>> = html
        .split("src=\"data:image/png;base64,")
        .skip(1)
        .map(|rest| decode_base64(&rest[..rest.find('"').unwrap()]))
        .collect();
    assert!(!images.is_empty());
    let mut outlined = 0;
    for png in &images {
        let img = image::load_from_memory(png)
            .expect("a gallery image decodes")
            .to_rgb8();
        assert!(img.width().max(img.height()) <= 256);
        outlined += usize::from(img.pixels().any(|p| p.0 == [0, 255, 0]));
    }
    let anomalous = html.matches("anomalous (scratch)").count() / 2; // alt + caption
    assert!(
        anomalous > 0,
        "the false-negative gallery shows anomalous images"
    );
    assert_eq!(
        outlined, anomalous,
        "every anomalous image shows its mask's outline"
    );
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let digits: Vec<u8> = chunk
            .iter()
            .filter(|&&c| c != b'=')
            .map(|&c| value(c))
            .collect();
        let n =
            digits.iter().fold(0u32, |n, &d| (n << 6) | u32::from(d)) << (6 * (4 - digits.len()));
        out.extend(&n.to_be_bytes()[1..digits.len()]);
    }
    out
}

fn weights(dir: &Path) -> TensorMap {
    TensorMap::read(dir.join("model.safetensors")).unwrap()
}

#[test]
fn killed_and_resumed_training_equals_an_uninterrupted_run() {
    let root = temp("tree-resume");
    make_tree(&root);
    let data = format!("mvtec:{}", root.display());
    let epochs = 6;

    let straight = temp("straight");
    run(&mut train(&data, &straight, epochs));

    // Kill -9 as soon as two epochs are logged (wherever the process then is), then resume.
    let killed = temp("killed");
    let mut child = train(&data, &killed, epochs).spawn().unwrap();
    let start = Instant::now();
    loop {
        let logged = std::fs::read_to_string(killed.join("train-log.jsonl")).unwrap_or_default();
        if logged.lines().count() >= 2 || start.elapsed() > Duration::from_secs(600) {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("training ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !killed.join("model.safetensors").exists(),
        "killed before the end"
    );
    // A model option the checkpoint was not trained with is refused, not ignored.
    let (code, err) = output(
        hvq()
            .args([
                "train",
                "--data",
                &data,
                "--resume",
                "--embed-dim",
                "32",
                "--out",
            ])
            .arg(&killed),
    );
    assert!(
        code != Some(0) && err.contains("model configuration differs"),
        "{err}"
    );
    // The checkpoint carries the run: epochs, batch, widths and checkpoint interval all come
    // from it (the defaults would be 1000 epochs of the official width at batch 16).
    let resumed = run(hvq()
        .args(["train", "--data", &data, "--resume", "--out"])
        .arg(&killed));
    assert!(resumed.contains("resuming after epoch"), "{resumed}");
    let logged = std::fs::read_to_string(killed.join("train-log.jsonl")).unwrap();
    assert_eq!(logged.lines().count(), epochs, "{logged}");

    // Training is deterministic (fixed shuffles, seeded init, gradient norm summed in name
    // order), so the resumed run must reproduce the uninterrupted one bit for bit.
    let (a, b) = (weights(&straight), weights(&killed));
    assert_eq!(a.len(), b.len());
    for name in a.names() {
        assert_eq!(
            a.get(name),
            b.get(name),
            "{name} differs after kill + resume"
        );
    }
    for d in [root, straight, killed] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// `--backbone-mode train` (the official trainer's frozen backbone in train mode): no feature
/// cache, the backbone's running statistics move and are saved with the model, and a run stopped
/// after two epochs and resumed ends with exactly the weights and statistics of a straight run
/// (drop-connect masks included, since they are reseeded per epoch).
#[test]
fn train_mode_backbone_saves_its_statistics_and_resumes_exactly() {
    let root = temp("tree-train-mode");
    make_tree(&root);
    let data = format!("mvtec:{}", root.display());
    let epochs = 3;
    let mode = ["--backbone-mode", "train"];

    let straight = temp("train-mode-straight");
    let log = run(train(&data, &straight, epochs).args(mode));
    assert!(log.contains("train-mode backbone"), "{log}");
    assert!(
        !straight.join("feature-cache.safetensors").exists(),
        "train mode must not cache features"
    );
    let a = weights(&straight);
    let shipped = hvq::pretrained::lite0_tensors().unwrap();
    let mut moved = 0;
    let mut stats = 0;
    for name in shipped.names() {
        let saved = a
            .get(&format!("enc.{name}"))
            .expect("backbone saved with the model");
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            stats += 1;
            moved += usize::from(saved != shipped.get(name).unwrap());
        } else {
            assert_eq!(
                saved,
                shipped.get(name).unwrap(),
                "{name}: frozen weight changed"
            );
        }
    }
    assert_eq!(
        moved, stats,
        "every running statistic of the tapped blocks moves"
    );

    let stopped = temp("train-mode-stopped");
    run(train(&data, &stopped, epochs)
        .args(mode)
        .args(["--stop-after", "2"]));
    assert!(!stopped.join("model.safetensors").exists());
    let refused = hvq()
        .args([
            "train",
            "--data",
            &data,
            "--resume",
            "--backbone-mode",
            "eval",
            "--out",
        ])
        .arg(&stopped)
        .args(["--epochs", &epochs.to_string()])
        .args(SMALL)
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "resuming in another mode must fail"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--backbone-mode"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let resumed = run(train(&data, &stopped, epochs).arg("--resume"));
    assert!(resumed.contains("resuming after epoch 2"), "{resumed}");
    // The schedule is the checkpoint's; options that would change it are named as ignored.
    assert!(
        resumed.contains("note: --batch, --checkpoint-every ignored with --resume"),
        "{resumed}"
    );
    let b = weights(&stopped);
    assert_eq!(a.len(), b.len());
    for name in a.names() {
        assert_eq!(
            a.get(name),
            b.get(name),
            "{name} differs after stop + resume"
        );
    }
    for d in [root, straight, stopped] {
        std::fs::remove_dir_all(d).ok();
    }
}

#[test]
fn resume_with_another_dataset_or_without_checkpoint_is_refused() {
    let out = temp("no-ckpt");
    let o = hvq()
        .args(["train", "--data", "mvtec:/nonexistent", "--resume", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/nonexistent"),
        "names the missing dataset: {err}"
    );
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn bench_writes_a_comparable_json_report() {
    let dir = temp("bench");
    let json = dir.join("bench.json");
    let out = run(hvq()
        .args([
            "bench",
            "--device",
            "cpu",
            "--config",
            "default",
            "--batch",
            "2",
            "--runs",
            "1",
            "--train-dropout",
            "0.1",
            "--json",
        ])
        .arg(&json));
    assert!(out.contains("images per second"), "{out}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let stages: Vec<&str> = r["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "preprocess",
            "backbone",
            "encoder",
            "vq",
            "decoder",
            "map + ot",
            "upsample + score",
            "readback"
        ]
    );
    for key in [
        "end_to_end",
        "end_to_end_queued",
        "train_step_cached",
        "train_step_queued",
        "train_step_uncached",
    ] {
        let ms = r[key]["median_ms"].as_f64().unwrap();
        assert!(ms.is_finite() && ms > 0.0, "{key}: {ms}");
    }
    // The host's share is measured within the same runs as the whole: never more than it; so
    // is the preprocess stage's upload (timed inside it), printed below it.
    let preprocess = &r["stages"][0];
    let upload = r["preprocess_upload"]["median_ms"].as_f64().unwrap();
    assert!(
        upload >= 0.0 && upload <= preprocess["median_ms"].as_f64().unwrap(),
        "{upload} vs {preprocess}"
    );
    assert!(out.contains("\n  of which upload + wait"), "{out}");
    for (queued, total) in [
        ("end_to_end_queued", "end_to_end"),
        ("train_step_queued", "train_step_cached"),
    ] {
        let (q, t) = (
            r[queued]["median_ms"].as_f64(),
            r[total]["median_ms"].as_f64(),
        );
        assert!(q <= t, "{queued} {q:?} > {total} {t:?}");
    }
    assert_eq!(r["batch"], 2);
    assert_eq!(r["model"], "default");
    assert_eq!(r["train_dropout"], 0.1);
    // The binary is built with the tests' profile: it says whether that had debug assertions,
    // in the JSON and in the heading, so figures of the two kinds of build are not mixed.
    assert_eq!(r["debug_assertions"], cfg!(debug_assertions), "{r}");
    assert_eq!(
        out.contains("built with debug assertions (not --release"),
        cfg!(debug_assertions),
        "{out}"
    );
    // What a CPU figure ran on (issue 22: AVX2 and AVX-512 figures side by side).
    let isa = &r["cpu_isa"];
    assert!(
        isa["model"].as_str().is_some_and(|m| !m.is_empty()),
        "{isa}"
    );
    assert!(
        ["avx512f", "fma"].contains(&isa["gemm"].as_str().unwrap()),
        "{isa}"
    );
    assert!(
        isa["flags"].as_array().unwrap().iter().any(|f| f == "avx2"),
        "{isa}"
    );
    // Only GPU backends name an adapter (on wgpu: "NVIDIA H200", "llvmpipe (…)", ...).
    assert!(
        r["adapter"].is_null(),
        "CPU report with an adapter: {}",
        r["adapter"]
    );
    // Nor do they replay a recorded pass (the CPU records nothing: it would time the same runs
    // again).
    for key in [
        "replay",
        "end_to_end_replayed",
        "end_to_end_replayed_queued",
    ] {
        assert!(r[key].is_null(), "CPU report with {key}: {}", r[key]);
    }
    assert!(!out.contains("replayed"), "{out}");
    let bad = hvq()
        .args(["bench", "--train-dropout", "1.5"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--train-dropout 1.5"));
    std::fs::remove_dir_all(dir).ok();
}

/// `HVQ_CPU_ISA=avx2` reaches the three run-time kernel choices (gemm's micro-kernels,
/// burn-flex's SIMD level through macerator, hvq's own kernels; the first two through the patched
/// copies in vendor/), the device line says what runs, the results agree with the uncapped run
/// within float rounding, and a misspelt value is refused.
#[test]
fn the_cpu_instruction_set_cap_reaches_every_kernel_choice() {
    let dir = temp("isa");
    let sample = common::repo_root().join("samples/mono-defect-cell0001.png");
    let predict = |isa: Option<&str>, out: &str| {
        let mut cmd = hvq();
        cmd.args(["predict", "--device", "cpu", "--out"])
            .arg(dir.join(out))
            .arg(&sample);
        match isa {
            Some(v) => cmd.env("HVQ_CPU_ISA", v),
            None => cmd.env_remove("HVQ_CPU_ISA"),
        };
        let text = run(&mut cmd);
        let rows: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(out).join("results.json")).unwrap(),
        )
        .unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("CPU kernels:"))
            .unwrap_or_else(|| panic!("no CPU kernels line:\n{text}"))
            .to_string();
        (line, rows[0]["score"].as_f64().unwrap())
    };
    let (capped, capped_score) = predict(Some("avx2"), "capped");
    assert_eq!(
        capped,
        "CPU kernels: avx2 (gemm fma, burn-flex SIMD V3, HVQ_CPU_ISA=avx2)"
    );
    let (native, native_score) = predict(None, "native");
    let avx512 = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .split_whitespace()
        .any(|f| f == "avx512f");
    let want = if avx512 {
        "CPU kernels: avx512 (gemm avx512f, burn-flex SIMD V4)"
    } else {
        "CPU kernels: avx2 (gemm fma, burn-flex SIMD V3)"
    };
    assert_eq!(native, want);
    // Other kernels, the same computation: the golden tolerance (1e-3 relative) holds between them.
    assert!(
        (capped_score - native_score).abs() <= 1e-3 * native_score.abs(),
        "{capped_score} vs {native_score}"
    );
    // Every start-up variable refuses a value it does not take, naming it and what it takes: the
    // CPU instruction-set cap, the GPU matrix-product routine (`HVQ_GPU_MATMUL`), training's
    // attention form (`HVQ_TRAIN_ATTENTION`), inference's attention kernel (`HVQ_GPU_ATTENTION`)
    // which thread runs a GPU device's work (`HVQ_DEVICE_THREAD`) and the file of the products'
    // kept choices (`HVQ_PRODUCT_CHOICES`, a path or `off`; empty is a mistake).
    for (variable, typo, message) in [
        (
            "HVQ_PRODUCT_CHOICES",
            " ",
            "HVQ_PRODUCT_CHOICES is empty: expected a file path or `off`",
        ),
        ("HVQ_CPU_ISA", "avx-2", "HVQ_CPU_ISA=avx-2: expected `avx2`"),
        (
            "HVQ_GPU_MATMUL",
            "doubel",
            "HVQ_GPU_MATMUL=doubel: expected one of simple, simple-min-tile",
        ),
        (
            "HVQ_TRAIN_ATTENTION",
            "fusd",
            "HVQ_TRAIN_ATTENTION=fusd: expected one of fused, composed, auto",
        ),
        (
            "HVQ_GPU_ATTENTION",
            "flsh",
            "HVQ_GPU_ATTENTION=flsh: expected one of split, flash, auto",
        ),
        (
            "HVQ_DEVICE_THREAD",
            "callr",
            "HVQ_DEVICE_THREAD=callr: expected one of runner, caller",
        ),
    ] {
        let (code, text) = output(
            hvq()
                .args(["predict", "--device", "cpu", "--out"])
                .arg(dir.join(format!("typo-{variable}")))
                .arg(&sample)
                .env(variable, typo),
        );
        assert_eq!(code, Some(1), "{variable}: {text}");
        assert!(text.contains(message), "{variable}: {text}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn train_applies_the_preset_and_every_ablation_switch() {
    // The flags must reach the saved configuration (they once were parsed and then ignored).
    let root = temp("tree-ablation");
    make_tree(&root);
    let data = format!("mvtec:{}", root.display());
    let config = |flags: &[&str]| {
        let out = temp("ablation-run");
        let log = run(train(&data, &out, 1).args(flags));
        assert!(log.contains("model saved"), "{log}");
        let text = std::fs::read_to_string(out.join("config.json")).unwrap();
        std::fs::remove_dir_all(&out).ok();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["model"]["hvq"].clone()
    };
    let full = config(&["--preset", "paper"]);
    assert_eq!(
        full["ablation"],
        serde_json::json!({"hierarchical": true, "switch_codebooks": true, "switch_experts": true})
    );
    assert!(
        full["classifier"].is_object(),
        "paper preset has the classifier: {full}"
    );
    assert!((full["pot_weight"].as_f64().unwrap() - 0.01).abs() < 1e-9);
    let cut = config(&[
        "--preset",
        "paper",
        "--single-vq",
        "--no-codebook-switching",
        "--no-expert-switching",
        "--pot-weight",
        "0.5",
        "--dropout",
        "0.25",
    ]);
    assert_eq!(
        cut["ablation"],
        serde_json::json!({"hierarchical": false, "switch_codebooks": false, "switch_experts": false})
    );
    assert!((cut["pot_weight"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    assert_eq!(cut["dropout"].as_f64(), Some(0.25));
    let official = config(&[]);
    assert!(official["classifier"].is_null(), "{official}");
    assert_eq!(official["pot_weight"].as_f64(), Some(0.0));
    // The reference's transformer dropout is on by default.
    assert_eq!(official["dropout"].as_f64(), Some(0.1));
    std::fs::remove_dir_all(root).ok();
}

/// `--tile`: the training images are cut into tiles (9 per 64×64 image at tile 32, overlap
/// 0.25), the tiling is stored with the checkpoint (a bare `--resume` goes on with it) and
/// with the model, and eval and predict inspect tiled.
#[test]
fn a_tiled_run_trains_on_tiles_and_inspects_tiled() {
    let root = temp("tiled-tree");
    make_tree(&root);
    let data = format!("mvtec:{}", root.display());
    let model = temp("tiled-model");
    let tile = ["--tile", "32", "--overlap", "0.25"];
    run(train(&data, &model, 2)
        .args(tile)
        .args(["--stop-after", "1"]));
    // The checkpoint records the tiling: another is refused, none means the recorded one.
    let (code, err) = output(
        hvq()
            .args([
                "train", "--data", &data, "--resume", "--tile", "48", "--out",
            ])
            .arg(&model),
    );
    assert!(code != Some(0) && err.contains("--tile 32"), "{err}");
    let log = run(hvq()
        .args(["train", "--data", &data, "--resume", "--out"])
        .arg(&model));
    assert!(log.contains("resuming after epoch 1"), "{log}");
    let whole = std::fs::read_dir(root.join("alpha/train/good"))
        .unwrap()
        .count()
        + std::fs::read_dir(root.join("beta/train/good"))
            .unwrap()
            .count();
    assert!(
        log.contains(&format!("{} training images", 9 * whole)),
        "{log}"
    );
    let config = read_json(&model.join("config.json"));
    assert_eq!(config["tiling"]["tile"], 32, "{config}");
    assert!(
        config["calibration"]["source"]
            .as_str()
            .unwrap()
            .contains(&format!("of the {whole} training images")),
        "calibrated on whole images, inspected tiled: {config}"
    );
    let json = model.join("metrics.json");
    run(hvq()
        .args(["eval", "--pixel-size", "64", "--data", &data, "--weights"])
        .arg(&model)
        .arg("--json")
        .arg(&json));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let aupro = m["mean"]["aupro"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&aupro), "{m}");
    let pred = temp("tiled-pred");
    run(hvq()
        .args(["predict", "--class", "alpha", "--weights"])
        .arg(&model)
        .arg("--out")
        .arg(&pred)
        .arg(root.join("alpha/test/good/000.png")));
    // The stitched map: 64 px at 224 / 32 map pixels per image pixel.
    assert_eq!(npy_shape(&pred.join("000_map224.npy")), "(448, 448)");
    for d in [root, model, pred] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// `--input-size`: the backbone runs on larger inputs with a grid a sixteenth of them, stored
/// with the model so that predict and eval inspect at that size; a size off the stride is
/// refused before anything runs.
#[test]
fn a_larger_input_trains_on_a_finer_grid() {
    let root = temp("input-size-tree");
    make_tree(&root);
    let data = format!("mvtec:{}", root.display());
    let model = temp("input-size-model");
    run(train(&data, &model, 1).args(["--input-size", "96"]));
    let config = read_json(&model.join("config.json"));
    assert_eq!(config["model"]["backbone"]["input_size"], 96, "{config}");
    assert_eq!(config["model"]["backbone"]["feature_size"], 6, "{config}");
    assert_eq!(config["model"]["hvq"]["feature_size"], 6, "{config}");
    let pred = temp("input-size-pred");
    run(hvq()
        .args(["predict", "--class", "alpha", "--weights"])
        .arg(&model)
        .arg("--out")
        .arg(&pred)
        .arg(root.join("alpha/test/good/000.png")));
    assert_eq!(npy_shape(&pred.join("000_map224.npy")), "(96, 96)");
    let json = model.join("metrics.json");
    run(hvq()
        .args(["eval", "--data", &data, "--weights"])
        .arg(&model)
        .arg("--json")
        .arg(&json));
    class_metrics(&json, &["alpha", "beta"]);

    let (code, text) =
        output(train(&data, &temp("input-size-bad"), 1).args(["--input-size", "100"]));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("input size 100") && text.contains("16"),
        "{text}"
    );
    for d in [root, model, pred] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// `--recipe cpu` fills in the preset, learning rate and dropout the command leaves open, and
/// options given explicitly (the small width, one epoch) win; an unknown recipe is refused with
/// the names there are.
#[test]
fn a_recipe_fills_in_what_the_command_leaves_open() {
    let root = temp("recipe-tree");
    make_tree(&root);
    let data = format!("mvtec:{}", root.display());
    let out = temp("recipe-run");
    run(train(&data, &out, 1).args(["--recipe", "cpu"]));
    let config = read_json(&out.join("config.json"));
    let net = &config["model"]["hvq"];
    assert!(net["classifier"].is_object(), "paper preset: {net}");
    assert_eq!(net["dropout"].as_f64(), Some(0.0), "{net}");
    assert_eq!(net["codebook_restart"].as_f64(), Some(0.05), "{net}");
    assert_eq!(
        net["embed_dim"].as_u64(),
        Some(16),
        "explicit width wins: {net}"
    );
    let log = std::fs::read_to_string(out.join("train-log.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["lr"].as_f64(), Some(5e-4), "{first}");
    assert_eq!(log.lines().count(), 1, "explicit --epochs 1 wins: {log}");

    // The default (official) recipe's 1000 epochs on a CPU: said before they start.
    let long = temp("recipe-official");
    let text = run(hvq()
        .args([
            "train",
            "--data",
            &data,
            "--device",
            "cpu",
            "--stop-after",
            "1",
            "--out",
        ])
        .arg(&long)
        .args(SMALL));
    assert!(
        text.contains("official recipe") && text.contains("--recipe cpu"),
        "{text}"
    );
    assert!(text.contains("stopped after epoch 1 of 1000"), "{text}");
    std::fs::remove_dir_all(long).ok();

    let (code, text) = output(train(&data, &temp("recipe-bad"), 1).args(["--recipe", "fast"]));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("\"fast\"") && text.contains("official, cpu"),
        "{text}"
    );
    for d in [root, out] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// `--codebook-restart` reaches the saved configuration, out-of-range values are refused naming
/// the option's field, and every training log line counts the codes in use per VQ level.
#[test]
fn the_codebook_restart_is_saved_and_the_log_counts_codes_in_use() {
    let root = temp("restart-tree");
    make_tree(&root);
    let data = format!("mvtec:{}", root.display());
    let out = temp("restart-run");
    run(train(&data, &out, 2).args(["--codebook-restart", "0.05"]));
    let config = read_json(&out.join("config.json"));
    let net = &config["model"]["hvq"];
    assert_eq!(net["codebook_restart"].as_f64(), Some(0.05), "{net}");
    let log = std::fs::read_to_string(out.join("train-log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    for line in log.lines() {
        let epoch: serde_json::Value = serde_json::from_str(line).unwrap();
        let in_use: Vec<f64> = epoch["codes_in_use"]
            .as_array()
            .unwrap_or_else(|| panic!("codes_in_use in {line}"))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        // One count per level (4 encoder layers + the projection), each between 1 and K = 8.
        assert_eq!(in_use.len(), 5, "{line}");
        assert!(in_use.iter().all(|&n| (1.0..=8.0).contains(&n)), "{line}");
    }
    // `hvq eval` reports the saved model's counts: the last epoch's.
    let metrics = out.join("metrics.json");
    let text = run(hvq()
        .args(["eval", "--device", "cpu", "--data", &data, "--json"])
        .arg(&metrics)
        .arg("--weights")
        .arg(&out));
    assert!(
        text.contains("codes in use per VQ level (level 1 first, of 8): "),
        "{text}"
    );
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(
        read_json(&metrics)["codes_in_use"],
        last["codes_in_use"],
        "{text}"
    );

    let (code, text) =
        output(train(&data, &temp("restart-bad"), 1).args(["--codebook-restart", "1.5"]));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("codebook_restart 1.5"), "{text}");
    for d in [root, out] {
        std::fs::remove_dir_all(d).ok();
    }
}
