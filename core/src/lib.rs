//! # hvq: HVQ-Trans multi-class anomaly detection on burn
//!
//! The pipeline is the module tree: [`preprocess`] (image → tensor) → [`backbone`]
//! (EfficientNet taps, aligned to 14×14) → [`model`] (encoder, hierarchical VQ, decoder, experts)
//! → [`map`] (anomaly map and image score). [`detector::Detector`] ties them together and
//! [`infer::Inspector`] is the one entry point front ends use. [`weights`] reads and writes every
//! tensor, in the official parameter names.
#![warn(missing_docs)]

pub mod allocator;
pub mod backbone;
pub mod bench;
pub mod config;
pub mod data;
pub mod detector;
pub mod device;
pub mod error;
pub mod eval;
pub mod evaluate;
pub mod features;
pub mod infer;
pub mod kernels;
pub mod map;
pub mod model;
pub mod overlay;
#[cfg(feature = "wgpu")]
pub mod overlay_gpu;
pub mod preprocess;
#[cfg(feature = "embedded-weights")]
pub mod pretrained;
pub mod selfcheck;
pub mod threshold;
pub mod train;
pub mod weights;

#[cfg(test)]
mod test_rng;

pub use config::{BackboneConfig, BackboneKind, HvqConfig, ModelConfig};
pub use detector::Detector;
pub use error::{HvqError, Result};
pub use infer::{ClassChoice, Inspection, Inspector, MapResolution};
