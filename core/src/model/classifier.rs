//! The class-predicting head of the paper's appendix: its code was never released, so this is
//! our reading, kept deliberately small — an MLP on the spatially averaged backbone feature,
//! trained jointly with the reconstruction by cross-entropy.

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::layers::Linear;

/// `logits = W2·ReLU(W1·mean_hw(feature))`.
#[derive(Module, Debug)]
pub struct Classifier {
    /// Feature → hidden.
    pub fc1: Linear,
    /// Hidden → classes.
    pub fc2: Linear,
}

impl Classifier {
    /// Random init.
    pub fn new(features: usize, hidden: usize, classes: usize, device: &Device) -> Self {
        Self {
            fc1: Linear::new(features, hidden, device),
            fc2: Linear::new(hidden, classes, device),
        }
    }

    /// Logits `[B, classes]` for aligned features `[B, F, H, W]`.
    pub fn forward(&self, feature: Tensor<4>) -> Tensor<2> {
        let [b, f, _, _] = feature.dims();
        let pooled: Tensor<2> = feature.mean_dim(3).mean_dim(2).reshape([b, f]);
        self.fc2.forward(relu(self.fc1.forward(pooled)))
    }
}
