//! Rendered UI test: the real app in an `egui_kittest` harness with the wgpu renderer (lavapipe on
//! CI), so the overlay's paint callback runs the shared WGSL shader. Loads the samples, calibrates
//! on the two normal ones, checks the score and verdict shown and saves a screenshot.

mod common;

use std::time::{Duration, Instant};

use common::*;
use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use hvq::device::DeviceChoice;
use hvq_desktop::settings::Settings;
use hvq_desktop::state::{self, Status, Verdict};
use hvq_desktop::{Command, InspectorApp, Options};

/// Step the harness until the app is idle (worker replies arrive on another thread).
fn settle(harness: &mut Harness<'_, InspectorApp>, limit: Duration) {
    let start = Instant::now();
    loop {
        harness.step();
        if !harness.state().busy() {
            break;
        }
        assert!(
            start.elapsed() < limit,
            "app still busy after {limit:?}: {}",
            harness.state().message
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    harness.run_steps(3);
}

#[test]
fn inspects_samples_and_shows_score_and_verdict() {
    let good = scratch("ui-known-good");
    for s in samples()
        .iter()
        .filter(|p| p.to_string_lossy().contains("normal"))
    {
        std::fs::copy(s, good.join(s.file_name().unwrap())).unwrap();
    }
    let broken = scratch("ui-broken").join("corrupt.png");
    std::fs::write(&broken, b"\x89PNG but not really").unwrap();

    let mut open = vec![repo_root().join("samples")];
    open.push(broken.clone());
    let settings = Settings {
        calibration_quantile: 1.0,
        side_by_side: true,
        opacity: 0.5,
        ..Default::default()
    };
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1360.0, 820.0))
        .wgpu()
        .build_eframe(|cc| {
            InspectorApp::new(
                cc,
                Options {
                    model: Some(model_source(random_weights(), None)),
                    open,
                    device: DeviceChoice::Wgpu,
                    settings: Some(settings),
                },
            )
        });
    settle(&mut harness, Duration::from_secs(900));
    let app = harness.state();
    assert!(
        matches!(app.model, hvq_desktop::app::ModelState::Ready(_)),
        "{:?}",
        app.model
    );
    assert_eq!(app.list.len(), 5);
    assert_eq!(app.threshold(), None, "the test model has no threshold");

    // Calibrate on the known-good images: max of their scores.
    harness.state_mut().push(Command::Calibrate(good.clone()));
    settle(&mut harness, Duration::from_secs(600));
    let app = harness.state();
    let t = app.threshold().expect("calibrated");
    let normal_max = app
        .list
        .iter()
        .filter(|e| e.name().contains("normal"))
        .filter_map(|e| e.score())
        .fold(f32::MIN, f32::max);
    assert_eq!(t, normal_max, "max rule: the largest known-good score");

    // The corrupt file is listed with its error.
    let bad = app.list.iter().find(|e| e.name() == "corrupt.png").unwrap();
    assert!(
        matches!(&bad.status, Status::Failed(m) if m.contains("corrupt.png")),
        "{:?}",
        bad.status
    );

    // Sort by score (highest first), select the top image with the keyboard.
    harness.get_by_label("Score").click();
    harness.run_steps(2);
    harness.key_press(egui::Key::Home);
    harness.run_steps(2);
    harness.key_press(egui::Key::ArrowDown);
    harness.key_press(egui::Key::ArrowUp);
    harness.run_steps(4);
    let app = harness.state();
    let scores: Vec<f32> = app.list.iter().filter_map(|e| e.score()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "sorted by score: {scores:?}"
    );
    let sel = app.list.selected_entry().unwrap().clone();
    let Status::Done(o) = &sel.status else {
        panic!("top entry not inspected")
    };
    assert_eq!(o.score, scores[0]);
    let verdict = state::verdict(o.score, Some(t));
    let score_text = format!("Score {:.4}", o.score);

    harness.remove_cursor();
    harness.run_steps(1);
    let image = harness.render().expect("wgpu render");
    let path = artifacts().join("desktop-inspector.png");
    image.save(&path).unwrap();
    eprintln!("screenshot: {}", path.display());
    // What the window shows.
    harness.get_by_label(&score_text);
    harness.get_by_label(verdict.label());
    harness.get_by_label(&format!(
        "threshold {t:.4} (calibrated on 2 known-good image(s))"
    ));

    // The overlay was drawn by the shader: with the colormap's opacity at 0 the same frame differs
    // (the overlay pane turns into the plain photo).
    harness.state_mut().settings.opacity = 0.0;
    harness.run_steps(2);
    let plain = harness.render().expect("wgpu render");
    plain
        .save(artifacts().join("desktop-inspector-opacity0.png"))
        .unwrap();
    let (w, h) = image.dimensions();
    let changed = image
        .pixels()
        .zip(plain.pixels())
        .filter(|(a, b)| a.0.iter().zip(b.0.iter()).any(|(x, y)| x.abs_diff(*y) > 24))
        .count();
    assert!(
        changed > (w * h / 20) as usize,
        "only {changed} pixels changed with the opacity: overlay not drawn?"
    );
}

/// The shipped default model on the shipped samples, as the README's screenshot shows it: the
/// cracked mono cell fails, the others pass. The rendering is saved as a test artifact; set
/// `HVQ_UPDATE_README_SCREENSHOT=1` to also refresh `desktop/docs/screenshot.png`.
#[test]
fn default_model_on_the_samples() {
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1360.0, 820.0))
        .wgpu()
        .build_eframe(|cc| {
            InspectorApp::new(
                cc,
                Options {
                    model: None,
                    open: vec![repo_root().join("samples")],
                    device: DeviceChoice::Wgpu,
                    settings: Some(Settings {
                        side_by_side: true,
                        ..Default::default()
                    }),
                },
            )
        });
    settle(&mut harness, Duration::from_secs(900));
    assert!(
        matches!(
            harness.state().model,
            hvq_desktop::app::ModelState::Ready(_)
        ),
        "{:?}",
        harness.state().model
    );
    harness.get_by_label("Score").click();
    harness.run_steps(2);
    harness.key_press(egui::Key::Home);
    harness.run_steps(4);
    harness.remove_cursor();
    harness.run_steps(1);
    let app = harness.state();
    let threshold = app.threshold();
    let fails: Vec<String> = app
        .list
        .iter()
        .filter(|e| e.verdict(threshold) == Verdict::Anomalous)
        .map(|e| e.name())
        .collect();
    assert_eq!(
        fails,
        ["mono-defect-cell0001.png"],
        "the model card's verdicts"
    );
    let image = harness.render().expect("wgpu render");
    let artifact = artifacts().join("desktop-default-model.png");
    image.save(&artifact).unwrap();
    if std::env::var_os("HVQ_UPDATE_README_SCREENSHOT").is_some() {
        image
            .save(repo_root().join("desktop/docs/screenshot.png"))
            .unwrap();
    }
    eprintln!("wrote {}", artifact.display());
}
