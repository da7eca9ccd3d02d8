//! Errors of teacher preparation.

/// Anything that stops a fine-tuning run; the message names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Model, checkpoint or tokenizer problem.
    #[error(transparent)]
    Model(#[from] kd_bert::Error),
    /// Corpus or dataset problem.
    #[error(transparent)]
    Data(#[from] kd_data::DataError),
    /// Cache record problem (target encoding).
    #[error(transparent)]
    Cache(#[from] kd_cache::CacheError),
    /// Training-loop problem (checkpoint, optimizer, non-finite loss).
    #[error(transparent)]
    Train(#[from] kd_train::Error),
    /// Tensor operation failure.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A setting that cannot work.
    #[error("{0}")]
    Config(String),
    /// I/O on a named path.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
}

impl From<kd_core::fs::FsError> for Error {
    fn from(e: kd_core::fs::FsError) -> Self {
        Error::Io {
            path: e.path,
            cause: e.cause,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Wraps any error of this crate for the training loop's task interface.
pub(crate) fn to_train(e: Error) -> kd_train::Error {
    kd_train::Error::Task(Box::new(e))
}
