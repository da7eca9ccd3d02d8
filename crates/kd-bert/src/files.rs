//! Opening files that come with a model directory: only regular files of bounded size are
//! read, so a FIFO or device in place of a file cannot block or flood a load.

use std::path::Path;

/// The length of `path` if it is a regular file (symlinks followed) of at most `max_len`
/// bytes; otherwise what is wrong, as a message for an error that names the file.
pub(crate) fn regular_file_len(path: &Path, max_len: u64) -> Result<u64, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(format!(
            "not a regular file ({}); only regular files are read",
            kind(&meta.file_type())
        ));
    }
    if meta.len() > max_len {
        return Err(format!(
            "{} bytes, more than the {} MiB accepted for this file",
            meta.len(),
            max_len >> 20
        ));
    }
    Ok(meta.len())
}

#[cfg(unix)]
fn kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn kind(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}
