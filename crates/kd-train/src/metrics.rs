//! JSON-lines metrics log: one JSON object per line, flushed after each line.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A training-step record. Fields set to `None` or empty maps are omitted.
/// Non-finite floats are written as `null` by `serde_json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimizer steps completed.
    pub step: u64,
    /// Epoch of the step.
    pub epoch: u64,
    /// Learning rate used for the step.
    pub lr: f64,
    /// Total loss.
    pub loss: f64,
    /// Individual loss terms (e.g. `kd`, `mlm`, `hidden`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub terms: BTreeMap<String, f64>,
    /// Global gradient norm before clipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Throughput in (non-padding) tokens per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    /// Seconds since the start of the run.
    pub elapsed_s: f64,
}

/// Appending JSON-lines writer.
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Opens `path` for appending, creating it and its parent directories. If
    /// the file ends with an incomplete line (e.g. after a crash), a newline
    /// is added so the next record starts on its own line.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let io = |e| Error::io(&path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1)).map_err(io)?;
            file.read_exact(&mut last).map_err(io)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(io)?;
            }
        }
        Ok(Self { path, file })
    }

    /// Opens `path` for a run resumed after `step`: lines whose `step` field
    /// is greater than `step` (written after the checkpoint being resumed) and
    /// unparsable lines are dropped first, then the file is opened for
    /// appending. The file is rewritten atomically.
    pub fn open_resumed(path: impl AsRef<Path>, step: u64) -> Result<Self> {
        let path = path.as_ref();
        if path.exists() {
            truncate_after_step(path, step)?;
        }
        Self::open(path)
    }

    /// Path of the log.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `record` (which must serialise to a JSON object) as one line
    /// and flushes it.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let value = serde_json::to_value(record).map_err(|e| Error::Json {
            path: self.path.clone(),
            cause: e,
        })?;
        if !value.is_object() {
            return Err(Error::InvalidConfig(
                "metrics record must be a JSON object".into(),
            ));
        }
        let mut line = value.to_string();
        line.push('\n');
        let io = |e| Error::io(&self.path, e);
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.flush().map_err(io)
    }
}

/// Reads every line of a metrics log as a JSON value.
pub fn read_metrics(path: impl AsRef<Path>) -> Result<Vec<serde_json::Value>> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(&line).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            cause: e,
        })?;
        out.push(v);
    }
    Ok(out)
}

fn truncate_after_step(path: &Path, step: u64) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v.get("step")
            .and_then(|s| s.as_u64())
            .is_some_and(|s| s > step)
        {
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    Ok(kd_core::fs::write_atomic(path, kept.as_bytes())?)
}
