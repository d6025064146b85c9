//! Devices through the `hvq` binary: `--device auto` says what it chose and why, a device that
//! cannot run gives one plain error (no panic text), `hvq selfcheck` compares a device with the
//! CPU, and checkpoints and models move between backends (CPU ↔ wgpu here; CUDA in
//! `scripts/gpu-checks.sh` on a GPU machine).

mod common;

use std::path::Path;

use common::tree::{hvq, make_tree, output, run, temp, train};
use hvq::weights::TensorMap;

fn assert_no_panic_text(text: &str) {
    for p in [
        "panicked",
        "RUST_BACKTRACE",
        "RecvError",
        "stack backtrace",
        "Stack backtrace",
    ] {
        assert!(!text.contains(p), "{p:?} in the output:\n{text}");
    }
}

/// Asking for CUDA where it cannot run is one plain error, no panic text. In a build without
/// CUDA it says how to rebuild (CI compiles that branch in its cpu-only-check; the project's
/// tests build with CUDA, scripts/test.sh). In the CUDA build on a machine without an NVIDIA
/// driver (CI, the developers' VMs) it names the driver library; where a driver and a GPU are
/// present the same commands run on it. scripts/cuda-smoke.sh covers the other ways CUDA can be
/// missing (driver without a device, without the toolkit).
#[test]
fn cuda_that_cannot_run_is_one_clear_error() {
    let out = temp("cuda-request");
    for args in [
        vec!["selfcheck", "--device", "cuda"],
        vec!["predict", "--device", "cuda", "--out"],
    ] {
        let mut cmd = hvq();
        cmd.args(&args);
        if args[0] == "predict" {
            cmd.arg(&out).arg(common::repo_root().join("samples"));
        }
        let (code, text) = output(&mut cmd);
        assert_no_panic_text(&text);
        if cfg!(feature = "cuda") && code == Some(0) {
            assert!(
                text.contains("device: cuda"),
                "{args:?} ran, but not on CUDA:\n{text}"
            );
            continue;
        }
        assert_eq!(code, Some(1), "{args:?} must fail:\n{text}");
        if cfg!(feature = "cuda") {
            assert!(text.contains("no NVIDIA driver"), "{text}");
            assert!(text.contains("libcuda.so.1"), "{text}");
        } else {
            assert!(text.contains("built without CUDA"), "{text}");
            assert!(text.contains("--features cuda"), "{text}");
        }
    }
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn an_unknown_device_names_the_ones_there_are() {
    let (code, text) = output(hvq().args(["selfcheck", "--device", "tpu"]));
    assert!(
        code == Some(1) && text.contains("auto, cpu, wgpu or cuda"),
        "{text}"
    );
}

/// Without a Vulkan driver wgpu takes OpenGL (llvmpipe through EGL here), whose large
/// reductions are wrong: asked for by name it is one plain error saying what to install, and
/// `auto` passes it over for the CPU.
#[test]
fn a_backend_whose_large_sums_are_wrong_is_refused() {
    let no_vulkan = |cmd: &mut std::process::Command| {
        cmd.env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
            .env("VK_DRIVER_FILES", "/nonexistent/icd.json");
    };
    let mut cmd = hvq();
    no_vulkan(cmd.args(["selfcheck", "--device", "wgpu"]));
    let (code, text) = output(&mut cmd);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("large reductions are wrong"), "{text}");
    assert!(text.contains("mesa-vulkan-drivers"), "{text}");
    assert_no_panic_text(&text);
    let mut cmd = hvq();
    no_vulkan(cmd.args(["selfcheck", "--device", "auto"]));
    let (_, text) = output(&mut cmd);
    assert!(text.contains("auto: CPU"), "{text}");
    assert!(text.contains("wgpu: large reductions are wrong"), "{text}");
}

/// `auto` is every command's default and says on stderr what it chose and why.
#[test]
fn auto_is_the_default_and_explains_its_choice() {
    let out = temp("auto");
    let text = run(hvq()
        .args(["predict", "--out"])
        .arg(&out)
        .arg(common::repo_root().join("samples/mono-normal-cell0369.png")));
    let line = text
        .lines()
        .find(|l| l.starts_with("device: "))
        .unwrap_or_else(|| panic!("no device line:\n{text}"));
    assert!(line.contains("auto: "), "{line}");
    if cfg!(feature = "cuda") {
        // Taken, or passed over with the reason (no driver on CI and the developers' VMs).
        assert!(
            line.contains("auto: CUDA") || line.contains("CUDA: no NVIDIA driver"),
            "{line}"
        );
    } else {
        assert!(line.contains("CUDA: not in this build"), "{line}");
    }
    std::fs::remove_dir_all(out).ok();
}

/// The self-check passes on wgpu (lavapipe here) and on the CPU against itself, and writes its
/// comparison as JSON with every sample inside the bound.
#[test]
fn selfcheck_compares_a_device_with_the_cpu() {
    let dir = temp("selfcheck");
    for device in ["wgpu", "cpu"] {
        let json = dir.join(format!("{device}.json"));
        let text = run(hvq()
            .args(["selfcheck", "--device", device, "--json"])
            .arg(&json));
        assert!(text.contains("selfcheck passed"), "{text}");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["backend"], device);
        assert_eq!(v["passed"], true);
        let samples = v["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 4, "{v}");
        for s in samples {
            assert_eq!(s["cpu_class"], s["device_class"], "{s}");
            let rel = s["relative_diff"].as_f64().unwrap();
            assert!(rel <= 1e-3, "{s}");
            assert!(s["map_max_abs"].as_f64().unwrap() > 0.0, "{s}");
            if device == "cpu" {
                assert_eq!(rel, 0.0, "the CPU against itself is exact: {s}");
            }
        }
        // On a GPU the replayed inspections are checked too: recorded on lavapipe (cubecl's
        // software graph), the same bits as the direct ones. The CPU has no replay to check.
        let replay = &v["replay"];
        if device == "wgpu" {
            assert_eq!(replay["recorded"], true, "{replay}");
            assert_eq!(replay["relative_diff"].as_f64(), Some(0.0), "{replay}");
            assert_eq!(replay["passed"], true, "{replay}");
            assert!(
                text.contains("replayed inspections (the samples as one batch, three rounds): recorded and replayed, 0.00e0"),
                "{text}"
            );
        } else {
            assert!(replay.is_null(), "{replay}");
            assert!(!text.contains("replayed"), "{text}");
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

/// GPU work run on the issuing thread (`HVQ_DEVICE_THREAD=caller`, the patched cubecl-common's
/// other transport) computes what the runner thread computes: the self-check passes with each,
/// and the device's scores and map differences are the same bits (same kernels, same order).
#[test]
fn both_device_threads_compute_the_same() {
    let dir = temp("device-thread");
    let mut runs = Vec::new();
    for thread in ["runner", "caller"] {
        let json = dir.join(format!("{thread}.json"));
        let text = run(hvq()
            .args(["selfcheck", "--device", "wgpu", "--json"])
            .arg(&json)
            .env("HVQ_DEVICE_THREAD", thread));
        assert!(text.contains("selfcheck passed"), "{thread}: {text}");
        // The default is not announced; the other is, as the transport in force.
        assert_eq!(
            text.contains("device thread: caller (HVQ_DEVICE_THREAD)"),
            thread == "caller",
            "{thread}: {text}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let samples: Vec<(u32, u32)> = v["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let bits = |key: &str| (s[key].as_f64().unwrap() as f32).to_bits();
                (bits("device_score"), bits("map_max_abs_diff"))
            })
            .collect();
        assert_eq!(samples.len(), 4, "{v}");
        runs.push(samples);
    }
    assert_eq!(runs[0], runs[1]);
    std::fs::remove_dir_all(dir).ok();
}

/// The kernels compiled to WGSL (the default: naga translates) and by CubeCL's own SPIR-V
/// compiler (`HVQ_WGPU_COMPILER=spirv`, the patched cubecl-wgpu's switch, with the patched
/// cubecl-spirv's shared memory) both pass the self-check on this Vulkan driver, each run says
/// which compiler it got (lavapipe has what CubeCL's SPIR-V needs), only the non-default one is
/// announced. A value the variable does not take is refused, naming it.
#[test]
fn both_kernel_compilers_pass_the_selfcheck() {
    let dir = temp("kernel-compiler");
    for compiler in ["wgsl", "spirv"] {
        let json = dir.join(format!("{compiler}.json"));
        let text = run(hvq()
            .args(["selfcheck", "--device", "wgpu", "--json"])
            .arg(&json)
            .env("HVQ_WGPU_COMPILER", compiler));
        assert!(text.contains("selfcheck passed"), "{compiler}: {text}");
        assert_eq!(
            text.contains("kernels: compiled to spirv (HVQ_WGPU_COMPILER)"),
            compiler == "spirv",
            "{compiler}: {text}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["kernel_compiler"], compiler, "{v}");
        let samples = v["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 4, "{v}");
        assert!(samples.iter().all(|s| s["passed"] == true), "{v}");
    }
    selfcheck_refuses("HVQ_WGPU_COMPILER", "glsl", "wgsl, spirv");
    std::fs::remove_dir_all(dir).ok();
}

/// `hvq selfcheck --device wgpu` with `variable=value` fails, naming both and the `choices`.
fn selfcheck_refuses(variable: &str, value: &str, choices: &str) {
    let out = hvq()
        .args(["selfcheck", "--device", "wgpu"])
        .env(variable, value)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{variable}={value}")) && err.contains(choices),
        "{err}"
    );
}

/// wgpu allocating as CUDA does (`HVQ_WGPU_LAYOUT=pitched`, the patched cubecl-wgpu's stand-in
/// for CUDA's padded rows) passes the self-check, replay included, and says so; a value the
/// variable does not take is refused, naming it.
#[test]
fn the_cuda_layout_on_wgpu_passes_the_selfcheck() {
    let text = run(hvq()
        .args(["selfcheck", "--device", "wgpu"])
        .env("HVQ_WGPU_LAYOUT", "pitched"));
    assert!(text.contains("selfcheck passed"), "{text}");
    assert!(
        text.contains("memory: rows padded as CUDA pads them (HVQ_WGPU_LAYOUT)"),
        "{text}"
    );
    assert!(text.contains("recorded and replayed"), "{text}");
    selfcheck_refuses("HVQ_WGPU_LAYOUT", "padded", "contiguous, pitched");
}

/// `--precision tf32` is every command's option: where the backend has no TF32 products (wgpu
/// on Vulkan, the CPU) the device line says they stay f32 and the results are exactly the f32
/// run's (the patched kernel selection changes nothing there); the JSON records the precision; a
/// precision hvq does not have is refused with the list. On CUDA, `scripts/cuda-checks.sh`
/// checks that tf32 does move the results and f32 does not.
#[test]
fn precision_tf32_is_recorded_and_changes_nothing_without_tensor_cores() {
    let dir = temp("precision");
    let mut samples = Vec::new();
    for precision in ["f32", "tf32"] {
        let json = dir.join(format!("{precision}.json"));
        let text = run(hvq()
            .args([
                "selfcheck",
                "--device",
                "wgpu",
                "--precision",
                precision,
                "--json",
            ])
            .arg(&json));
        let line = text.lines().find(|l| l.starts_with("precision: "));
        match precision {
            "f32" => assert!(line.is_none(), "the default is not announced:\n{text}"),
            _ => assert!(
                line.is_some_and(|l| l.contains("no TF32 products: they stay f32")),
                "{text}"
            ),
        }
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["precision"], precision);
        samples.push(v["samples"].clone());
    }
    assert_eq!(samples[0], samples[1], "tf32 changed wgpu's results");
    let (code, text) = output(hvq().args(["selfcheck", "--precision", "fp16"]));
    assert!(
        code == Some(2) && text.contains("\"fp16\"") && text.contains("f32, tf32, bf16 or f16"),
        "{text}"
    );
    assert_no_panic_text(&text);
    std::fs::remove_dir_all(dir).ok();
}

/// The half precisions: on the CPU `predict` runs the products in bf16 and f16 and the scores
/// move off the f32 ones by half-precision amounts (measured 2026-12-02 on the four samples:
/// at most 7.4e-3 relative for bf16, 1.3e-3 for f16; the bound is 4× the larger), with the same
/// classes; wgpu has no bf16 products, which is one plain error; training refuses both.
#[test]
fn half_precisions_move_scores_by_half_precision_amounts() {
    let dir = temp("half");
    let samples = common::repo_root().join("samples");
    let scores = |precision: &str| -> Vec<(String, String, f64)> {
        let out = dir.join(precision);
        run(hvq()
            .args([
                "predict",
                "--device",
                "cpu",
                "--precision",
                precision,
                "--out",
            ])
            .arg(&out)
            .arg(&samples));
        let table = std::fs::read_to_string(out.join("results.csv")).unwrap();
        let mut rows: Vec<_> = table
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].to_string(), f[1].to_string(), f[2].parse().unwrap())
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    };
    let reference = scores("f32");
    assert_eq!(reference.len(), 4);
    for precision in ["bf16", "f16"] {
        let half = scores(precision);
        let mut moved = false;
        for (r, h) in reference.iter().zip(&half) {
            assert_eq!(
                (&r.0, &r.1),
                (&h.0, &h.1),
                "{precision}: same image, same class"
            );
            let rel = (h.2 - r.2).abs() / r.2.abs();
            assert!(rel < 3e-2, "{precision} {}: {} vs {}", r.0, h.2, r.2);
            moved |= rel > 0.0;
        }
        assert!(
            moved,
            "{precision}: no score moved: the products did not run in {precision}"
        );
    }
    let (code, text) = output(hvq().args(["selfcheck", "--device", "wgpu", "--precision", "bf16"]));
    assert!(
        code == Some(1) && text.contains("cannot compute bf16 products"),
        "{text}"
    );
    assert_no_panic_text(&text);
    let (code, text) = output(
        hvq()
            .args([
                "train",
                "--precision",
                "f16",
                "--data",
                "folder:/nonexistent",
                "--out",
            ])
            .arg(dir.join("train")),
    );
    assert!(
        code == Some(1) && text.contains("--precision f16 is for inference"),
        "{text}"
    );
    std::fs::remove_dir_all(dir).ok();
}

fn weights(dir: &Path) -> TensorMap {
    TensorMap::read(dir.join("model.safetensors")).unwrap()
}

/// Largest |a − b| over all parameters, relative to the largest |a| of the same tensor.
fn max_relative_diff(a: &TensorMap, b: &TensorMap) -> f32 {
    assert_eq!(a.len(), b.len());
    a.names()
        .map(|name| {
            let (x, y) = (a.get(name).unwrap(), b.get(name).unwrap());
            assert_eq!(x.shape, y.shape, "{name}");
            let scale = x.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let diff = x
                .data
                .iter()
                .zip(&y.data)
                .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
            diff / scale.max(f32::MIN_POSITIVE)
        })
        .fold(0.0f32, f32::max)
}

/// A checkpoint holds host data only: a run stopped on the CPU resumes on wgpu and one stopped on
/// wgpu resumes on the CPU, each ending close to a straight CPU run (the same seed is the same
/// initial network on every backend; the backends round differently, so not bit for bit); a model
/// trained on one backend evaluates on the other.
///
/// Measured (lavapipe, this tree, 3 epochs): cpu → wgpu 2.6e-5 and wgpu → cpu 1.4e-3 relative,
/// the latter as far as a straight wgpu run is from a straight CPU run (1.3e-3, features cached on
/// wgpu). A resume that lost state would be off by the order of an epoch's change: 3 against 2
/// epochs of CPU training differ by 0.32. The bound, 1e-2, sits between.
#[test]
fn checkpoints_and_models_move_between_cpu_and_wgpu() {
    let root = temp("tree-devices");
    make_tree(&root);
    let data = format!("mvtec:{}", root.display());
    let epochs = 3;
    // Dropout masks come from each backend's own generator; without dropout the runs differ
    // only by rounding.
    let on = |device: &str, out: &Path| {
        let mut c = train(&data, out, epochs);
        c.args(["--dropout", "0", "--device", device]);
        c
    };
    let straight = temp("devices-straight");
    run(&mut on("cpu", &straight));

    for (first, then) in [("cpu", "wgpu"), ("wgpu", "cpu")] {
        let moved = temp(&format!("devices-{first}-{then}"));
        run(on(first, &moved).args(["--stop-after", "2"]));
        assert!(!moved.join("model.safetensors").exists());
        let resumed = run(on(then, &moved).arg("--resume"));
        assert!(resumed.contains("resuming after epoch 2"), "{resumed}");
        let diff = max_relative_diff(&weights(&straight), &weights(&moved));
        assert!(
            diff < 1e-2,
            "{first} → {then}: parameters differ from the straight CPU run by {diff:e} relative"
        );

        // The model trained across backends evaluates the same on both.
        let scores: Vec<serde_json::Value> = ["cpu", "wgpu"]
            .iter()
            .map(|device| {
                let json = moved.join(format!("eval-{device}.json"));
                run(hvq()
                    .args(["eval", "--data", &data, "--device", device, "--weights"])
                    .arg(&moved)
                    .arg("--json")
                    .arg(&json));
                serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
            })
            .collect();
        let auroc = |v: &serde_json::Value| v["mean"]["image_auroc"].as_f64().unwrap();
        assert!(
            (auroc(&scores[0]) - auroc(&scores[1])).abs() < 1e-6,
            "eval on cpu {} vs wgpu {}",
            scores[0]["mean"],
            scores[1]["mean"]
        );
        std::fs::remove_dir_all(moved).ok();
    }
    for d in [root, straight] {
        std::fs::remove_dir_all(d).ok();
    }
}
