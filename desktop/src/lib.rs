//! # hvq inspector (desktop)
//!
//! An eframe application for inspection engineers: open images or folders, see each image's
//! anomaly score and pass/fail verdict, and the anomaly map over the photo, drawn by the WGSL
//! shader shared with the web page. Inference runs on burn's wgpu backend through the same
//! [`hvq::Inspector`] as the CLI, on a worker thread.
//!
//! - [`app`]: the window ([`app::InspectorApp`], `eframe::App`) and its [`app::Command`]s;
//! - [`state`]: pure state logic (list, sorting, verdicts, calibration, export), unit-tested;
//! - [`settings`]: what persists between runs;
//! - [`worker`]: the inference thread;
//! - [`overlay`]: the wgpu paint callback with `shaders/overlay.wgsl`.
#![warn(missing_docs)]

pub mod app;
pub mod overlay;
pub mod settings;
pub mod state;
pub mod worker;

pub use app::{Command, InspectorApp, Options};
