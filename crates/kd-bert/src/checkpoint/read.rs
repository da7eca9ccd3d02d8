//! Reading checkpoint tensors from safetensors (memory-mapped, single or sharded) and
//! PyTorch `pytorch_model.bin` files.
//!
//! Weight files are untrusted: only regular files are opened, shard names must stay inside the
//! model directory, and a checkpoint's tensor names, shapes and dtypes are known (and checked
//! against the file's own size) before any tensor data is read, see [`Checkpoint`].

use super::pth::PthCheckpoint;
use crate::error::{Error, Result};
use crate::files::regular_file_len;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Largest `*.index.json` read.
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// The weight file of a model directory: `model.safetensors`, a sharded
/// `model.safetensors.index.json`, or `pytorch_model.bin`, in that order of preference. The
/// first of these names that exists must be a regular file.
pub fn find_weights(dir: &Path) -> Result<PathBuf> {
    for name in [
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
    ] {
        let p = dir.join(name);
        if p.exists() {
            check_regular(&p, u64::MAX)?;
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
    Checkpoint::open(path)?.load(device)
}

/// Refuses anything but a regular file before it is opened (a FIFO would block forever).
fn check_regular(path: &Path, max_len: u64) -> Result<()> {
    regular_file_len(path, max_len)
        .map(|_| ())
        .map_err(|msg| Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
        })
}

/// The shard files a sharded safetensors index (`*.index.json`) names, sorted, without
/// duplicates. Every name must be a relative path inside the index's directory, and every shard
/// a regular file (so hashing or reading the list cannot block on a FIFO).
pub fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let err = |msg: String| Error::Checkpoint {
        path: index.to_path_buf(),
        msg,
    };
    check_regular(index, MAX_INDEX_BYTES)?;
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(format!("invalid index JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| err("missing field weight_map".into()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files = Vec::with_capacity(map.len());
    for (tensor, shard) in map {
        let Some(name) = shard.as_str() else {
            return Err(err(format!(
                "weight_map entry {tensor}: {shard} is not a file name"
            )));
        };
        let inside = Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside || Path::new(name).file_name().is_none() {
            return Err(err(format!(
                "weight_map entry {tensor} -> {name}: a shard must be a file inside the model \
                 directory (no absolute path, no ..)"
            )));
        }
        files.push(dir.join(name));
    }
    files.sort();
    files.dedup();
    for f in &files {
        check_regular(f, u64::MAX)?;
    }
    Ok(files)
}

/// The files holding the weights of `weights` (a weight file as [`find_weights`] returns it):
/// the shards of an index, or the file itself.
pub fn weight_files(weights: &Path) -> Result<Vec<PathBuf>> {
    if is_index(weights) {
        shard_files(weights)
    } else {
        Ok(vec![weights.to_path_buf()])
    }
}

fn is_index(path: &Path) -> bool {
    file_name(path).ends_with(".index.json")
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// Element type and shape of one checkpoint tensor, known before its data is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    /// Shape.
    pub shape: Vec<usize>,
    /// Element type as candle names it (`F32`, `I64`, ...), or as the file does when candle
    /// has no such type.
    pub dtype: String,
    /// Whether the element type is a floating-point one (model parameters must be).
    pub is_float: bool,
}

impl TensorMeta {
    fn of(shape: &[usize], dtype: Option<DType>, name: impl FnOnce() -> String) -> Self {
        Self {
            shape: shape.to_vec(),
            dtype: dtype.map(|d| format!("{d:?}")).unwrap_or_else(name),
            is_float: dtype.is_some_and(|d| d.is_float()),
        }
    }
}

enum Source {
    Safetensors(Vec<(PathBuf, MmapedSafetensors)>),
    Pth(Box<PthCheckpoint>),
}

/// An opened weight file (safetensors, sharded safetensors or PyTorch zip) whose tensor names,
/// shapes and dtypes are known and checked against the file's size, before any data is read.
pub struct Checkpoint {
    path: PathBuf,
    source: Source,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .finish()
    }
}

impl Checkpoint {
    /// Opens a weight file: `*.bin` / `*.pt` / `*.pth` as a PyTorch zip, `*.index.json` as a
    /// sharded safetensors index, anything else as safetensors.
    pub fn open(path: &Path) -> Result<Self> {
        let name = file_name(path);
        let source = if name.ends_with(".bin") || name.ends_with(".pt") || name.ends_with(".pth") {
            check_regular(path, u64::MAX)?;
            Source::Pth(Box::new(PthCheckpoint::open(path)?))
        } else {
            let files = weight_files(path)?;
            let mut shards = Vec::with_capacity(files.len());
            for f in files {
                check_regular(&f, u64::MAX)?;
                // SAFETY: the files are opened read-only and not modified while mapped; this is
                // the standard way to load large checkpoints without copying them.
                let st = unsafe { MmapedSafetensors::new(&f) }.map_err(|e| Error::Checkpoint {
                    path: f.clone(),
                    msg: format!("cannot read safetensors: {e}"),
                })?;
                shards.push((f, st));
            }
            check_unique(path, &shards)?;
            Source::Safetensors(shards)
        };
        Ok(Self {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The weight file (or index) this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor's shape and dtype, by its name in the file.
    pub fn tensors(&self) -> BTreeMap<String, TensorMeta> {
        match &self.source {
            Source::Safetensors(shards) => shards
                .iter()
                .flat_map(|(_, st)| st.tensors())
                .map(|(name, view)| {
                    let dtype = DType::try_from(view.dtype()).ok();
                    let meta =
                        TensorMeta::of(view.shape(), dtype, || format!("{:?}", view.dtype()));
                    (name, meta)
                })
                .collect(),
            Source::Pth(pth) => pth
                .shapes()
                .map(|(name, shape, dtype)| {
                    (
                        name.to_string(),
                        TensorMeta::of(shape, Some(dtype), String::new),
                    )
                })
                .collect(),
        }
    }

    /// Reads every tensor onto `device`, keyed by its name in the file.
    pub fn load(&self, device: &Device) -> Result<BTreeMap<String, Tensor>> {
        match &self.source {
            Source::Pth(pth) => pth.load(device),
            Source::Safetensors(shards) => {
                let mut out = BTreeMap::new();
                for (file, st) in shards {
                    for (key, _) in st.tensors() {
                        let t = st.load(&key, device).map_err(|e| Error::Checkpoint {
                            path: file.clone(),
                            msg: format!("tensor {key}: {e}"),
                        })?;
                        out.insert(key, t);
                    }
                }
                Ok(out)
            }
        }
    }
}

/// A tensor stored in two shards would be read from whichever comes last: refuse it.
fn check_unique(index: &Path, shards: &[(PathBuf, MmapedSafetensors)]) -> Result<()> {
    let mut seen: BTreeMap<String, &Path> = BTreeMap::new();
    for (file, st) in shards {
        for (name, _) in st.tensors() {
            if let Some(first) = seen.insert(name.clone(), file) {
                return Err(Error::Checkpoint {
                    path: index.to_path_buf(),
                    msg: format!(
                        "tensor {name} is stored in both {} and {}",
                        first.display(),
                        file.display()
                    ),
                });
            }
        }
    }
    Ok(())
}
