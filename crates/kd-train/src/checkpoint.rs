//! Atomic, resumable training checkpoints.
//!
//! Layout of a checkpoint directory:
//!
//! ```text
//! <dir>/step-000123/model.safetensors      weights, names as in the VarMap
//! <dir>/step-000123/optimizer.safetensors  AdamW::state_tensors()
//! <dir>/step-000123/trainer_state.json     TrainerState
//! <dir>/latest                             "step-000123"
//! ```
//!
//! A checkpoint is written into a hidden temp directory next to its target,
//! every file is fsynced, and the directory is renamed into place; only then
//! is `latest` replaced (also atomically). A crash at any point leaves the
//! previous complete checkpoint and `latest` intact; leftover temp
//! directories are removed by the next save. One writer per directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loop_state::TrainState;
use crate::optim::AdamW;
use crate::params;
use crate::schedule::Schedule;
use kd_core::fs::{replace_dir, sync_dir, sync_file, write_atomic, write_synced};

/// Weights file inside a checkpoint.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Optimizer state file inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Trainer state file inside a checkpoint.
pub const STATE_FILE: &str = "trainer_state.json";
/// Pointer file naming the newest checkpoint.
pub const LATEST_FILE: &str = "latest";
/// Version written to `trainer_state.json`.
pub const FORMAT_VERSION: u32 = 1;

const TMP_PREFIX: &str = ".tmp-step-";
const OLD_PREFIX: &str = ".old-step-";

/// Contents of `trainer_state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// File format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Loop position and random state.
    pub train: TrainState,
    /// Learning-rate schedule of the run.
    pub schedule: Schedule,
    /// Arbitrary caller data (config, best metric, ...).
    #[serde(default)]
    pub extra: serde_json::Value,
}

impl TrainerState {
    /// State with the current format version.
    pub fn new(train: TrainState, schedule: Schedule, extra: serde_json::Value) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            train,
            schedule,
            extra,
        }
    }
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// Directory it was loaded from.
    pub path: PathBuf,
    /// Model weights by name.
    pub weights: HashMap<String, Tensor>,
    /// Optimizer state tensors.
    pub optimizer: HashMap<String, Tensor>,
    /// Trainer state.
    pub state: TrainerState,
}

impl Checkpoint {
    /// Sets every variable of `varmap` from the checkpoint weights. Missing
    /// tensors, extra tensors and shape mismatches are errors naming the file.
    pub fn restore_weights(&self, varmap: &VarMap) -> Result<()> {
        params::restore(varmap, &self.weights, true)
            .map_err(|e| e.in_file(self.path.join(WEIGHTS_FILE)))
    }

    /// Loads the optimizer state into `optimizer`.
    pub fn restore_optimizer(&self, optimizer: &mut AdamW) -> Result<()> {
        optimizer
            .load_state_tensors(&self.optimizer)
            .map_err(|e| e.in_file(self.path.join(OPTIMIZER_FILE)))
    }
}

/// Saves checkpoints into a directory and keeps the newest few.
#[derive(Debug, Clone)]
pub struct CheckpointManager {
    dir: PathBuf,
    keep_last: usize,
}

impl CheckpointManager {
    /// Manager for `dir` (created if needed) keeping the `keep_last` newest
    /// checkpoints (at least 1).
    pub fn new(dir: impl AsRef<Path>, keep_last: usize) -> Result<Self> {
        if keep_last == 0 {
            return Err(Error::InvalidConfig("keep_last must be >= 1".into()));
        }
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self { dir, keep_last })
    }

    /// Directory holding the checkpoints.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a checkpoint for `state.train.step`, points `latest` at it and
    /// prunes old ones, keeping the `keep_last` highest steps. Returns the
    /// checkpoint directory. Must be called between optimizer steps.
    pub fn save(
        &self,
        varmap: &VarMap,
        optimizer: &AdamW,
        state: &TrainerState,
    ) -> Result<PathBuf> {
        self.remove_leftovers()?;
        let name = step_dir_name(state.train.step);
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{}-{}",
            state.train.step,
            std::process::id()
        ));
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;

        let weights = params::snapshot(varmap);
        write_tensors(&tmp.join(WEIGHTS_FILE), &weights)?;
        write_tensors(&tmp.join(OPTIMIZER_FILE), &optimizer.state_tensors()?)?;
        let state_path = tmp.join(STATE_FILE);
        let json = serde_json::to_vec_pretty(state).map_err(|e| Error::Json {
            path: state_path.clone(),
            cause: e,
        })?;
        write_synced(&state_path, &json)?;
        sync_dir(&tmp)?;

        let target = self.dir.join(&name);
        let old = self.dir.join(format!(
            "{OLD_PREFIX}{}-{}",
            state.train.step,
            std::process::id()
        ));
        replace_dir(&tmp, &target, &old)?;
        sync_dir(&self.dir)?;
        write_atomic(&self.dir.join(LATEST_FILE), format!("{name}\n").as_bytes())?;
        self.prune(state.train.step)?;
        Ok(target)
    }

    /// Loads the newest checkpoint, see [`load_latest`].
    pub fn load_latest(&self, device: &Device) -> Result<Option<Checkpoint>> {
        load_latest(&self.dir, device)
    }

    /// Complete checkpoints in the directory as `(step, path)`, by step.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        list_checkpoints(&self.dir)
    }

    fn prune(&self, current: u64) -> Result<()> {
        let all = self.list()?;
        let mut keep: Vec<u64> = all.iter().rev().take(self.keep_last).map(|c| c.0).collect();
        if !keep.contains(&current) {
            keep.pop();
            keep.push(current);
        }
        for (step, path) in all {
            if !keep.contains(&step) {
                std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }

    fn remove_leftovers(&self) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let p = entry.path();
            if name.starts_with(TMP_PREFIX) || name.starts_with(OLD_PREFIX) {
                std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
            } else if name == "latest.tmp" || name.starts_with(".latest.tmp-") {
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
        Ok(())
    }
}

/// Name of the directory for `step` (`step-000123`).
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:06}")
}

/// Loads the checkpoint named by `<dir>/latest`, or, if that pointer is
/// missing or names a directory that no longer exists, the complete
/// checkpoint with the highest step. `Ok(None)` when there is none (or `dir`
/// does not exist). Tensors are placed on `device`.
pub fn load_latest(dir: impl AsRef<Path>, device: &Device) -> Result<Option<Checkpoint>> {
    let dir = dir.as_ref();
    if !dir.exists() {
        return Ok(None);
    }
    let latest = dir.join(LATEST_FILE);
    if latest.exists() {
        let text = std::fs::read_to_string(&latest).map_err(|e| Error::io(&latest, e))?;
        let name = text.trim();
        if parse_step_dir(name).is_none() {
            return Err(Error::Corrupt {
                path: latest,
                reason: format!("`{name}` is not a checkpoint name"),
            });
        }
        let path = dir.join(name);
        if path.is_dir() {
            return load_checkpoint(&path, device).map(Some);
        }
    }
    match list_checkpoints(dir)?.pop() {
        Some((_, path)) => load_checkpoint(&path, device).map(Some),
        None => Ok(None),
    }
}

/// Loads one checkpoint directory, checking that all files are present and
/// well formed and that the step in `trainer_state.json` matches the
/// directory name.
pub fn load_checkpoint(path: impl AsRef<Path>, device: &Device) -> Result<Checkpoint> {
    let path = path.as_ref().to_path_buf();
    let state_path = path.join(STATE_FILE);
    let bytes = std::fs::read(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state: TrainerState = serde_json::from_slice(&bytes).map_err(|e| Error::Json {
        path: state_path.clone(),
        cause: e,
    })?;
    if state.format_version != FORMAT_VERSION {
        return Err(Error::Corrupt {
            path: state_path,
            reason: format!("unsupported format_version {}", state.format_version),
        });
    }
    let dir_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    if let Some(step) = dir_name.as_deref().and_then(parse_step_dir) {
        if step != state.train.step {
            return Err(Error::Corrupt {
                path: state_path,
                reason: format!("step {} does not match directory", state.train.step),
            });
        }
    }
    let weights = read_tensors(&path.join(WEIGHTS_FILE), device)?;
    let optimizer = read_tensors(&path.join(OPTIMIZER_FILE), device)?;
    Ok(Checkpoint {
        path,
        weights,
        optimizer,
        state,
    })
}

/// Complete checkpoints in `dir` as `(step, path)`, by step (none when `dir` does not exist).
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        if let Some(step) = parse_step_dir(&name.to_string_lossy()) {
            if entry.path().is_dir() {
                out.push((step, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn parse_step_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn write_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    candle_core::safetensors::save(tensors, path).map_err(|e| Error::from(e).in_file(path))?;
    Ok(sync_file(path)?)
}

fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| Error::from(e).in_file(path))
}
