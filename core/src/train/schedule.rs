//! Training hyper-parameters as data, with the official values as the `official` preset.

use serde::{Deserialize, Serialize};

use super::adamw::AdamWConfig;
use crate::backbone::BackboneTraining;
use crate::config::Tiling;

/// Everything that shapes a training run; saved in every checkpoint so `--resume` continues with
/// exactly the same settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Epochs to run (official: 1000).
    pub epochs: usize,
    /// Samples per optimisation step (official: 16 per GPU).
    pub batch_size: usize,
    /// Optimiser settings (official: AdamW 1e-4, wd 1e-4, clip 0.1).
    pub optimizer: AdamWConfig,
    /// Epochs (0-based) from which the learning rate is multiplied by `lr_gamma` (official: `[800]`).
    pub lr_steps: Vec<usize>,
    /// Multiplier at each step (official: 0.1).
    pub lr_gamma: f64,
    /// Seed of the shuffling (official: 133).
    pub seed: u64,
    /// Write a checkpoint every this many epochs (and always at the end).
    pub checkpoint_every: usize,
    /// How the frozen backbone runs: eval mode with cached features (default; older checkpoints
    /// have no such field) or the official trainer's train mode.
    #[serde(default)]
    pub backbone: BackboneTraining,
    /// The tiles training images are cut into (`None`: whole images; older checkpoints have no
    /// such field), so a resumed run trains on the same samples.
    #[serde(default)]
    pub tiling: Option<Tiling>,
}

impl TrainConfig {
    /// The reference schedule: 1000 epochs, lr ×0.1 at epoch 800, batch 16, seed 133.
    pub fn official() -> Self {
        Self {
            epochs: 1000,
            batch_size: 16,
            optimizer: AdamWConfig::default(),
            lr_steps: vec![800],
            lr_gamma: 0.1,
            seed: 133,
            checkpoint_every: 10,
            backbone: BackboneTraining::default(),
            tiling: None,
        }
    }

    /// The same schedule compressed to `epochs`: the lr step stays at 80 % of the run.
    pub fn with_epochs(mut self, epochs: usize) -> Self {
        let scale = epochs as f64 / self.epochs.max(1) as f64;
        self.lr_steps = self
            .lr_steps
            .iter()
            .map(|&e| (e as f64 * scale).round() as usize)
            .collect();
        self.epochs = epochs;
        self
    }

    /// Learning rate during `epoch` (0-based).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let drops = self.lr_steps.iter().filter(|&&s| epoch >= s).count();
        self.optimizer.lr * self.lr_gamma.powi(drops as i32)
    }
}

/// A small deterministic generator (SplitMix64) for shuffling: the order of epoch `e` depends only
/// on (seed, e), so a resumed run sees exactly the batches an uninterrupted one would.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut state = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_drops_at_the_step() {
        let c = TrainConfig::official();
        assert_eq!(c.lr_at(799), 1e-4);
        assert!((c.lr_at(800) - 1e-5).abs() < 1e-12);
        let short = TrainConfig::official().with_epochs(50);
        assert_eq!(short.lr_steps, vec![40]);
    }

    #[test]
    fn shuffles_are_permutations_and_reproducible() {
        let a = epoch_order(100, 133, 3);
        assert_eq!(a, epoch_order(100, 133, 3));
        assert_ne!(a, epoch_order(100, 133, 4));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
    }
}
