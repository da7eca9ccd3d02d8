//! Errors raised while reading configs, checkpoints and tokenizers.

use std::path::PathBuf;

/// Everything that can go wrong in `kd-bert`, each variant naming the file or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file is missing, unreadable or has an invalid field.
    #[error("config {path}: {msg}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A checkpoint file cannot be read or decoded.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint {
        /// The checkpoint file or directory.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The checkpoint's tensors do not match what the model expects.
    #[error("checkpoint {path} does not match the model:\n{report}")]
    Mismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// Missing, unexpected and wrongly shaped tensors, one per line.
        report: String,
    },
    /// No tokenizer could be loaded.
    #[error("tokenizer in {path}: {msg}")]
    Tokenizer {
        /// The model directory or tokenizer file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// An I/O error on a named file.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl From<kd_core::fs::FsError> for Error {
    fn from(e: kd_core::fs::FsError) -> Self {
        Error::io(e.path, e.cause)
    }
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }
}
