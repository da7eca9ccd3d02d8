//! Reading checkpoint tensors from safetensors (memory-mapped, single or sharded) and
//! PyTorch `pytorch_model.bin` files.

use crate::error::{Error, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The weight file of a model directory: `model.safetensors`, a sharded
/// `model.safetensors.index.json`, or `pytorch_model.bin`, in that order of preference.
pub fn find_weights(dir: &Path) -> Result<PathBuf> {
    for name in [
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
    ] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::Checkpoint {
        path: dir.to_path_buf(),
        msg: "no model.safetensors, model.safetensors.index.json or pytorch_model.bin".into(),
    })
}

/// Reads every tensor of a weight file onto `device`, keyed by its name in the file.
pub fn read_tensors(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let err = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".bin") || name.ends_with(".pt") || name.ends_with(".pth") {
        let all = candle_core::pickle::read_all(path)
            .map_err(|e| err(format!("cannot read PyTorch checkpoint: {e}")))?;
        return all
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_device(device)?)))
            .collect();
    }
    let files = if name.ends_with(".index.json") {
        shard_files(path)?
    } else {
        vec![path.to_path_buf()]
    };
    // SAFETY: the files are opened read-only and not modified while mapped; this is the
    // standard way to load large checkpoints without copying them.
    let st = unsafe { MmapedSafetensors::multi(&files) }
        .map_err(|e| err(format!("cannot read safetensors: {e}")))?;
    let mut out = BTreeMap::new();
    for (key, _) in st.tensors() {
        let t = st
            .load(&key, device)
            .map_err(|e| err(format!("tensor {key}: {e}")))?;
        out.insert(key, t);
    }
    Ok(out)
}

pub(crate) fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
        path: index.to_path_buf(),
        msg: format!("invalid index JSON: {e}"),
    })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Checkpoint {
            path: index.to_path_buf(),
            msg: "missing field weight_map".into(),
        })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = map
        .values()
        .filter_map(|f| f.as_str())
        .map(|f| dir.join(f))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}
