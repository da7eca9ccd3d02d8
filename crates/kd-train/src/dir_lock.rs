//! An exclusive, advisory lock on an output directory, so that two runs never write into the
//! same folder at once.
//!
//! The lock is an OS file lock (`flock` on Unix) on `DIR/.kd.lock`: the kernel releases it when
//! the holding process exits for any reason, kill -9 included, so a lock is never stale. The
//! file itself stays behind and records the last holder (pid, command, start time), which is
//! what a refused second run names.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file inside a locked directory.
pub const LOCK_FILE: &str = ".kd.lock";

/// Holds the lock on a directory until dropped.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
}

impl DirLock {
    /// Creates `dir` if needed and takes its lock for `what` (e.g. `"kd train"`); fails at once,
    /// naming the holder, when another process (or another handle in this one) holds it.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    holder.to_string()
                };
                return Err(Error::InvalidConfig(format!(
                    "{} is in use by {holder}; wait for it to finish, or choose another output \
                     directory",
                    dir.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let note = format!(
            "{what} (pid {}, started at unix time {stamp})\n",
            std::process::id()
        );
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            f.write_all(note.as_bytes())?;
            f.flush()
        };
        write(&mut file).map_err(|e| Error::io(&path, e))?;
        Ok(Self { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes the release immediate
        // even if another handle to the same open file survives (e.g. in a forked child).
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_named_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let first = DirLock::acquire(&out, "kd train").unwrap();
        let e = DirLock::acquire(&out, "kd precompute")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is in use by kd train"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains(&out.display().to_string()), "{e}");
        drop(first);
        let again = DirLock::acquire(&out, "kd precompute").unwrap();
        assert!(again.path().ends_with(LOCK_FILE));
    }
}
