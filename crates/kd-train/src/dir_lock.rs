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
        // The holder removes the file when it lets go; a file locked after it was removed (or
        // replaced) locks nothing, so the lock counts only once the path still names it.
        let mut file = loop {
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
                        "{} is in use by {holder}; wait for it to finish, or choose another \
                         output directory",
                        dir.display()
                    )));
                }
                Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
            if same_file(&file, &path) {
                break file;
            }
        };
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

/// Whether `path` still names the open `file` (same device and inode).
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // The folder is left as the run made it: the file goes, then the lock (a process
        // killed before this leaves the file, whose lock the kernel has already released).
        let _ = std::fs::remove_file(&self.path);
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
        assert!(
            !out.join(LOCK_FILE).exists(),
            "the lock file outlived its holder"
        );
        let again = DirLock::acquire(&out, "kd precompute").unwrap();
        assert!(again.path().ends_with(LOCK_FILE));
        drop(again);
        // A lock file left by a killed holder is taken over.
        std::fs::write(out.join(LOCK_FILE), "kd train (pid 1)").unwrap();
        let taken = DirLock::acquire(&out, "kd train").unwrap();
        let note = std::fs::read_to_string(taken.path()).unwrap();
        assert!(
            note.contains(&format!("pid {}", std::process::id())),
            "{note}"
        );
    }
}
