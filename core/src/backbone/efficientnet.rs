//! EfficientNet (B4 and Lite0) from one block description, with parameter names that mirror the
//! lukemelas PyTorch port (`_conv_stem`, `_bn0`, `_blocks.{i}._depthwise_conv`, …) so that its
//! `.pth` files and the official HVQ-Trans checkpoint (`enc.` prefix) load without renaming.

use burn::module::{Module, Param};
use burn::tensor::module::batch_norm;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};

use crate::config::{BackboneConfig, BackboneKind, BlockSpec, block_specs, stem_channels};
use crate::kernels::products::{conv2d, linear};
use crate::kernels::{Activation, Epilogue};
use crate::weights::DerivedCache;

/// BatchNorm epsilon of the TF-trained EfficientNets (PyTorch default would be 1e-5).
pub(super) const BN_EPS: f64 = 1e-3;

/// TF "SAME" padding (begin, end) for one spatial axis of size `size`.
pub(super) fn same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// Inference BatchNorm with the four PyTorch tensors.
#[derive(Module, Debug)]
pub struct BatchNorm {
    /// Scale γ.
    pub weight: Param<Tensor<1>>,
    /// Shift β.
    pub bias: Param<Tensor<1>>,
    /// Running mean.
    pub running_mean: Param<Tensor<1>>,
    /// Running variance.
    pub running_var: Param<Tensor<1>>,
}

impl BatchNorm {
    pub(super) fn new(ch: usize, device: &Device) -> Self {
        let frozen = |t: Tensor<1>| Param::from_tensor(t).set_require_grad(false);
        Self {
            weight: frozen(Tensor::ones([ch], device)),
            bias: frozen(Tensor::zeros([ch], device)),
            running_mean: frozen(Tensor::zeros([ch], device)),
            running_var: frozen(Tensor::ones([ch], device)),
        }
    }

    /// Normalise `[B, C, H, W]` with the running statistics.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        batch_norm(
            x,
            self.weight.val(),
            self.bias.val(),
            self.running_mean.val(),
            self.running_var.val(),
            BN_EPS,
        )
    }
}

/// A convolution weight `(out, in/groups, k, k)` with an optional bias.
#[derive(Module, Debug)]
pub struct Conv {
    /// Kernel.
    pub weight: Param<Tensor<4>>,
    /// Bias (SE convs only).
    pub bias: Option<Param<Tensor<1>>>,
    /// The kernel and bias with the following BatchNorm folded in, from the first inference
    /// forward on (not a parameter; emptied when the weights may change).
    pub(super) folded: DerivedCache<(Tensor<4>, Tensor<1>)>,
}

impl Conv {
    fn new(out_ch: usize, in_per_group: usize, k: usize, bias: bool, device: &Device) -> Self {
        let fan_in = (in_per_group * k * k) as f64;
        let bound = 1.0 / fan_in.sqrt();
        let frozen = |t| Param::from_tensor(t).set_require_grad(false);
        Self {
            weight: Param::from_tensor(Tensor::random(
                [out_ch, in_per_group, k, k],
                Distribution::Uniform(-bound, bound),
                device,
            ))
            .set_require_grad(false),
            bias: bias.then(|| frozen(Tensor::zeros([out_ch], device))),
            folded: DerivedCache::default(),
        }
    }

    pub(super) fn forward(
        &self,
        x: Tensor<4>,
        stride: usize,
        pad: [(usize, usize); 2],
        groups: usize,
    ) -> Tensor<4> {
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            ConvOptions::new_with_padding([stride, stride], pad, [1, 1], groups),
        )
    }

    /// This convolution followed by inference BatchNorm `bn`, as one convolution: BN is affine
    /// per output channel, `y = x·s + (β − μ·s)` with `s = γ/√(σ² + ε)`, so it folds into the
    /// kernel (scaled by `s`) and a bias ([`crate::kernels::fold_batch_norm`]: one kernel on a
    /// GPU), which saves a pass over the output. The weights are folded at the first call and
    /// kept ([`DerivedCache`]): a convolution is always followed by the same BatchNorm.
    fn forward_bn(
        &self,
        bn: &BatchNorm,
        x: Tensor<4>,
        stride: usize,
        pad: [(usize, usize); 2],
        groups: usize,
    ) -> Tensor<4> {
        let (weight, bias) = self.fold(bn);
        conv2d(
            x,
            weight,
            Some(bias),
            ConvOptions::new_with_padding([stride, stride], pad, [1, 1], groups),
        )
    }

    /// [`Conv::forward_bn`] followed by `then` (an activation, a residual): on a GPU the
    /// bias, activation and residual in the convolution's kernel or one after it
    /// ([`crate::kernels::conv2d_fused`]).
    fn forward_bn_then(
        &self,
        bn: &BatchNorm,
        x: Tensor<4>,
        stride: usize,
        pad: [(usize, usize); 2],
        groups: usize,
        then: Epilogue,
    ) -> Tensor<4> {
        let (weight, bias) = self.fold(bn);
        let options = ConvOptions::new_with_padding([stride, stride], pad, [1, 1], groups);
        crate::kernels::conv2d_fused(x, weight, bias, options, then)
    }

    /// The bias, zeros where the convolution has none (the squeeze-and-excitation convolutions
    /// always have one in the published weights).
    fn bias_or_zeros(&self) -> Tensor<1> {
        match &self.bias {
            Some(bias) => bias.val(),
            None => {
                let weight = self.weight.val();
                Tensor::zeros([weight.dims()[0]], &weight.device())
            }
        }
    }

    /// The kernel and bias with `bn` (always this convolution's own BatchNorm) folded in,
    /// cached after the first call.
    fn fold(&self, bn: &BatchNorm) -> (Tensor<4>, Tensor<1>) {
        self.folded.get_or_compute(|| {
            crate::kernels::fold_batch_norm(
                crate::kernels::BatchNormFold {
                    weight: self.weight.val(),
                    conv_bias: self.bias.as_ref().map(|b| b.val()),
                    gamma: bn.weight.val(),
                    beta: bn.bias.val(),
                    mean: bn.running_mean.val(),
                    var: bn.running_var.val(),
                },
                BN_EPS as f32,
            )
        })
    }
}

/// One MBConv block: expand → depthwise → (SE) → project (+ residual).
#[derive(Module, Debug)]
pub struct MbConvBlock {
    /// 1×1 expansion (absent when the expand ratio is 1).
    pub _expand_conv: Option<Conv>,
    /// BN after expansion.
    pub _bn0: Option<BatchNorm>,
    /// Depthwise conv.
    pub _depthwise_conv: Conv,
    /// BN after depthwise.
    pub _bn1: BatchNorm,
    /// SE reduce conv (with bias).
    pub _se_reduce: Option<Conv>,
    /// SE expand conv (with bias).
    pub _se_expand: Option<Conv>,
    /// 1×1 projection.
    pub _project_conv: Conv,
    /// BN after projection.
    pub _bn2: BatchNorm,
    #[module(skip)]
    pub(super) spec: BlockSpec,
    /// Depthwise padding (rows, cols) when fixed at construction (static SAME padding).
    #[module(skip)]
    pub(super) static_pad: Option<[(usize, usize); 2]>,
    #[module(skip)]
    pub(super) kind: BackboneKind,
}

/// The backbone's activation: swish `x·σ(x)` for B4 (computed as `x / (1 + e⁻ˣ)`, the same
/// function; on the CPU backend a vectorised kernel, [`crate::kernels::swish`]: burn's own
/// `sigmoid` and `exp` evaluate a scalar `exp` per element, which dominated the B4 backbone,
/// `cargo bench -p core --bench kernels`, group "backbone"), ReLU6 for Lite0.
pub(super) fn activation(kind: BackboneKind) -> Activation {
    match kind {
        BackboneKind::EfficientnetB4 => Activation::Swish,
        BackboneKind::EfficientnetLite0 => Activation::Relu6,
    }
}

pub(super) fn activate(kind: BackboneKind, x: Tensor<4>) -> Tensor<4> {
    activation(kind).apply(x)
}

impl MbConvBlock {
    fn new(
        spec: BlockSpec,
        static_pad: Option<[(usize, usize); 2]>,
        kind: BackboneKind,
        device: &Device,
    ) -> Self {
        let exp = spec.expanded();
        let has_expand = spec.expand != 1;
        Self {
            _expand_conv: has_expand.then(|| Conv::new(exp, spec.in_ch, 1, false, device)),
            _bn0: has_expand.then(|| BatchNorm::new(exp, device)),
            _depthwise_conv: Conv::new(exp, 1, spec.kernel, false, device),
            _bn1: BatchNorm::new(exp, device),
            _se_reduce: spec.se_ch.map(|s| Conv::new(s, exp, 1, true, device)),
            _se_expand: spec.se_ch.map(|s| Conv::new(exp, s, 1, true, device)),
            _project_conv: Conv::new(spec.out_ch, exp, 1, false, device),
            _bn2: BatchNorm::new(spec.out_ch, device),
            spec,
            static_pad,
            kind,
        }
    }

    /// Run the block on `[B, in, H, W]`.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let s = &self.spec;
        let mut x = input.clone();
        let activation = activation(self.kind);
        if let (Some(conv), Some(bn)) = (&self._expand_conv, &self._bn0) {
            let then = Epilogue::activation(activation);
            x = conv.forward_bn_then(bn, x, 1, [(0, 0); 2], 1, then);
        }
        let [_, _, h, w] = x.dims();
        let pad = self.static_pad.unwrap_or_else(|| {
            [
                same_padding(h, s.kernel, s.stride),
                same_padding(w, s.kernel, s.stride),
            ]
        });
        x = self._depthwise_conv.forward_bn_then(
            &self._bn1,
            x,
            s.stride,
            pad,
            s.expanded(),
            Epilogue::activation(activation),
        );
        if let (Some(reduce), Some(expand)) = (&self._se_reduce, &self._se_expand) {
            let excitation = crate::kernels::Excitation {
                reduce_weight: reduce.weight.val(),
                reduce_bias: reduce.bias_or_zeros(),
                expand_weight: expand.weight.val(),
                expand_bias: expand.bias_or_zeros(),
                activation,
            };
            x = crate::kernels::excite(x, excitation);
        }
        let residual = (s.stride == 1 && s.in_ch == s.out_ch).then_some(input);
        let then = Epilogue {
            activation: Activation::Identity,
            residual,
        };
        self._project_conv
            .forward_bn_then(&self._bn2, x, 1, [(0, 0); 2], 1, then)
    }
}

/// A PyTorch-layout linear layer (weight `(out, in)`).
#[derive(Module, Debug)]
pub struct FcLayer {
    /// `(out, in)`.
    pub weight: Param<Tensor<2>>,
    /// `(out)`.
    pub bias: Param<Tensor<1>>,
}

/// EfficientNet stem and blocks up to the last tap (plus, optionally, the classifier head).
#[derive(Module, Debug)]
pub struct EfficientNet {
    /// Stem conv (3×3, stride 2).
    pub _conv_stem: Conv,
    /// Stem BN.
    pub _bn0: BatchNorm,
    /// MBConv blocks.
    pub _blocks: Vec<MbConvBlock>,
    /// ImageNet head 1×1 conv to 1280 (only built for weight checks, like `_bn1` and `_fc`).
    pub _conv_head: Option<Conv>,
    /// BN of the head.
    pub _bn1: Option<BatchNorm>,
    /// Final linear layer (weight `(1000, 1280)`).
    pub _fc: Option<FcLayer>,
    #[module(skip)]
    pub(super) config: BackboneConfig,
    #[module(skip)]
    pub(super) stem_pad: Option<[(usize, usize); 2]>,
}

impl EfficientNet {
    /// Build with placeholder weights. `with_head` builds every block and the ImageNet head.
    pub fn new(config: &BackboneConfig, with_head: bool, device: &Device) -> Self {
        let kind = config.kind;
        let specs = block_specs(kind);
        let last_tap = config.taps.iter().copied().max().unwrap_or(0);
        let count = if with_head { specs.len() } else { last_tap + 1 };
        // Static SAME padding follows the image size block by block, as lukemelas does.
        let mut size = config.static_padding_size;
        let stem_pad = size.map(|s| {
            let p = same_padding(s, 3, 2);
            [p, p]
        });
        size = size.map(|s| s.div_ceil(2));
        let blocks = specs
            .into_iter()
            .take(count)
            .map(|spec| {
                let pad = size.map(|s| {
                    let p = same_padding(s, spec.kernel, spec.stride);
                    [p, p]
                });
                size = size.map(|s| s.div_ceil(spec.stride));
                MbConvBlock::new(spec, pad, kind, device)
            })
            .collect();
        let stem = stem_channels(kind);
        let last = block_specs(kind).last().map(|s| s.out_ch).unwrap_or(320);
        Self {
            _conv_stem: Conv::new(stem, 3, 3, false, device),
            _bn0: BatchNorm::new(stem, device),
            _blocks: blocks,
            _conv_head: with_head.then(|| Conv::new(1280, last, 1, false, device)),
            _bn1: with_head.then(|| BatchNorm::new(1280, device)),
            _fc: with_head.then(|| FcLayer {
                weight: Param::from_tensor(Tensor::zeros([1000, 1280], device))
                    .set_require_grad(false),
                bias: Param::from_tensor(Tensor::zeros([1000], device)).set_require_grad(false),
            }),
            config: config.clone(),
            stem_pad,
        }
    }

    /// The configuration this network was built from.
    pub fn config(&self) -> &BackboneConfig {
        &self.config
    }

    /// Drop every convolution's cached BatchNorm fold ([`DerivedCache`]): for code that changes a
    /// weight or a BatchNorm statistic in place rather than through burn's module mapping (the
    /// train-mode forward).
    pub fn forget_folds(&mut self) {
        self._conv_stem.folded.forget();
        for block in &mut self._blocks {
            let convs = [
                block._expand_conv.as_mut(),
                Some(&mut block._depthwise_conv),
                block._se_reduce.as_mut(),
                block._se_expand.as_mut(),
                Some(&mut block._project_conv),
            ];
            for conv in convs.into_iter().flatten() {
                conv.folded.forget();
            }
        }
        if let Some(head) = &mut self._conv_head {
            head.folded.forget();
        }
    }

    /// The stem's padding for an input of `x`'s size.
    fn stem_padding(&self, x: &Tensor<4>) -> [(usize, usize); 2] {
        let [_, _, h, w] = x.dims();
        self.stem_pad
            .unwrap_or([same_padding(h, 3, 2), same_padding(w, 3, 2)])
    }

    /// Stem conv + BN, before the activation.
    fn stem_bn(&self, x: Tensor<4>) -> Tensor<4> {
        let pad = self.stem_padding(&x);
        self._conv_stem.forward_bn(&self._bn0, x, 2, pad, 1)
    }

    /// Stem conv + BN + activation.
    pub fn stem(&self, x: Tensor<4>) -> Tensor<4> {
        let pad = self.stem_padding(&x);
        let then = Epilogue::activation(activation(self.config.kind));
        self._conv_stem
            .forward_bn_then(&self._bn0, x, 2, pad, 1, then)
    }

    /// Outputs of the tapped blocks for a normalised input `[B, 3, H, W]`.
    pub fn taps(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let mut x = self.stem(x);
        let mut taps = Vec::with_capacity(self.config.taps.len());
        let last = self.config.taps.iter().copied().max().unwrap_or(0);
        for (i, block) in self._blocks.iter().enumerate().take(last + 1) {
            x = block.forward(x);
            if self.config.taps.contains(&i) {
                taps.push(x.clone());
            }
        }
        taps
    }

    /// Every block's output (for debugging parity), preceded by the stem's BN output (before its
    /// activation, where the reference records it).
    pub fn all_blocks(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let pre = self.stem_bn(x);
        let mut x = activate(self.config.kind, pre.clone());
        let mut outs = vec![pre];
        for block in &self._blocks {
            x = block.forward(x);
            outs.push(x.clone());
        }
        outs
    }

    /// ImageNet logits `[B, 1000]` (requires the head).
    pub fn classify(&self, x: Tensor<4>) -> Option<Tensor<2>> {
        let (conv, bn, fc) = (
            self._conv_head.as_ref()?,
            self._bn1.as_ref()?,
            self._fc.as_ref()?,
        );
        let mut x = self.stem(x);
        for block in &self._blocks {
            x = block.forward(x);
        }
        let x = activate(
            self.config.kind,
            bn.forward(conv.forward(x, 1, [(0, 0); 2], 1)),
        );
        let pooled: Tensor<2> = x.mean_dim(2).mean_dim(3).flatten(1, 3);
        Some(linear(
            pooled,
            fc.weight.val().transpose(),
            Some(fc.bias.val()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lite0's activation is ReLU6, `min(max(x, 0), 6)`, on the CPU and on wgpu: checked
    /// against the host's formula on values below, at and above both bends.
    #[test]
    fn lite0_activation_is_relu6() {
        let xs = [
            -7.5f32, -6.0, -1e-3, -0.0, 0.0, 1e-3, 2.5, 5.999, 6.0, 6.001, 1e4,
        ];
        for choice in [
            crate::device::DeviceChoice::Cpu,
            crate::device::DeviceChoice::Wgpu,
        ] {
            let device = crate::device::create(choice).unwrap();
            let x = Tensor::<4>::from_data(
                burn::tensor::TensorData::new(xs.to_vec(), [1, 1, 1, xs.len()]),
                &device,
            );
            let got = activate(BackboneKind::EfficientnetLite0, x)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            // The host's own clamp (std), independent of the backends' kernels.
            let want: Vec<f32> = xs.iter().map(|x| x.clamp(0.0, 6.0)).collect();
            assert_eq!(got, want, "{choice:?}");
        }
    }

    /// Adds a different constant to every parameter: new weights through burn's module mapping,
    /// the way loading writes them (the running variances stay positive).
    #[cfg(feature = "wgpu")]
    struct Shift;

    #[cfg(feature = "wgpu")]
    impl burn::module::ModuleMapper for Shift {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| t.mul_scalar(0.75).add_scalar(0.125))
        }
    }

    /// The BatchNorm folds are computed at the first inference forward and reused: on wgpu the
    /// second forward launches no fold kernel and gives the same taps bit for bit. After the
    /// weights change through burn's mapping (as loading does) or the train-mode forward (which
    /// moves the running statistics), the taps are those of a network built afresh from the new
    /// weights, and differ from before (a stale fold would have kept them).
    #[cfg(feature = "wgpu")]
    #[test]
    fn batch_norm_folds_are_kept_until_the_weights_change() {
        use crate::weights::TensorMap;
        let _generator = crate::test_rng::lock();
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let config = BackboneConfig::efficientnet_lite0();
        let x = Tensor::<4>::random([1, 3, 48, 48], Distribution::Normal(0.0, 1.0), &device);
        let on_host = |taps: Vec<Tensor<4>>| -> Vec<Vec<f32>> {
            taps.into_iter()
                .map(|t| t.into_data().try_to_vec::<f32>().unwrap())
                .collect()
        };
        // The same weights in a network that has never folded (through the host and back).
        let rebuilt = |net: &EfficientNet| {
            TensorMap::from_module(net, "net")
                .load_into(EfficientNet::new(&config, false, &device))
                .unwrap()
        };

        let net = EfficientNet::new(&config, false, &device);
        assert!(!net._conv_stem.folded.is_filled());
        let first = on_host(net.taps(x.clone()));
        assert!(net._conv_stem.folded.is_filled());
        assert!(net._blocks[3]._project_conv.folded.is_filled());
        let profiler = crate::device::kernel_profile::KernelProfiler::start("again");
        let again = net.taps(x.clone());
        let profile = profiler.finish();
        let folds: usize = profile.stages[0]
            .kernels
            .iter()
            .filter(|k| k.name.contains("Fold"))
            .map(|k| k.launches)
            .sum();
        assert_eq!(folds, 0, "{profile:#?}");
        assert!(profile.stages[0].launches > 0, "the forward was recorded");
        assert_eq!(on_host(again), first);

        let mapped = net.map(&mut Shift);
        assert!(!mapped._conv_stem.folded.is_filled());
        let after_map = on_host(mapped.taps(x.clone()));
        assert_ne!(after_map, first);
        assert_eq!(after_map, on_host(rebuilt(&mapped).taps(x.clone())));

        let mut trained = mapped;
        let _ = trained.taps_train(
            x.clone(),
            &super::super::BackboneTraining::official_train_mode(),
        );
        let after_train = on_host(trained.taps(x.clone()));
        assert_ne!(after_train, after_map);
        assert_eq!(after_train, on_host(rebuilt(&trained).taps(x)));
    }

    #[test]
    fn b4_geometry_matches_the_reference() {
        let _generator = crate::test_rng::lock();
        let specs = block_specs(BackboneKind::EfficientnetB4);
        assert_eq!(specs.len(), 32);
        assert_eq!(stem_channels(BackboneKind::EfficientnetB4), 48);
        // Taps 1/5/9/21 → 24, 32, 56, 160 channels.
        let widths: Vec<usize> = [1, 5, 9, 21].iter().map(|&i| specs[i].out_ch).collect();
        assert_eq!(widths, vec![24, 32, 56, 160]);
        // SE width is a quarter of the block input: 12 for block 0, 8 for block 6.
        assert_eq!(specs[0].se_ch, Some(12));
        assert_eq!(specs[6].se_ch, Some(8));
    }

    #[test]
    fn lite0_geometry() {
        let _generator = crate::test_rng::lock();
        let specs = block_specs(BackboneKind::EfficientnetLite0);
        assert_eq!(specs.len(), 16);
        let widths: Vec<usize> = [0, 2, 4, 10].iter().map(|&i| specs[i].out_ch).collect();
        assert_eq!(widths, vec![16, 24, 40, 112]);
        assert!(specs.iter().all(|s| s.se_ch.is_none()));
    }

    #[test]
    fn same_padding_for_380_gives_the_reference_table() {
        let _generator = crate::test_rng::lock();
        // Block 6 (k5, s2) sees a 95-pixel image when padding is computed for 380.
        assert_eq!(same_padding(380, 3, 2), (0, 1));
        assert_eq!(same_padding(95, 5, 2), (2, 2));
        assert_eq!(same_padding(112, 5, 2), (1, 2));
        assert_eq!(same_padding(48, 3, 2), (0, 1));
        assert_eq!(same_padding(24, 5, 1), (2, 2));
    }
}
