//! `hvq convert-backbone` and `hvq import`: foreign weights into our files.

use std::path::Path;

use anyhow::{Context, Result, bail};
use hvq::Detector;
use hvq::config::{BackboneConfig, HvqConfig, ModelConfig};
use hvq::weights::TensorMap;

/// Split an EfficientNet `.pth` into the feature part (embedded) and the ImageNet head.
pub fn convert_backbone(pth: &Path, out: &Path, name: &str, split: usize) -> Result<()> {
    let _input = super::panic_report::working_on(format!("converting {}", pth.display()));
    let map = TensorMap::read(pth)?.without_wrappers();
    if map.is_empty() {
        bail!("{}: no float tensors found", pth.display());
    }
    let mut features = TensorMap::new(name);
    let mut head = TensorMap::new(name);
    for n in map.names() {
        let t = map.get(n).expect("listed").clone();
        let block = n
            .strip_prefix("_blocks.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        let in_features = match block {
            Some(i) => i <= split,
            None => n.starts_with("_conv_stem") || n.starts_with("_bn0"),
        };
        if in_features {
            features.insert(n, t);
        } else {
            head.insert(n, t);
        }
    }
    let source = pth
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let meta = [("source".to_string(), source)].into_iter().collect();
    let f1 = out.join(format!("{name}.safetensors"));
    let f2 = out.join(format!("{name}-head.safetensors"));
    features
        .save(&f1, &meta)
        .with_context(|| format!("writing {}", f1.display()))?;
    head.save(&f2, &meta)
        .with_context(|| format!("writing {}", f2.display()))?;
    println!(
        "{}: {} tensors; {}: {} tensors",
        f1.display(),
        features.len(),
        f2.display(),
        head.len()
    );
    Ok(())
}

/// Import an official HVQ-Trans checkpoint (MVTec-AD, 15 classes, B4) into a model directory.
pub fn import_official(checkpoint: &Path, out: &Path, classes: Option<Vec<String>>) -> Result<()> {
    let _input = super::panic_report::working_on(format!("importing {}", checkpoint.display()));
    let map = TensorMap::read(checkpoint)?.without_wrappers();
    // The number of classes is the number of experts in the file.
    let experts = map
        .names()
        .filter(|n| n.starts_with("output_proj_list.") && n.ends_with(".weight"))
        .count();
    if experts == 0 {
        bail!(
            "{}: no `output_proj_list.*.weight`: not an HVQ-Trans checkpoint",
            checkpoint.display()
        );
    }
    let classes = match classes {
        Some(c) if c.len() == experts => c,
        Some(c) => bail!(
            "{}: the checkpoint has {experts} classes (experts `output_proj_list.0..{}`), --classes names {}",
            checkpoint.display(),
            experts - 1,
            c.len()
        ),
        None if experts == 15 => HvqConfig::mvtec_classes(),
        None => bail!(
            "{}: the checkpoint has {experts} classes; name them in order with --classes",
            checkpoint.display()
        ),
    };
    let backbone = BackboneConfig::efficientnet_b4();
    let mut hvq = HvqConfig::official(backbone.feature_channels(), classes);
    // Sizes come from the file where it says them, so a reduced checkpoint imports too.
    if let Some(t) = map.get("quantize_conv_t.weight") {
        hvq.embed_dim = t.shape[0];
    }
    if let Some(t) = map.get("quantize_list_1.0.embed") {
        hvq.codes = t.shape[1];
    }
    if let Some(t) = map.get("encoder.layers.0.linear1.weight") {
        hvq.ffn_dim = t.shape[0];
    }
    let config = ModelConfig { backbone, hvq };
    let device = burn::tensor::Device::flex();
    let detector = Detector::from_tensors(config, &map, &device)
        .with_context(|| format!("importing {}", checkpoint.display()))?;
    detector.save_dir(out)?;
    println!("imported {} into {}", checkpoint.display(), out.display());
    Ok(())
}
