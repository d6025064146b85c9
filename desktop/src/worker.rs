//! The inference thread is core's [`hvq::app::worker`]; the inspector tags each request with
//! what it is for.

pub use hvq::app::worker::{DetectorFactory, ModelInfo, ModelLoad};

/// What a finished inspection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// An image of the list.
    List,
    /// A known-good image for calibration.
    Calibration,
}

/// The inference thread, its requests and replies, tagged with a [`Purpose`].
pub type Worker = hvq::app::worker::Worker<Purpose>;
/// Work for the inference thread.
pub type Request = hvq::app::worker::Request<Purpose>;
/// Answers from the inference thread.
pub type Reply = hvq::app::worker::Reply<Purpose>;
