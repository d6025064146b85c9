//! Values computed from a module's weights, kept from one forward to the next while the weights
//! stay as they are.
//!
//! Inference recomputes, at every forward, some values that depend on the weights alone: each
//! backbone convolution's kernel with its BatchNorm folded in (one launch per convolution on a
//! GPU, 65 for the official B4), each codebook's codes as rows and their squared norms (three
//! launches per level). A [`DerivedCache`] field computes them at the first forward and hands
//! them out after. It is emptied whenever the weights may change under it: burn's parameter
//! mapping (loading weights, freezing, [`Module::map`]), device moves and forks, mode switches;
//! code that assigns a weight in place (the train-mode BatchNorm's running statistics, the
//! codebooks' EMA update) calls [`DerivedCache::forget`]. The values are those the same
//! computation gives uncached, so caching changes no number.

use std::sync::OnceLock;

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::tensor::Device;

/// A value derived from the weights of the module holding it (tensors, a tuple of them), once
/// computed.
#[derive(Clone, Debug)]
pub struct DerivedCache<T> {
    value: OnceLock<T>,
}

impl<T> Default for DerivedCache<T> {
    fn default() -> Self {
        Self {
            value: OnceLock::new(),
        }
    }
}

impl<T: Clone> DerivedCache<T> {
    /// The cached value, computing it with `compute` the first time.
    pub fn get_or_compute(&self, compute: impl FnOnce() -> T) -> T {
        self.value.get_or_init(compute).clone()
    }

    /// Whether a value is cached.
    pub fn is_filled(&self) -> bool {
        self.value.get().is_some()
    }

    /// Drop the cached value (the weights it came from are about to change).
    pub fn forget(&mut self) {
        self.value.take();
    }
}

/// Not a parameter: nothing to visit, saved or loaded; every transformation of the module
/// returns an empty cache, refilled at the next inference forward.
impl<T: Clone + core::fmt::Debug + Send + Sync> Module for DerivedCache<T> {
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

impl<T: Clone + core::fmt::Debug + Send + Sync> ModuleDisplayDefault for DerivedCache<T> {
    fn content(&self, content: Content) -> Option<Content> {
        let state = if self.is_filled() { "filled" } else { "empty" };
        content.add_single(state).optional()
    }
}

impl<T: Clone + core::fmt::Debug + Send + Sync> ModuleDisplay for DerivedCache<T> {}
