//! One error type for the library. Every message names the file, tensor or value that is wrong,
//! so a user can act on it without reading our code.

use std::path::PathBuf;

/// Errors raised by the `hvq` library.
#[derive(Debug, thiserror::Error)]
pub enum HvqError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A weights file is not in a format we can read (truncated, corrupt, unknown).
    #[error("{path}: not a readable weights file: {reason}")]
    WeightsFormat {
        /// The weights file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// A tensor the model needs is absent from the weights.
    #[error("{source_name}: missing tensor `{tensor}`{hint}")]
    MissingTensor {
        /// Where the weights came from (file name or description).
        source_name: String,
        /// The parameter name that was looked up.
        tensor: String,
        /// An optional hint (e.g. the closest names present).
        hint: String,
    },
    /// A tensor is present but its shape differs from what the configuration implies.
    #[error(
        "{source_name}: tensor `{tensor}` has shape {found:?}, the configuration expects {expected:?}"
    )]
    ShapeMismatch {
        /// Where the weights came from.
        source_name: String,
        /// The parameter name.
        tensor: String,
        /// Shape found in the file.
        found: Vec<usize>,
        /// Shape the model expects.
        expected: Vec<usize>,
    },
    /// A tensor holds a data type we cannot convert to f32, or NaN/inf values.
    #[error("{source_name}: tensor `{tensor}`: {reason}")]
    BadTensor {
        /// Where the weights came from.
        source_name: String,
        /// The parameter name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// An image could not be decoded or is unusable.
    #[error("{path}: {reason}")]
    Image {
        /// The image file (or a description of the in-memory source).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A dataset cannot be used: its spec, layout, files or classes. The message names the
    /// dataset or the file.
    #[error("{0}")]
    Dataset(String),
    /// A training run cannot start or continue as asked (its settings, its checkpoint or its
    /// data disagree). The message names the run.
    #[error("{0}")]
    Training(String),
    /// A configuration is invalid or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A class name or index that the model does not know.
    #[error("unknown class {given:?}; the model knows {known:?}")]
    UnknownClass {
        /// What the caller asked for.
        given: String,
        /// The classes the model was trained on.
        known: Vec<String>,
    },
    /// The model's score for an image is NaN or infinite (NaN weights, or an overflow): no
    /// verdict can be given.
    #[error(
        "the model gave no finite score ({score}) under class {class:?}: its weights or this \
         image produce NaN or infinity, so the image is not judged"
    )]
    NonFiniteScore {
        /// The score computed.
        score: f32,
        /// The class it was computed under.
        class: String,
    },
    /// Training diverged: a loss or gradient norm that is NaN or infinite.
    #[error(
        "training stopped at epoch {epoch}, step {step}: the loss is {loss} and the gradient \
         norm {grad_norm}; {checkpoint}"
    )]
    NonFiniteLoss {
        /// Epoch (1-based).
        epoch: usize,
        /// Step within the epoch (1-based).
        step: usize,
        /// The loss.
        loss: f32,
        /// The gradient's global norm.
        grad_norm: f32,
        /// What the user has left: the last checkpoint, or none.
        checkpoint: String,
    },
    /// The compute device could not be initialised or failed.
    #[error("device error: {0}")]
    Device(String),
}

/// Result alias for the library.
pub type Result<T> = std::result::Result<T, HvqError>;

impl HvqError {
    /// A dataset error about `source` (a spec, folder or file).
    pub fn dataset(source: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        HvqError::Dataset(format!("{source}: {reason}"))
    }

    /// A training error about the run in `run`.
    pub fn training(run: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        HvqError::Training(format!("{run}: {reason}"))
    }

    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HvqError::Io {
            path: path.into(),
            source,
        }
    }
}
