//! Errors of the BiLSTM student.

use std::path::PathBuf;

/// Anything that stops building, loading, running or saving a BiLSTM student; messages name
/// the file, tensor or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A weight file that is not what the config says.
    #[error("{}: {msg}", path.display())]
    Weights {
        /// The weight file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A setting, input or config that cannot work.
    #[error("{0}")]
    Config(String),
    /// Teacher checkpoint or tokenizer problem.
    #[error(transparent)]
    Model(#[from] kd_bert::Error),
    /// Tensor operation failure.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A file could not be written.
    #[error(transparent)]
    File(#[from] kd_core::fs::FsError),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for kd_student::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Model(e) => kd_student::Error::Model(e),
            Error::Candle(e) => kd_student::Error::Candle(e),
            Error::File(e) => kd_student::Error::File(e),
            other => kd_student::Error::Config(other.to_string()),
        }
    }
}
