//! The application layer: what every front end does with a model, written once. The CLI
//! (`src/cli/`), the desktop inspector and the web page call these; none of them composes the
//! pipeline itself.
//!
//! - [`source`]: which model (the shipped one, a directory, an unfinished run) and backbone;
//! - [`images`]: which files a list of paths means;
//! - [`inspect`]: images in, map, score, class and verdict out ([`Inspector`], one image or a
//!   batch);
//! - [`files`]: image files inspected a batch at a time, each with its own result or error;
//! - [`verdict`] and [`results`]: one verdict vocabulary and one result-row schema (CSV/JSON);
//! - [`watch`]: a folder watched, images inspected as they are completely written (native only);
//! - [`worker`]: a thread that owns the device and inspects files queued to it (native only);
//! - [`training`]: a whole training run (features, trainer, calibration, saved model);
//! - [`recipe`]: named, measured training settings per compute budget;
//! - [`calibrate`]: a stored model's threshold from known-good images;
//! - [`evaluate`]: a dataset's test split and its metrics;
//! - [`report`]: a self-contained HTML report of an evaluation or a prediction run;
//! - [`bench`](mod@bench) and [`selfcheck`]: timings, and a device checked against the CPU;
//! - [`environment`]: the start-up variables every native front end applies first.

pub mod bench;
pub mod calibrate;
pub mod environment;
pub mod evaluate;
pub mod files;
pub mod images;
pub mod inspect;
pub mod recipe;
pub mod report;
pub mod results;
pub mod selfcheck;
pub mod source;
pub mod training;
pub mod verdict;
#[cfg(not(target_arch = "wasm32"))]
pub mod watch;
#[cfg(not(target_arch = "wasm32"))]
pub mod worker;

pub use images::{ImageListing, list_images};
pub use inspect::{ClassChoice, Inspection, Inspector, MapResolution, ReplayState, StageTimes};
pub use results::{OutputNames, ResultRow};
pub use source::ModelSource;
pub use verdict::Verdict;
