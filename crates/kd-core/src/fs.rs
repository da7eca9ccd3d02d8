//! Durable file writes and file hashing.
//!
//! A file is written under its temporary name (`name.tmp`, beside it) and renamed into place
//! once complete and fsynced; the folder is fsynced after the rename, so a crash leaves either
//! the old file or the new one, never a partial one. Every error names its file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// An I/O error on a named file or folder.
#[derive(Debug)]
pub struct FsError {
    /// The file or folder.
    pub path: PathBuf,
    /// The underlying error.
    pub cause: io::Error,
}

impl FsError {
    /// An I/O error on `path`.
    pub fn new(path: impl Into<PathBuf>, cause: io::Error) -> Self {
        FsError {
            path: path.into(),
            cause,
        }
    }
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.cause)
    }
}

impl std::error::Error for FsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// The result of the file helpers.
pub type Result<T> = std::result::Result<T, FsError>;

fn at(path: &Path) -> impl FnOnce(io::Error) -> FsError + '_ {
    move |e| FsError::new(path, e)
}

/// `name.tmp` beside `path` (the name a file has until it is complete).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Flushes a file's data and metadata to disk.
pub fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(at(path))
}

/// Flushes a folder's entry list to disk, so renames into it are durable. Where folders cannot
/// be synced (other platforms, some file systems) this does nothing.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let f = File::open(dir).map_err(at(dir))?;
        f.sync_all().or_else(|e| match e.kind() {
            io::ErrorKind::InvalidInput | io::ErrorKind::PermissionDenied => Ok(()),
            _ => Err(FsError::new(dir, e)),
        })?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Fsyncs the folder holding `path`.
pub fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => sync_dir(d),
        _ => sync_dir(Path::new(".")),
    }
}

/// Fsyncs `tmp`, renames it to `path` and fsyncs the folder.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    sync_file(tmp)?;
    std::fs::rename(tmp, path).map_err(at(path))?;
    sync_parent(path)
}

/// Writes `bytes` to `path` (created or truncated) and fsyncs it; no rename.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(at(path))?;
    f.write_all(bytes).map_err(at(path))?;
    f.sync_all().map_err(at(path))
}

/// A file written under its temporary name (`name.tmp`) until [`commit`](Self::commit)
/// renames it; dropped uncommitted (any error path), it removes the temporary file.
#[derive(Debug)]
pub struct TmpFile {
    tmp: PathBuf,
    path: PathBuf,
    armed: bool,
}

impl TmpFile {
    /// Guards `path.tmp` without creating it (for writers that open the file themselves).
    pub fn guard(path: &Path) -> TmpFile {
        TmpFile {
            tmp: tmp_path(path),
            path: path.to_path_buf(),
            armed: true,
        }
    }

    /// Creates (or truncates) `path.tmp` for reading and writing.
    pub fn create(path: &Path) -> Result<(TmpFile, File)> {
        let guard = TmpFile::guard(path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&guard.tmp)
            .map_err(at(&guard.tmp))?;
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

    /// Fsyncs the temporary file, renames it to its final name and fsyncs the folder. On
    /// error the temporary file is removed.
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

/// Writes `bytes` to `path` atomically (`path.tmp`, fsync, rename, fsync of the folder); on
/// error nothing is left under either name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let (guard, mut file) = TmpFile::create(path)?;
    file.write_all(bytes).map_err(at(guard.tmp()))?;
    drop(file);
    guard.commit()
}

/// Writes `path` atomically through `write`, which is handed the temporary name to create
/// (for writers that only take a path); on error the temporary is removed.
pub fn write_atomic_with<E: From<FsError>>(
    path: &Path,
    write: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let guard = TmpFile::guard(path);
    write(guard.tmp())?;
    guard.commit()?;
    Ok(())
}

/// Moves the finished folder `tmp` to `target`: an existing `target` is first renamed to
/// `old` and removed once `tmp` is in place.
pub fn replace_dir(tmp: &Path, target: &Path, old: &Path) -> Result<()> {
    if target.exists() {
        std::fs::rename(target, old).map_err(at(target))?;
        std::fs::rename(tmp, target).map_err(at(target))?;
        std::fs::remove_dir_all(old).map_err(at(old))
    } else {
        std::fs::rename(tmp, target).map_err(at(target))
    }
}

/// Reads exactly `buf.len()` bytes of `file` at `offset`, without moving any file position
/// (safe to share `file` between threads).
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

/// Says why reading `file` (which had `opened_len` bytes when opened) failed: the file changed
/// size since, or the I/O error.
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

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of the file at `path`, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(at(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(at(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Lower-case hex SHA-256 of the first `len` bytes of the open `file` (positional reads: the
/// file position is not used).
pub fn sha256_of_open_file(file: &File, len: u64) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        read_exact_at(file, &mut buf[..n], done)?;
        h.update(&buf[..n]);
        done += n as u64;
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
