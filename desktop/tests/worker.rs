//! The app's inference path gives exactly what the CLI gives: the worker's map equals
//! `Inspector::inspect` on the same image and weights, and the exported overlay and map equal what
//! `hvq predict` writes.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use hvq::app::ModelSource;
use hvq::device::DeviceChoice;
use hvq::{ClassChoice, Inspector};
use hvq_desktop::state::{self, ImageList, Outcome, SortKey, SortOrder};
use hvq_desktop::worker::{ModelLoad, Purpose, Reply, Worker};

/// Load `source` on `device` in a worker, inspect `images`, return the outcomes in order.
fn run_worker(
    device: DeviceChoice,
    source: ModelLoad,
    images: &[&Path],
    class: ClassChoice,
) -> Vec<Result<Outcome, String>> {
    let worker = Worker::spawn(device, || {});
    worker.load(source);
    for (i, p) in images.iter().enumerate() {
        worker.inspect(i as u64, p.to_path_buf(), class.clone(), Purpose::List);
    }
    let mut out: Vec<Option<Result<Outcome, String>>> = vec![None; images.len()];
    while out.iter().any(Option::is_none) {
        match worker
            .recv_timeout(Duration::from_secs(600))
            .expect("worker answered")
        {
            Reply::Device(d) => eprintln!("worker device: {d}"),
            Reply::Model(m) => {
                m.expect("model loads");
            }
            Reply::Inspected { id, result, .. } => {
                out[id as usize] = Some(result.map(Outcome::from_inspection))
            }
        }
    }
    out.into_iter().map(Option::unwrap).collect()
}

/// Queued together, the samples go through the worker's model in one batch; each reply equals
/// inspecting that image alone.
#[test]
fn worker_map_equals_inspector_on_wgpu() {
    let weights = random_weights();
    let samples = samples();
    let paths: Vec<&Path> = samples.iter().map(|p| p.as_path()).collect();
    let outcomes = run_worker(
        DeviceChoice::Wgpu,
        model_source(weights.clone(), Some(1.0)),
        &paths,
        ClassChoice::Auto,
    );
    let device = hvq::device::create(DeviceChoice::Wgpu).unwrap();
    let inspector = Inspector::new(detector_from(&weights, Some(1.0), &device), device);
    for (sample, outcome) in samples.iter().zip(outcomes) {
        let outcome = outcome.unwrap();
        let img = hvq::preprocess::load(sample).unwrap();
        let direct = inspector.inspect(&img, &ClassChoice::Auto).unwrap();
        assert_eq!(
            (outcome.width, outcome.height),
            (direct.width, direct.height)
        );
        assert_eq!(outcome.class_index, direct.class_index);
        assert_eq!(
            outcome.score.to_bits(),
            direct.score.to_bits(),
            "{}: score {} vs {}",
            sample.display(),
            outcome.score,
            direct.score
        );
        // The list keeps the model's map; the image-resolution one is computed from it.
        assert_eq!(outcome.model_map.as_slice(), direct.model_map.as_slice());
        let full = outcome.full_map();
        let differ = full
            .iter()
            .zip(&direct.map)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differ,
            0,
            "{differ} of {} map values differ",
            direct.map.len()
        );
    }
}

#[test]
fn unreadable_files_are_errors_not_crashes() {
    let dir = scratch("unreadable");
    let bad = dir.join("broken.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let missing = dir.join("missing.png");
    let good = samples()[1].clone();
    let r = run_worker(
        DeviceChoice::Cpu,
        model_source(random_weights(), None),
        &[&bad, &missing, &good],
        ClassChoice::Name("mono".into()),
    );
    assert!(
        r[0].as_ref().unwrap_err().contains("broken.png"),
        "{:?}",
        r[0].as_ref().err()
    );
    assert!(
        r[1].as_ref().unwrap_err().contains("missing.png"),
        "{:?}",
        r[1].as_ref().err()
    );
    assert_eq!(r[2].as_ref().unwrap().class_name, "mono");
}

#[test]
fn exported_overlay_and_map_equal_predicts() {
    let dir = scratch("predict-parity");
    let model_dir = dir.join("model");
    let weights = random_weights();
    let threshold = 40.0;
    detector_from(&weights, Some(threshold), &burn::tensor::Device::flex())
        .save_dir(&model_dir)
        .unwrap();
    let images = samples();
    let refs: Vec<&Path> = images.iter().map(|p| p.as_path()).collect();
    // The app's path: worker (CPU, as `predict`'s default device) → list → export.
    let outcomes = run_worker(
        DeviceChoice::Cpu,
        ModelSource::Dir(model_dir.clone()).into(),
        &refs,
        ClassChoice::Auto,
    );
    let mut list = ImageList::new(SortKey::Name, SortOrder::Ascending);
    let ids = list.add(images.clone());
    for ((id, _), o) in ids.iter().zip(outcomes) {
        list.set_result(*id, o, Some(threshold));
    }
    let export = dir.join("export");
    let summary = state::export(&export, &list, Some(threshold), 0.5).unwrap();
    assert_eq!(summary.overlays, images.len());

    // The CLI: the real `hvq predict` when it is built (CI builds the workspace first),
    // otherwise its recipe (Inspector + the same scale + `overlay::blend` at opacity 0.5).
    let exe = std::env::current_exe().unwrap();
    let hvq_bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("hvq"))
        .filter(|p| p.is_file());
    let predicted = dir.join("predict");
    match &hvq_bin {
        Some(bin) => {
            let status = std::process::Command::new(bin)
                .args(["predict", "--device", "cpu", "--weights"])
                .arg(&model_dir)
                .arg("--out")
                .arg(&predicted)
                .args(&images)
                .status()
                .unwrap();
            assert!(status.success(), "hvq predict failed");
            eprintln!("compared with {}", bin.display());
        }
        None => {
            eprintln!("hvq binary not built next to the tests: comparing with predict's recipe");
            std::fs::create_dir_all(&predicted).unwrap();
            let device = burn::tensor::Device::flex();
            let inspector = Inspector::new(
                hvq::Detector::load_dir(&model_dir, &device).unwrap(),
                device,
            );
            for p in &images {
                let img = hvq::preprocess::load(p).unwrap();
                let r = inspector.inspect(&img, &ClassChoice::Auto).unwrap();
                let stem = p.file_stem().unwrap().to_string_lossy();
                hvq::overlay::blend(
                    &hvq::preprocess::to_rgb(&img),
                    &r.map,
                    &r.color_scale(),
                    0.5,
                )
                .save(predicted.join(format!("{stem}_overlay.png")))
                .unwrap();
                std::fs::write(
                    predicted.join(format!("{stem}_map.npy")),
                    hvq::overlay::npy_bytes(&r.map, r.height as usize, r.width as usize),
                )
                .unwrap();
            }
        }
    }
    for e in list.iter() {
        let stem = e.path.file_stem().unwrap().to_string_lossy().into_owned();
        let ours = image::open(export.join(format!("{stem}_overlay.png")))
            .unwrap()
            .to_rgb8();
        let cli = image::open(predicted.join(format!("{stem}_overlay.png")))
            .unwrap()
            .to_rgb8();
        assert!(ours == cli, "{stem}: overlay differs from predict's");
        let state::Status::Done(o) = &e.status else {
            panic!("{stem} not inspected")
        };
        let npy = std::fs::read(predicted.join(format!("{stem}_map.npy"))).unwrap();
        assert_eq!(
            npy,
            hvq::overlay::npy_bytes(&o.full_map(), o.height as usize, o.width as usize),
            "{stem}: map differs from predict's"
        );
    }
}
