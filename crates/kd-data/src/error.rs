//! The error type shared by every reader and encoder of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while turning text into model inputs.
///
/// Every variant that comes from an input file names the file, and where it
/// makes sense the 1-based line number and the column or field involved.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file or folder could not be read.
    #[error("{path}: {cause}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// A line is not valid UTF-8.
    #[error("{path}:{line}: invalid UTF-8 (byte offset {offset} within the line)")]
    NonUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Byte offset of the first invalid byte within the line.
        offset: usize,
    },
    /// The inputs hold no non-blank line.
    #[error("empty corpus: no non-blank line in {}", display_paths(.inputs))]
    EmptyCorpus {
        /// The inputs as given.
        inputs: Vec<PathBuf>,
    },
    /// A JSONL line is not a JSON object.
    #[error("{path}:{line}: bad JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A JSONL record lacks a field (or the field has the wrong type).
    #[error("{path}:{line}: field `{field}` {problem}; available fields: {}", .available.join(", "))]
    Field {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field asked for.
        field: String,
        /// What is wrong with it ("missing", "is not a string", ...).
        problem: String,
        /// The fields the record has.
        available: Vec<String>,
    },
    /// A TSV file lacks a column asked for.
    #[error("{path}: no column {column}; available columns: {}", .available.join(", "))]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for (a name or an index).
        column: String,
        /// The columns the file has (names, or indices without a header).
        available: Vec<String>,
    },
    /// A TSV row has a different number of fields than the header (or first row).
    #[error("{path}:{line}: expected {expected} tab-separated fields, found {found}")]
    FieldCount {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Fields in the header (or the first row).
        expected: usize,
        /// Fields in this row.
        found: usize,
    },
    /// A label value cannot be read as the label kind asks.
    #[error("{path}:{line}: column {column}: {problem}: {value:?}")]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The label column (name or index).
        column: String,
        /// The offending value.
        value: String,
        /// What was expected.
        problem: String,
    },
    /// A task file holds no example.
    #[error("{path}: no examples")]
    EmptyDataset {
        /// The file.
        path: PathBuf,
    },
    /// A line of a fixed-format file is malformed.
    #[error("{path}:{line}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer lacks a required special token.
    #[error("tokenizer has no token {0:?}")]
    MissingToken(String),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A setting of the task data that cannot work (the message says which).
    #[error("{0}")]
    Setting(String),
    /// A setting or an argument is out of range.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// Result alias of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    /// An [`DataError::Io`] naming `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            cause: source,
        }
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(no inputs)".to_string();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
