//! Errors of the loss functions.

/// What can go wrong when computing a loss: bad shapes, bad values, or a failing tensor op.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Inputs whose shapes (or dtypes) do not fit together; the message names the loss and the
    /// shapes.
    #[error("{loss}: {msg}")]
    Shape {
        /// The loss (or helper) that rejected its inputs.
        loss: &'static str,
        /// What is wrong, with the shapes involved.
        msg: String,
    },
    /// Inputs with invalid values (ids out of range, a non-positive temperature, ...).
    #[error("{loss}: {msg}")]
    Invalid {
        /// The loss (or helper) that rejected its inputs.
        loss: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A shape error of `loss`.
    pub(crate) fn shape(loss: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape {
            loss,
            msg: msg.into(),
        }
    }

    /// A value error of `loss`.
    pub(crate) fn invalid(loss: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid {
            loss,
            msg: msg.into(),
        }
    }
}

impl From<Error> for candle_core::Error {
    /// Lets callers that work in `candle_core::Result` use `?` on these losses.
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(e) => e,
            other => candle_core::Error::Msg(other.to_string()),
        }
    }
}
