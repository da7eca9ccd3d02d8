//! File helpers: atomic writes, temporary files removed on error, positional
//! reads, SHA-256 of files, a hashing writer.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{CacheError, Result};

/// `name.tmp` beside `path` (the name a file has until it is complete).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Fsyncs the folder holding `path`, so a rename into it is durable.
pub fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Folders cannot be opened for syncing on every platform; a failure to
    // open is not an error, a failed sync is.
    if let Ok(f) = File::open(dir) {
        f.sync_all().or_else(|e| match e.kind() {
            io::ErrorKind::InvalidInput | io::ErrorKind::PermissionDenied => Ok(()),
            _ => Err(CacheError::io(dir, e)),
        })?;
    }
    Ok(())
}

/// Fsyncs `tmp`, renames it to `path` and fsyncs the folder.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| CacheError::io(tmp, e))?;
    std::fs::rename(tmp, path).map_err(|e| CacheError::io(path, e))?;
    sync_parent(path)
}

/// A file written under its temporary name (`name.tmp`) until
/// [`commit`](Self::commit) renames it; dropped uncommitted (any error path),
/// it removes the temporary file.
#[derive(Debug)]
pub struct TmpFile {
    tmp: PathBuf,
    path: PathBuf,
    armed: bool,
}

impl TmpFile {
    /// Creates (or truncates) `path.tmp` for reading and writing.
    pub fn create(path: &Path) -> Result<(TmpFile, File)> {
        let tmp = tmp_path(path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| CacheError::io(&tmp, e))?;
        let guard = TmpFile {
            tmp,
            path: path.to_path_buf(),
            armed: true,
        };
        Ok((guard, file))
    }

    /// The temporary name.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// The final name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fsyncs the temporary file, renames it to its final name and fsyncs the
    /// folder. On error the temporary file is removed.
    pub fn commit(mut self) -> Result<()> {
        commit(&self.tmp, &self.path)?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` atomically (`path.tmp`, fsync, rename); on error
/// nothing is left under either name.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let (guard, mut file) = TmpFile::create(path)?;
    file.write_all(bytes)
        .map_err(|e| CacheError::io(guard.tmp(), e))?;
    drop(file);
    guard.commit()
}

/// Reads exactly `buf.len()` bytes of `file` at `offset`, without moving any
/// file position (safe to share `file` between threads).
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let (mut done, mut buf) = (0u64, buf);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(file, buf, offset + done) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    done += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Says why reading `file` (which had `opened_len` bytes when opened) failed:
/// the file changed size since, or the I/O error.
pub fn describe_read_error(file: &File, opened_len: u64, err: &io::Error) -> String {
    match file.metadata() {
        Ok(m) if m.len() != opened_len => format!(
            "the file is now {} bytes, it was {opened_len} when opened (truncated or rewritten \
             while in use?)",
            m.len()
        ),
        _ => format!("read failed: {err}"),
    }
}

/// Lower-case hex SHA-256 of the first `len` bytes of the open `file`
/// (positional reads: the file position is not used).
pub fn sha256_of_open_file(file: &File, len: u64) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        read_exact_at(file, &mut buf[..n], at)?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hex::encode(h.finalize()))
}

/// Lower-case hex SHA-256 of the file at `path`.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| CacheError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| CacheError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// A writer that hashes (SHA-256) and counts what passes through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The inner writer, the hex SHA-256 and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
