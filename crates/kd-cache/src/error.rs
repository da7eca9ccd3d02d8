//! The error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong while writing, reading or checking a cache.
///
/// Errors that come from a file name it; errors inside a shard also say where
/// (record, block or row group).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file or folder could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// A shard (or another cache file) is damaged or does not decode.
    #[error("{file}: {location}: {message}")]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// Where in the file ("record 17 (block 2)", "row group 3", "footer", ...).
        location: String,
        /// What is wrong.
        message: String,
    },
    /// `manifest.json` is missing, unreadable or inconsistent.
    #[error("{path}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The cache does not fit what its consumer expects.
    #[error("incompatible cache: {0}")]
    Incompatible(String),
    /// A target string could not be parsed.
    #[error("bad target spec: {0}")]
    Target(String),
    /// A record does not match the cache's targets, or an argument is invalid.
    #[error("{0}")]
    Invalid(String),
}

impl From<kd_core::fs::FsError> for CacheError {
    fn from(e: kd_core::fs::FsError) -> Self {
        CacheError::io(e.path, e.cause)
    }
}

impl CacheError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CacheError::Io {
            path: path.into(),
            cause: source,
        }
    }

    /// A corruption or decoding error in `file` at `location`.
    pub fn corrupt(
        file: impl Into<PathBuf>,
        location: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        CacheError::Corrupt {
            file: file.into(),
            location: location.into(),
            message: message.into(),
        }
    }
}

/// Result with [`CacheError`].
pub type Result<T, E = CacheError> = std::result::Result<T, E>;
