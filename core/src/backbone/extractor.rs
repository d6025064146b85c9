//! The feature extractor as the rest of the model sees it: tapped feature maps, their channels
//! and the configuration, whichever network computes them. A new family is a new variant here
//! (and its weights' names); the detector, the trainer, feature caching and the front ends only
//! hold a [`Backbone`].

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::efficientnet::EfficientNet;
use super::train_mode::BackboneTraining;
use crate::config::{BackboneConfig, BackboneKind};

/// A frozen feature extractor.
///
/// Weight names are the network's own (`_conv_stem.weight`, `_blocks.3._bn1.running_mean`, …):
/// the variant is a module level of its own in burn, which `weights::module_io` leaves out of
/// parameter paths, so files written before this enum existed load unchanged.
#[derive(Module, Debug)]
pub enum Backbone {
    /// EfficientNet-B4 or -Lite0 (lukemelas naming).
    EfficientNet(EfficientNet),
}

impl Backbone {
    /// The network `config` describes, with placeholder weights (load real ones with
    /// [`crate::weights::TensorMap::load_into`]).
    pub fn new(config: &BackboneConfig, device: &Device) -> Self {
        match config.kind {
            BackboneKind::EfficientnetB4 | BackboneKind::EfficientnetLite0 => {
                Self::EfficientNet(EfficientNet::new(config, false, device))
            }
        }
    }

    /// The configuration it was built from (taps, input size and normalisation, feature grid).
    pub fn config(&self) -> &BackboneConfig {
        match self {
            Self::EfficientNet(net) => net.config(),
        }
    }

    /// The same network run on `input` × `input` images with the feature grid at its stride
    /// ([`BackboneConfig::with_input_size`]); the weights do not depend on the input size.
    pub fn with_input_size(self, input: usize) -> crate::error::Result<Self> {
        match self {
            Self::EfficientNet(mut net) => {
                net.config = net.config.clone().with_input_size(input)?;
                Ok(Self::EfficientNet(net))
            }
        }
    }

    /// Channels of each tapped feature map, in tap order (their sum is the aligned feature's).
    pub fn tap_channels(&self) -> Vec<usize> {
        self.config().tap_channels()
    }

    /// The tapped feature maps `[B, C_i, H_i, W_i]` of a normalised input `[B, 3, H, W]`
    /// (inference: BatchNorm uses its running statistics).
    pub fn taps(&self, images: Tensor<4>) -> Vec<Tensor<4>> {
        match self {
            Self::EfficientNet(net) => net.taps(images),
        }
    }

    /// The tapped feature maps in train mode (BatchNorm on batch statistics, updating the running
    /// ones; drop-connect), as the official trainer runs its backbone.
    pub fn taps_train(&mut self, images: Tensor<4>, settings: &BackboneTraining) -> Vec<Tensor<4>> {
        match self {
            Self::EfficientNet(net) => net.taps_train(images, settings),
        }
    }

    /// Every stage's output in order, for parity debugging against the reference.
    pub fn all_stages(&self, images: Tensor<4>) -> Vec<Tensor<4>> {
        match self {
            Self::EfficientNet(net) => net.all_blocks(images),
        }
    }

    /// A copy on `device` (sharded feature extraction runs one per device).
    pub fn to_device(self, device: &Device) -> Self {
        match self {
            Self::EfficientNet(net) => {
                Self::EfficientNet(burn::module::Module::to_device(net, device))
            }
        }
    }

    /// The device its weights live on.
    pub fn device(&self) -> Device {
        match self {
            Self::EfficientNet(net) => net._conv_stem.weight.val().device(),
        }
    }
}

impl From<EfficientNet> for Backbone {
    fn from(net: EfficientNet) -> Self {
        Self::EfficientNet(net)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::TensorMap;

    /// The enum level must not show in parameter names: model files, checkpoints, feature-cache
    /// keys and the official checkpoint all use the network's own names.
    #[test]
    fn parameter_names_are_the_networks_own() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        let config = BackboneConfig::efficientnet_lite0();
        let net = EfficientNet::new(&config, false, &device);
        let plain = TensorMap::from_module(&net, "net");
        let wrapped = TensorMap::from_module(&Backbone::from(net), "backbone");
        let names: Vec<&str> = wrapped.names().collect();
        assert!(names.contains(&"_conv_stem.weight"), "{:?}", &names[..3]);
        assert_eq!(names, plain.names().collect::<Vec<_>>());
        // And the same names load back.
        let fresh = Backbone::new(&config, &device);
        let loaded = wrapped.load_into(fresh).expect("loads by the same names");
        assert_eq!(
            TensorMap::from_module(&loaded, "again").names().count(),
            names.len()
        );
    }

    #[test]
    fn tap_channels_sum_to_the_feature_channels() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        for config in [
            BackboneConfig::efficientnet_lite0(),
            BackboneConfig::efficientnet_b4(),
        ] {
            let backbone = Backbone::new(&config, &device);
            let channels = backbone.tap_channels();
            assert_eq!(channels.iter().sum::<usize>(), config.feature_channels());
            // Each tap really has that many channels (a small input keeps this quick).
            let taps = backbone.taps(Tensor::zeros([1, 3, 64, 64], &device));
            let seen: Vec<usize> = taps.iter().map(|t| t.dims()[1]).collect();
            assert_eq!(seen, channels, "{:?}", config.kind);
        }
    }
}
