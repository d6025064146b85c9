//! A convolution's kernel and bias with its inference BatchNorm folded in, kept from one forward
//! to the next.
//!
//! Folding ([`crate::kernels::fold_batch_norm`]) is a pass over the convolution's kernel: one
//! kernel launch on a GPU, for each of the official B4 backbone's 65 convolutions at every
//! forward (a fifth of its launches), recomputing the same values from weights that do not
//! change between forwards. The cache computes them at the first inference forward and hands
//! them out after. It is emptied whenever the weights may change under it: burn's parameter
//! mapping (loading weights, freezing, [`Module::map`]), device moves and forks, mode switches,
//! and the train-mode forward, which moves the BatchNorm's running statistics
//! ([`super::EfficientNet::forget_folds`]). The folded values are those an uncached fold gives
//! (the same kernel on the same weights), so caching changes no number.

use std::sync::OnceLock;

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::tensor::{Device, Tensor};

/// The folded kernel `[out, in/groups, kh, kw]` and bias `[out]`, once computed.
#[derive(Clone, Debug, Default)]
pub struct FoldCache {
    folded: OnceLock<(Tensor<4>, Tensor<1>)>,
}

impl FoldCache {
    /// The cached fold, computing it with `fold` the first time.
    pub fn get_or_fold(
        &self,
        fold: impl FnOnce() -> (Tensor<4>, Tensor<1>),
    ) -> (Tensor<4>, Tensor<1>) {
        self.folded.get_or_init(fold).clone()
    }

    /// Whether a fold is cached.
    pub fn is_filled(&self) -> bool {
        self.folded.get().is_some()
    }

    /// Drop the cached fold (the weights or the statistics it came from are about to change).
    pub fn forget(&mut self) {
        self.folded.take();
    }
}

/// Not a parameter: nothing to visit, saved or loaded; every transformation of the module
/// returns an empty cache, refilled at the next inference forward.
impl Module for FoldCache {
    fn collect_devices(&self, devices: Devices) -> Devices {
        devices
    }

    fn fork(self, _device: &Device) -> Self {
        Self::default()
    }

    fn to_device(self, _device: &Device) -> Self {
        Self::default()
    }

    fn train(self) -> Self {
        Self::default()
    }

    fn valid(&self) -> Self {
        Self::default()
    }

    fn materialize(self) -> Self {
        Self::default()
    }

    fn visit<V: ModuleVisitor>(&self, _visitor: &mut V) {}

    fn map<M: ModuleMapper>(self, _mapper: &mut M) -> Self {
        Self::default()
    }
}

impl ModuleDisplayDefault for FoldCache {
    fn content(&self, content: Content) -> Option<Content> {
        let state = if self.is_filled() { "folded" } else { "empty" };
        content.add_single(state).optional()
    }
}

impl ModuleDisplay for FoldCache {}
