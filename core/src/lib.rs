//! # hvq: HVQ-Trans multi-class anomaly detection on burn
//!
//! The pipeline is the module tree: [`preprocess`] (image → tensor) → [`backbone`]
//! (EfficientNet taps, aligned to 14×14) → [`model`] (encoder, hierarchical VQ, decoder, experts)
//! → [`map`] (anomaly map and image score). [`detector::Detector`] ties them together;
//! [`features`], [`train`], [`threshold`] and [`eval`] build on it. Above them, [`app`] is the
//! application layer every front end calls: model sources, image listing, inspection
//! ([`app::Inspector`]), result rows, the inference worker, training, calibration, evaluation.
//! Below everything: [`error`], [`fs`] (atomic writes), [`device`] (backends, read-back),
//! [`config`] and [`weights`] (every tensor in and out, in the official parameter names).
//! Imports only point down this list; `tests/architecture.rs` checks it.
//!
//! Inspecting an image with the shipped model on the CPU:
//!
//! ```
//! use hvq::app::{ClassChoice, Inspector, ModelSource, Verdict};
//!
//! let device = burn::tensor::Device::flex();
//! let model = ModelSource::Shipped.load(&device)?;
//! let inspector = Inspector::new(model, device);
//! let (name, png) = hvq::pretrained::SAMPLES[0];
//! let result = inspector.inspect_bytes(png, name, &ClassChoice::Auto)?;
//! assert_eq!(result.model_map.len(), 224 * 224);
//! assert_ne!(result.verdict(), Verdict::Error);
//! # Ok::<(), hvq::HvqError>(())
//! ```
#![warn(missing_docs)]

pub mod allocator;
pub mod app;
pub mod backbone;
pub mod class_choice;
pub mod config;
pub mod data;
pub mod detector;
pub mod device;
pub mod env_setting;
pub mod error;
pub mod eval;
pub mod features;
pub mod fs;
pub mod kernels;
pub mod map;
pub mod model;
pub mod overlay;
#[cfg(feature = "wgpu")]
pub mod overlay_gpu;
pub mod prefetch;
pub mod preprocess;
#[cfg(feature = "embedded-weights")]
pub mod pretrained;
pub mod replay;
pub mod threshold;
pub mod tiling;
pub mod train;
pub mod weights;

#[cfg(test)]
mod test_rng;

pub use app::{ClassChoice, Inspection, Inspector, MapResolution};
pub use config::{BackboneConfig, BackboneKind, HvqConfig, ModelConfig};
pub use detector::Detector;
pub use error::{HvqError, Result};
