//! The error type of augmentation: every message names the file, line or setting at fault.

use std::path::PathBuf;

/// What can go wrong while building a transfer set.
#[derive(Debug, thiserror::Error)]
pub enum AugmentError {
    /// The POS lexicon file is absent.
    #[error(
        "POS lexicon {} not found: fetch it with scripts/fetch-assets.sh \
         (npm pos@0.4.2, unpacked into assets/pos/), or point --lexicon at lexicon.js",
        path.display()
    )]
    MissingLexicon {
        /// The path looked at.
        path: PathBuf,
    },
    /// The lexicon file does not parse.
    #[error("{}:{line}: malformed lexicon entry: {message}", path.display())]
    Lexicon {
        /// The lexicon file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An input example cannot be augmented (empty text and the like).
    #[error("{}:{line}: {message}", path.display())]
    Example {
        /// The task file.
        path: PathBuf,
        /// 1-based line of the example.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A setting is out of range or unknown.
    #[error("{0}")]
    Setting(String),
    /// The teacher cannot be used for TinyBERT's augmentation.
    #[error("teacher {}: {message}", dir.display())]
    Teacher {
        /// The model directory.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Reading the task data failed.
    #[error(transparent)]
    Data(#[from] kd_data::DataError),
    /// A model or tokenizer error.
    #[error(transparent)]
    Bert(#[from] kd_bert::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Writing the output failed.
    #[error(transparent)]
    Fs(#[from] kd_core::fs::FsError),
    /// Reading a file failed.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
}

/// The result of augmentation functions.
pub type Result<T> = std::result::Result<T, AugmentError>;
