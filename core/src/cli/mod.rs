//! Subcommands of the `hvq` binary, one file each.

pub mod bench;
pub mod calibrate;
pub mod convert;
pub mod eval;
pub mod panic_report;
pub mod predict;
pub mod progress;
pub mod selfcheck;
pub mod train;

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::Device;
use hvq::backbone::EfficientNet;
use hvq::config::{BackboneConfig, BackboneKind};
use hvq::device::{DeviceChoice, Selection};
use hvq::weights::TensorMap;

/// Parse a `--device` value, start the device and say on stderr which one runs and why
/// (stdout stays the command's results).
pub fn device(name: &str) -> Result<Selection> {
    let choice: DeviceChoice = name.parse()?;
    let selection = hvq::device::select(choice)?;
    eprintln!(
        "device: {}{} — {}",
        selection.backend,
        selection
            .adapter
            .as_deref()
            .map(|a| format!(" ({a})"))
            .unwrap_or_default(),
        selection.reason
    );
    Ok(selection)
}

/// The backbone with its weights: Lite0 from the embedded file unless a file is given; B4 needs
/// one (the lukemelas `.pth`, a safetensors conversion, or an official HVQ-Trans checkpoint,
/// whose backbone lives under `enc.`).
pub fn backbone(
    kind: BackboneKind,
    weights: Option<&Path>,
    device: &Device,
) -> Result<EfficientNet> {
    let config = match kind {
        BackboneKind::EfficientnetB4 => BackboneConfig::efficientnet_b4(),
        BackboneKind::EfficientnetLite0 => BackboneConfig::efficientnet_lite0(),
    };
    let map = match (weights, kind) {
        (Some(path), _) => {
            let map = TensorMap::read(path)?.without_wrappers();
            if map
                .names()
                .any(|n| n.starts_with(hvq::detector::BACKBONE_PREFIX))
            {
                map.sub(hvq::detector::BACKBONE_PREFIX)
            } else {
                map
            }
        }
        (None, BackboneKind::EfficientnetLite0) => hvq::pretrained::lite0_tensors()?,
        (None, BackboneKind::EfficientnetB4) => anyhow::bail!(
            "EfficientNet-B4 needs --backbone-weights: the lukemelas efficientnet-b4-6ed6700e.pth \
             or an official HVQ-Trans checkpoint (no B4 weights can be shipped or downloaded)"
        ),
    };
    map.load_into(EfficientNet::new(&config, false, device))
        .with_context(|| format!("loading the backbone from {}", map.source()))
}
