//! Minimal training with the application layer: a `folder:` dataset made of the four embedded
//! sample cells, a small network for two epochs on the CPU, then the saved model inspects one.
//!
//! ```sh
//! cargo run --release -p core --example train
//! ```

use hvq::app::training::{Overrides, Preset, TrainOutcome, TrainProgress, TrainRequest, train};
use hvq::app::{ClassChoice, Inspector, ModelSource};
use hvq::config::BackboneKind;
use hvq::train::{TrainConfig, TrainEvent};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A part folder as `hvq train --data folder:…` expects it: known-good images in train/good.
    let root = std::env::temp_dir().join(format!("hvq-example-train-{}", std::process::id()));
    let good = root.join("cells/train/good");
    std::fs::create_dir_all(&good)?;
    for (name, png) in hvq::pretrained::SAMPLES {
        std::fs::write(good.join(name), png)?;
    }

    let mut schedule = TrainConfig::official().with_epochs(2);
    schedule.batch_size = 2;
    schedule.optimizer.lr = 5e-4;
    let request = TrainRequest {
        data: format!("folder:{}", root.join("cells").display()),
        out: root.join("model"),
        backbone: BackboneKind::EfficientnetLite0,
        backbone_weights: None,
        backbone_mode: None,
        preset: Preset::Paper,
        overrides: Overrides {
            embed_dim: Some(32),
            codes: Some(16),
            ffn_dim: Some(64),
            ..Overrides::default()
        },
        train: schedule,
        resume: None,
        tiling: None,
        stop_after: None,
        inject_nan_at_step: None,
        replica_devices: Vec::new(),
    };
    let device = burn::tensor::Device::flex();
    let outcome = train(&request, &device, &mut |progress| {
        if let TrainProgress::Trainer {
            event: TrainEvent::Epoch(report),
            ..
        } = progress
        {
            println!("{}", serde_json::to_string(report).unwrap_or_default());
        }
    })?;
    let TrainOutcome::Saved { dir, threshold } = outcome else {
        return Err("the run stopped early".into());
    };
    println!(
        "model saved to {} (threshold {threshold:.4})",
        dir.display()
    );

    let inspector = Inspector::new(ModelSource::Dir(dir).load(&device)?, device);
    let (name, png) = hvq::pretrained::SAMPLES[0];
    let result = inspector.inspect_bytes(png, name, &ClassChoice::Auto)?;
    println!("{name}: score {:.4}, {}", result.score, result.verdict());
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
