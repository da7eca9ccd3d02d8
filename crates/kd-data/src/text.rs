//! Strict line reading shared by the readers: UTF-8 only, errors name file and line.

use std::path::Path;

use crate::error::{DataError, Result};

/// One line of a text file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number in the file.
    pub number: usize,
    /// The line without its terminator (`\n` or `\r\n`).
    pub text: String,
}

/// Reads `path` and splits it into lines.
///
/// Line terminators are `\n` or `\r\n`; a final line without terminator is
/// kept; a leading UTF-8 byte-order mark is removed. Bytes that are not valid
/// UTF-8 give [`DataError::NonUtf8`] naming the file and the line.
pub fn read_lines(path: &Path) -> Result<Vec<Line>> {
    split_lines(path, &read_regular_file(path)?)
}

/// Fails unless `path` is a regular file (after following symlinks): a FIFO, socket or
/// device given as input would block or never end.
pub fn require_regular_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.is_file() {
        return Ok(());
    }
    let kind = if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file (a FIFO, socket or device)"
    };
    Err(DataError::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{kind}; expected a file"),
        ),
    ))
}

/// Reads the whole of `path`, which must be a regular file ([`require_regular_file`]).
pub fn read_regular_file(path: &Path) -> Result<Vec<u8>> {
    require_regular_file(path)?;
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

/// Splits `bytes` (the content of `path`, used only in errors) into lines,
/// with the same rules as [`read_lines`].
pub fn split_lines(path: &Path, bytes: &[u8]) -> Result<Vec<Line>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut lines = Vec::new();
    if bytes.is_empty() {
        return Ok(lines);
    }
    let mut parts: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    for (i, raw) in parts.into_iter().enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|e| DataError::NonUtf8 {
            path: path.to_path_buf(),
            line: i + 1,
            offset: e.valid_up_to(),
        })?;
        lines.push(Line {
            number: i + 1,
            text: text.to_string(),
        });
    }
    Ok(lines)
}
