//! The frozen backbone as the official trainer runs it: in PyTorch train mode.
//!
//! The reference calls `model.train()` on the whole network, so its frozen EfficientNet normalises
//! every BatchNorm with the statistics of the current batch, moves the running statistics towards
//! them (PyTorch momentum `1 − 0.99`), and drops residual branches per sample ("drop-connect",
//! rate `0.2 · i / blocks` for block `i`). Its weights get no gradient, but its running statistics
//! drift over training and are what the saved model uses at test time.
//!
//! The project's default is the eval-mode backbone (deterministic features, cached once per
//! dataset); [`BackboneMode::Train`] is the faithful option. No gradient flows here: the backbone
//! runs on the plain (non-autodiff) device and its output enters the network as a constant.
//!
//! The reference runs all blocks and the ImageNet head even though only the tapped blocks feed the
//! model; the blocks after the last tap change nothing that is used, so they are not run here
//! (their running statistics are not part of our backbone file).

use burn::module::Param;
use burn::tensor::{Distribution, Tensor};
use serde::{Deserialize, Serialize};

use super::efficientnet::{
    BN_EPS, BatchNorm, Conv, EfficientNet, MbConvBlock, activate, same_padding,
};
use crate::config::block_specs;

/// How the frozen backbone runs while the reconstruction network trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackboneMode {
    /// Running-statistic BatchNorm, no drop-connect: features are a fixed function of the image
    /// and are computed once per dataset (the project's default).
    #[default]
    Eval,
    /// Batch-statistic BatchNorm that updates its running statistics, and drop-connect: what the
    /// official trainer does. Features are recomputed at every step.
    Train,
}

/// The backbone's training-time behaviour; saved with the run's schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackboneTraining {
    /// Eval (default) or train mode.
    pub mode: BackboneMode,
    /// Drop-connect rate reached after the last block of the full network (lukemelas
    /// `drop_connect_rate`, 0.2 for B4 and Lite0); block `i` of `n` uses `rate · i / n`.
    pub drop_connect: f64,
    /// PyTorch BatchNorm momentum: `running ← (1 − m)·running + m·batch` (lukemelas: 1 − 0.99).
    pub bn_momentum: f64,
}

impl Default for BackboneTraining {
    fn default() -> Self {
        Self {
            mode: BackboneMode::Eval,
            drop_connect: 0.2,
            bn_momentum: 0.01,
        }
    }
}

impl BackboneTraining {
    /// The official trainer's behaviour: train mode with the reference's rates.
    pub fn official_train_mode() -> Self {
        Self {
            mode: BackboneMode::Train,
            ..Self::default()
        }
    }
}

impl BatchNorm {
    /// Train-mode BatchNorm on `[B, C, H, W]`: normalise with the batch's mean and biased
    /// variance over (B, H, W), then move the running mean and the running (unbiased) variance
    /// towards them by `momentum`, as `torch.nn.BatchNorm2d` does.
    pub fn forward_train(&mut self, x: Tensor<4>, momentum: f64) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let n = (b * h * w) as f64;
        let mean = x.clone().mean_dim(0).mean_dim(2).mean_dim(3);
        let centred = x - mean.clone();
        let var = centred.clone().square().mean_dim(0).mean_dim(2).mean_dim(3);
        let scale =
            var.clone().add_scalar(BN_EPS).sqrt().recip() * self.weight.val().reshape([1, c, 1, 1]);
        let out = centred * scale + self.bias.val().reshape([1, c, 1, 1]);

        // PyTorch stores the unbiased variance (n / (n − 1)); one value per channel has none.
        let unbias = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
        let batch_mean = mean.reshape([c]);
        let batch_var = var.reshape([c]).mul_scalar(unbias);
        self.running_mean = update(&self.running_mean, batch_mean, momentum);
        self.running_var = update(&self.running_var, batch_var, momentum);
        out
    }
}

/// `(1 − m)·old + m·batch`, keeping the parameter's id and frozen state.
fn update(param: &Param<Tensor<1>>, batch: Tensor<1>, momentum: f64) -> Param<Tensor<1>> {
    param
        .clone()
        .map(|old| old.mul_scalar(1.0 - momentum) + batch.mul_scalar(momentum))
}

/// lukemelas `drop_connect`: keep each sample's residual branch with probability `1 − p`, scaled
/// by `1 / (1 − p)`, else zero it (`floor(keep + U[0, 1))` is the Bernoulli mask).
pub fn drop_connect(x: Tensor<4>, p: f64) -> Tensor<4> {
    if p <= 0.0 {
        return x;
    }
    let [b, _, _, _] = x.dims();
    let keep = 1.0 - p;
    let mask = Tensor::<4>::random([b, 1, 1, 1], Distribution::Uniform(0.0, 1.0), &x.device())
        .add_scalar(keep)
        .floor();
    x.div_scalar(keep) * mask
}

impl Conv {
    /// This convolution, then train-mode BatchNorm (no folding: the statistics are the batch's).
    fn forward_bn_train(
        &self,
        bn: &mut BatchNorm,
        x: Tensor<4>,
        stride: usize,
        pad: [(usize, usize); 2],
        groups: usize,
        momentum: f64,
    ) -> Tensor<4> {
        bn.forward_train(self.forward(x, stride, pad, groups), momentum)
    }
}

impl MbConvBlock {
    /// The block in train mode: batch-statistic BatchNorm (running statistics updated) and
    /// drop-connect at rate `drop_rate` on the residual branch of identity-shaped blocks.
    pub fn forward_train(&mut self, input: Tensor<4>, drop_rate: f64, momentum: f64) -> Tensor<4> {
        let s = self.spec.clone();
        let kind = self.kind;
        let mut x = input.clone();
        if let (Some(conv), Some(bn)) = (&self._expand_conv, &mut self._bn0) {
            x = activate(
                kind,
                conv.forward_bn_train(bn, x, 1, [(0, 0); 2], 1, momentum),
            );
        }
        let [_, _, h, w] = x.dims();
        let pad = self.static_pad.unwrap_or_else(|| {
            [
                same_padding(h, s.kernel, s.stride),
                same_padding(w, s.kernel, s.stride),
            ]
        });
        x = self._depthwise_conv.forward_bn_train(
            &mut self._bn1,
            x,
            s.stride,
            pad,
            s.expanded(),
            momentum,
        );
        x = activate(kind, x);
        if let (Some(reduce), Some(expand)) = (&self._se_reduce, &self._se_expand) {
            let squeezed = x.clone().mean_dim(2).mean_dim(3);
            let squeezed = activate(kind, reduce.forward(squeezed, 1, [(0, 0); 2], 1));
            let gate =
                burn::tensor::activation::sigmoid(expand.forward(squeezed, 1, [(0, 0); 2], 1));
            x = x * gate;
        }
        x = self
            ._project_conv
            .forward_bn_train(&mut self._bn2, x, 1, [(0, 0); 2], 1, momentum);
        if s.stride == 1 && s.in_ch == s.out_ch {
            x = drop_connect(x, drop_rate) + input;
        }
        x
    }
}

impl EfficientNet {
    /// Drop-connect rate of block `index`: the reference scales the global rate by
    /// `index / len(blocks)` over the *whole* network (32 blocks for B4, 16 for Lite0), not only
    /// the blocks we build.
    pub fn drop_connect_rate(&self, index: usize, rate: f64) -> f64 {
        rate * index as f64 / block_specs(self.config.kind).len() as f64
    }

    /// Tapped outputs with the backbone in train mode (see the module documentation). Updates
    /// the running statistics of every BatchNorm it runs through.
    pub fn taps_train(&mut self, x: Tensor<4>, settings: &BackboneTraining) -> Vec<Tensor<4>> {
        // The running statistics move: the inference forward folds them in afresh.
        self.forget_folds();
        let kind = self.config.kind;
        let momentum = settings.bn_momentum;
        let [_, _, h, w] = x.dims();
        let pad = self
            .stem_pad
            .unwrap_or([same_padding(h, 3, 2), same_padding(w, 3, 2)]);
        let mut x = activate(
            kind,
            self._conv_stem
                .forward_bn_train(&mut self._bn0, x, 2, pad, 1, momentum),
        );
        let taps_at = self.config.taps.clone();
        let last = taps_at.iter().copied().max().unwrap_or(0);
        let rates: Vec<f64> = (0..=last)
            .map(|i| self.drop_connect_rate(i, settings.drop_connect))
            .collect();
        let mut taps = Vec::with_capacity(taps_at.len());
        for (i, block) in self._blocks.iter_mut().enumerate().take(last + 1) {
            x = block.forward_train(x, rates[i], momentum);
            if taps_at.contains(&i) {
                taps.push(x.clone());
            }
        }
        taps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackboneConfig;
    use burn::tensor::Device;

    fn host(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32")
    }

    /// BatchNorm in train mode against the definition, computed in f64 on the host.
    #[test]
    fn batch_norm_train_matches_the_definition() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        device.seed(7);
        let (b, c, h, w) = (3usize, 4usize, 5usize, 2usize);
        let x = Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.5, 2.0), &device);
        let xs = x.clone().into_data().try_to_vec::<f32>().expect("f32");
        let mut bn = BatchNorm::new(c, &device);
        let frozen = |t: Tensor<1>| Param::from_tensor(t).set_require_grad(false);
        let random = |mean, sd| Tensor::<1>::random([c], Distribution::Normal(mean, sd), &device);
        bn.weight = frozen(random(1.0, 0.3));
        bn.bias = frozen(random(0.0, 0.5));
        bn.running_mean = frozen(random(0.0, 1.0));
        bn.running_var = frozen(random(2.0, 0.2));
        let gamma = host(bn.weight.val());
        let beta = host(bn.bias.val());
        let rm0 = host(bn.running_mean.val());
        let rv0 = host(bn.running_var.val());
        let m = 0.1;
        let y = bn
            .forward_train(x, m)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let n = (b * h * w) as f64;
        let at = |i: usize, ch: usize, j: usize| ((i * c + ch) * h * w) + j;
        for ch in 0..c {
            let vals: Vec<f64> = (0..b)
                .flat_map(|i| (0..h * w).map(move |j| (i, j)))
                .map(|(i, j)| xs[at(i, ch, j)] as f64)
                .collect();
            let mean = vals.iter().sum::<f64>() / n;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            for i in 0..b {
                for j in 0..h * w {
                    let want = (xs[at(i, ch, j)] as f64 - mean) / (var + BN_EPS).sqrt()
                        * gamma[ch] as f64
                        + beta[ch] as f64;
                    let got = y[at(i, ch, j)] as f64;
                    // f32 arithmetic on O(1) values: a few ulps of the largest term.
                    assert!(
                        (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "{got} vs {want}"
                    );
                }
            }
            let rm = host(bn.running_mean.val())[ch] as f64;
            let rv = host(bn.running_var.val())[ch] as f64;
            let want_rm = (1.0 - m) * rm0[ch] as f64 + m * mean;
            let want_rv = (1.0 - m) * rv0[ch] as f64 + m * var * n / (n - 1.0);
            assert!(
                (rm - want_rm).abs() < 1e-5,
                "running mean {rm} vs {want_rm}"
            );
            assert!(
                (rv - want_rv).abs() < 1e-5 * want_rv,
                "running var {rv} vs {want_rv}"
            );
        }
        assert!(!bn.running_mean.val().is_require_grad());
    }

    /// Drop-connect zeroes whole samples with probability p and scales the kept ones by 1/(1−p).
    #[test]
    fn drop_connect_drops_whole_samples_at_rate_p() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        device.seed(11);
        let p = 0.3;
        let b = 4000;
        let x = Tensor::<4>::ones([b, 2, 3, 3], &device);
        let y = drop_connect(x, p)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let mut dropped = 0;
        for s in 0..b {
            let v = &y[s * 18..(s + 1) * 18];
            // A sample is all zero or all 1/(1−p): the mask is per sample.
            assert!(v.iter().all(|&e| e == v[0]), "sample {s} mixed: {v:?}");
            if v[0] == 0.0 {
                dropped += 1;
            } else {
                assert!((v[0] as f64 - 1.0 / (1.0 - p)).abs() < 1e-6);
            }
        }
        // Binomial(4000, 0.3): sd ≈ 29; allow 5 sd.
        let expect = p * b as f64;
        let sd = (b as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (dropped as f64 - expect).abs() < 5.0 * sd,
            "{dropped} dropped, expected {expect} ± {sd}"
        );
        // p = 0 leaves the tensor untouched.
        let x = Tensor::<4>::ones([3, 1, 1, 1], &device);
        let same = drop_connect(x.clone(), 0.0);
        assert_eq!(same.into_data(), x.into_data());
    }

    #[test]
    fn drop_connect_rate_scales_over_the_whole_network() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        let net = EfficientNet::new(&BackboneConfig::efficientnet_b4(), false, &device);
        // B4 has 32 blocks; the reference divides by all of them although taps stop at 21.
        assert!((net.drop_connect_rate(16, 0.2) - 0.1).abs() < 1e-12);
        assert_eq!(net.drop_connect_rate(0, 0.2), 0.0);
        let lite = EfficientNet::new(&BackboneConfig::efficientnet_lite0(), false, &device);
        assert!((lite.drop_connect_rate(8, 0.2) - 0.1).abs() < 1e-12);
    }

    /// A residual block with drop-connect returns, per sample, either its input (branch dropped)
    /// or the no-drop output's branch scaled by 1/(1−p) plus the input.
    #[test]
    fn block_drop_connect_acts_on_the_residual_branch_only() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        device.seed(5);
        let cfg = BackboneConfig::efficientnet_lite0();
        let net = EfficientNet::new(&cfg, false, &device);
        // Block 1 of Lite0: 16 → 24 with stride 2 (no residual); block 2: 24 → 24, stride 1.
        let mut block = net._blocks[2].clone();
        assert_eq!(
            (block.spec.in_ch, block.spec.out_ch, block.spec.stride),
            (24, 24, 1)
        );
        let mut reference = block.clone();
        let b = 64;
        let x = Tensor::<4>::random([b, 24, 6, 6], Distribution::Normal(0.0, 1.0), &device);
        let p = 0.5;
        let y = block.forward_train(x.clone(), p, 0.1);
        let y0 = reference.forward_train(x.clone(), 0.0, 0.1);
        let xs = x.into_data().try_to_vec::<f32>().expect("f32");
        let ys = y.into_data().try_to_vec::<f32>().expect("f32");
        let y0s = y0.into_data().try_to_vec::<f32>().expect("f32");
        let per = 24 * 36;
        let mut dropped = 0;
        for s in 0..b {
            let r = s * per..(s + 1) * per;
            let is_input = ys[r.clone()]
                .iter()
                .zip(&xs[r.clone()])
                .all(|(a, b)| a == b);
            if is_input {
                dropped += 1;
                continue;
            }
            for k in r {
                let branch = (y0s[k] - xs[k]) as f64;
                let want = branch / (1.0 - p) + xs[k] as f64;
                assert!((ys[k] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()));
            }
        }
        assert!(dropped > 0 && dropped < b, "{dropped} of {b} dropped");
        // Both calls moved the running statistics identically (they do not depend on the mask).
        assert_eq!(
            block._bn2.running_mean.val().into_data(),
            reference._bn2.running_mean.val().into_data()
        );
    }

    /// A train-mode pass moves the running statistics that the saved model will use.
    #[test]
    fn train_mode_moves_the_running_statistics() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        device.seed(3);
        let cfg = BackboneConfig::efficientnet_lite0();
        let mut net = EfficientNet::new(&cfg, false, &device);
        let before = host(net._blocks[4]._bn1.running_var.val());
        let x = Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
        let settings = BackboneTraining::official_train_mode();
        let taps = net.taps_train(x, &settings);
        assert_eq!(taps.len(), cfg.taps.len());
        let after = host(net._blocks[4]._bn1.running_var.val());
        assert_ne!(before, after, "running statistics must move in train mode");
    }
}
