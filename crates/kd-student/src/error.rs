//! Errors of student training and evaluation.

/// Anything that stops a student run; messages name the file, setting or cache field at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Model, checkpoint or tokenizer problem.
    #[error(transparent)]
    Model(#[from] kd_bert::Error),
    /// Cache problem (incompatible, corrupt, missing targets).
    #[error(transparent)]
    Cache(#[from] kd_cache::CacheError),
    /// Data problem.
    #[error(transparent)]
    Data(#[from] kd_data::DataError),
    /// Loss problem (shapes, widths).
    #[error(transparent)]
    Loss(#[from] kd_distill::Error),
    /// Training-loop problem.
    #[error(transparent)]
    Train(#[from] kd_train::Error),
    /// Tensor operation failure.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A file could not be written or read.
    #[error(transparent)]
    File(#[from] kd_core::fs::FsError),
    /// A setting that cannot work.
    #[error("{0}")]
    Config(String),
    /// Any other teacher-side problem (online mode).
    #[error(transparent)]
    Teacher(Box<kd_teacher::Error>),
}

impl From<kd_teacher::Error> for Error {
    fn from(e: kd_teacher::Error) -> Self {
        match e {
            kd_teacher::Error::Model(e) => Error::Model(e),
            kd_teacher::Error::Data(e) => Error::Data(e),
            kd_teacher::Error::Cache(e) => Error::Cache(e),
            kd_teacher::Error::Train(e) => Error::Train(e),
            kd_teacher::Error::Candle(e) => Error::Candle(e),
            kd_teacher::Error::Config(s) => Error::Config(s),
            other => Error::Teacher(Box::new(other)),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Wraps an error for the training loop's task interface.
pub(crate) fn to_train(e: Error) -> kd_train::Error {
    kd_train::Error::Task(Box::new(e))
}
