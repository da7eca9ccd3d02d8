//! Errors of precomputation.

/// Anything that stops a precompute run; messages name the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Teacher model or tokenizer problem.
    #[error(transparent)]
    Model(#[from] kd_bert::Error),
    /// Corpus or dataset problem.
    #[error(transparent)]
    Data(#[from] kd_data::DataError),
    /// Cache writing or manifest problem.
    #[error(transparent)]
    Cache(#[from] kd_cache::CacheError),
    /// Tensor operation failure.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A file could not be written or read.
    #[error(transparent)]
    File(#[from] kd_core::fs::FsError),
    /// A setting that cannot work.
    #[error("{0}")]
    Config(String),
    /// Any other teacher-side problem.
    #[error(transparent)]
    Teacher(Box<kd_teacher::Error>),
}

impl From<kd_teacher::Error> for Error {
    fn from(e: kd_teacher::Error) -> Self {
        match e {
            kd_teacher::Error::Model(e) => Error::Model(e),
            kd_teacher::Error::Data(e) => Error::Data(e),
            kd_teacher::Error::Cache(e) => Error::Cache(e),
            kd_teacher::Error::Candle(e) => Error::Candle(e),
            kd_teacher::Error::Config(s) => Error::Config(s),
            other => Error::Teacher(Box::new(other)),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
