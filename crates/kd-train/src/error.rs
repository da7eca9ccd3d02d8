//! Error type shared by every module of the crate.

use std::path::PathBuf;

/// Result alias using the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Errors raised by the training core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The task being trained failed (data, model or loss error).
    #[error("{0}")]
    Task(Box<dyn std::error::Error + Send + Sync>),

    /// The loss or gradient norm became NaN or infinite; the last good checkpoint is kept.
    #[error("non-finite {what} ({value}) at step {step}: stopping; the last good checkpoint in {checkpoints} is kept")]
    NonFinite {
        /// `loss` or `gradient norm`.
        what: &'static str,
        /// The offending value.
        value: f64,
        /// Optimizer step at which it happened.
        step: u64,
        /// The checkpoint directory.
        checkpoints: PathBuf,
    },

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A filesystem operation failed on the named path.
    #[error("{path}: {cause}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// Underlying error.
        cause: std::io::Error,
    },

    /// A JSON document could not be read or written.
    #[error("{path}: invalid JSON: {cause}")]
    Json {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        cause: serde_json::Error,
    },

    /// A tensor expected in a state or checkpoint is absent.
    #[error("missing tensor `{name}`")]
    MissingTensor {
        /// Tensor name.
        name: String,
    },

    /// A tensor is present but is not used by the receiver (e.g. a parameter
    /// that is frozen or does not exist in the model).
    #[error("unexpected tensor `{name}`")]
    UnexpectedTensor {
        /// Tensor name.
        name: String,
    },

    /// A tensor has a different shape than the receiving variable.
    #[error("tensor `{name}`: shape mismatch, expected {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// Shape of the receiving variable.
        expected: Vec<usize>,
        /// Shape found in the source.
        found: Vec<usize>,
    },

    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A checkpoint directory or file is malformed.
    #[error("{path}: corrupt checkpoint: {reason}")]
    Corrupt {
        /// File or directory involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// An error that occurred while processing the named file.
    #[error("{path}: {cause}")]
    InFile {
        /// File being processed.
        path: PathBuf,
        /// Underlying error.
        cause: Box<Error>,
    },
}

impl From<kd_core::fs::FsError> for Error {
    fn from(e: kd_core::fs::FsError) -> Self {
        Error::io(e.path, e.cause)
    }
}

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }

    /// Wraps `self` with the name of the file being processed.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        Error::InFile {
            path: path.into(),
            cause: Box::new(self),
        }
    }
}
