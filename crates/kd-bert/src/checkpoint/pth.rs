//! PyTorch zip checkpoints (`pytorch_model.bin`, `*.pt`, `*.pth`), checked against their own
//! size before candle reads them.
//!
//! Opening one reads every zip entry once (so each entry's CRC and length are verified), checks
//! each `data.pkl` with [`pickle_guard`](super::pickle_guard), and checks every tensor record
//! against the storage entry it points into: the dtype and element count of the storage must
//! give the entry's length, and the tensor's bytes (offset + strided extent) must lie inside
//! it; every storage entry must be used by some tensor. Only then does candle's reader parse
//! the pickle and load tensors, each call guarded against panics.

use super::pickle_guard::{self, PickledTensor, MAX_PICKLE_BYTES};
use crate::error::{Error, Result};
use candle_core::pickle::PthTensors;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// A checked PyTorch checkpoint, ready to load.
pub struct PthCheckpoint {
    path: PathBuf,
    tensors: BTreeMap<String, PickledTensor>,
    reader: PthTensors,
}

impl std::fmt::Debug for PthCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PthCheckpoint")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Runs a call into candle's reader, turning an error or a panic into an error on `path`.
fn guarded<T>(path: &Path, what: &str, f: impl FnOnce() -> candle_core::Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(err(path, format!("{what}: {e}"))),
        Err(_) => Err(err(
            path,
            format!("{what}: the PyTorch reader failed on malformed data"),
        )),
    }
}

/// The zip entries of a checkpoint.
struct Entries {
    /// Byte length of every entry, as read.
    sizes: BTreeMap<String, u64>,
    /// Name and bytes of every `data.pkl`.
    pickles: Vec<(String, Vec<u8>)>,
}

/// Reads every zip entry through (verifying its CRC and length), keeping the `data.pkl` ones.
fn read_entries(path: &Path) -> Result<Entries> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| err(path, format!("not a PyTorch zip checkpoint: {e}")))?;
    let names = zip
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<std::result::Result<Vec<String>, _>>()
        .map_err(|e| err(path, format!("zip entry names: {e}")))?;
    let mut sizes = BTreeMap::new();
    let mut pickles = Vec::new();
    for name in names {
        let mut entry = zip
            .by_name(&name)
            .map_err(|e| err(path, format!("zip entry {name}: {e}")))?;
        let declared = entry.size();
        let keep = name.ends_with("data.pkl") || name.ends_with("byteorder");
        let read = if keep {
            if declared > MAX_PICKLE_BYTES {
                return Err(err(
                    path,
                    format!(
                        "{name}: {declared} bytes, more than the {} MiB accepted",
                        MAX_PICKLE_BYTES >> 20
                    ),
                ));
            }
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| err(path, format!("zip entry {name}: {e}")))?;
            let n = bytes.len() as u64;
            if name.ends_with("byteorder") && bytes.trim_ascii() != b"little" {
                return Err(err(
                    path,
                    format!(
                        "{name} is {:?}: only little-endian checkpoints can be read",
                        String::from_utf8_lossy(&bytes)
                    ),
                ));
            }
            if name.ends_with("data.pkl") {
                pickles.push((name.clone(), bytes));
            }
            n
        } else {
            std::io::copy(&mut entry, &mut std::io::sink())
                .map_err(|e| err(path, format!("zip entry {name}: {e}")))?
        };
        if read != declared {
            return Err(err(
                path,
                format!("zip entry {name}: {read} bytes where {declared} are declared"),
            ));
        }
        sizes.insert(name, read);
    }
    Ok(Entries { sizes, pickles })
}

/// Whether dims with their strides, innermost first, are densely packed (as candle's
/// contiguity checks define it: dims of size 0 or 1 may have any stride).
fn dense<'a>(innermost_first: impl Iterator<Item = &'a (usize, usize)>) -> bool {
    let mut acc = 1usize;
    for &(d, s) in innermost_first {
        if d > 1 && s != acc {
            return false;
        }
        acc = acc.saturating_mul(d);
    }
    true
}

/// Checks one tensor record against the length of its storage entry.
fn check_extent(t: &PickledTensor, entry: &str, entry_len: u64) -> std::result::Result<(), String> {
    let size = t.dtype.size_in_bytes() as u64;
    let stated = t.storage_len.checked_mul(size);
    if stated != Some(entry_len) {
        return Err(format!(
            "storage {entry} holds {entry_len} bytes, but its record states {} elements of {:?}",
            t.storage_len, t.dtype
        ));
    }
    if t.shape.len() != t.stride.len() {
        return Err(format!(
            "size {:?} and stride {:?} differ in length",
            t.shape, t.stride
        ));
    }
    let too_big = || {
        format!(
            "size {:?}, stride {:?} at offset {} exceed storage {entry} ({entry_len} bytes)",
            t.shape, t.stride, t.offset
        )
    };
    // Every partial product of the dims stays below the storage length (candle multiplies them
    // unchecked), and so do the element count and the strided extent.
    let mut product = 1u64;
    for &d in &t.shape {
        product = product
            .checked_mul((d as u64).max(1))
            .filter(|&p| p <= entry_len)
            .ok_or_else(too_big)?;
    }
    // candle reads row-major and column-major layouts only.
    let pairs: Vec<(usize, usize)> = t
        .shape
        .iter()
        .copied()
        .zip(t.stride.iter().copied())
        .collect();
    if !dense(pairs.iter().rev()) && !dense(pairs.iter()) {
        return Err(format!(
            "size {:?} with stride {:?} is neither row- nor column-major",
            t.shape, t.stride
        ));
    }
    let numel = if t.shape.contains(&0) { 0 } else { product };
    let mut extent = if numel == 0 { 0u64 } else { 1 };
    if numel > 0 {
        for (&d, &s) in t.shape.iter().zip(&t.stride) {
            extent = (d as u64 - 1)
                .checked_mul(s as u64)
                .and_then(|x| x.checked_add(extent))
                .ok_or_else(too_big)?;
        }
    }
    let end = t
        .offset
        .checked_add(extent.max(numel))
        .and_then(|e| e.checked_mul(size))
        .ok_or_else(too_big)?;
    if end > entry_len {
        return Err(too_big());
    }
    Ok(())
}

impl PthCheckpoint {
    /// Checks `path` and prepares candle's reader over it.
    pub fn open(path: &Path) -> Result<Self> {
        let Entries { sizes, pickles } = read_entries(path)?;
        if pickles.is_empty() {
            return Err(err(path, "no data.pkl: not a PyTorch zip checkpoint"));
        }
        let mut tensors = BTreeMap::new();
        let mut used = BTreeSet::new();
        let mut storage_dirs = Vec::new();
        for (pkl, bytes) in &pickles {
            let dir = pkl.strip_suffix(".pkl").unwrap_or(pkl);
            storage_dirs.push(format!("{dir}/"));
            let found = pickle_guard::scan(bytes).map_err(|e| err(path, format!("{pkl}: {e}")))?;
            for t in found {
                let entry = format!("{dir}/{}", t.storage);
                let len = *sizes.get(&entry).ok_or_else(|| {
                    err(path, format!("tensor {}: no storage entry {entry}", t.name))
                })?;
                check_extent(&t, &entry, len)
                    .map_err(|e| err(path, format!("tensor {}: {e}", t.name)))?;
                used.insert(entry);
                if tensors.insert(t.name.clone(), t.clone()).is_some() {
                    return Err(err(path, format!("tensor {} appears twice", t.name)));
                }
            }
        }
        if tensors.is_empty() {
            return Err(err(path, "no tensors in the state dict"));
        }
        if let Some(unused) = sizes
            .keys()
            .filter(|n| storage_dirs.iter().any(|d| n.starts_with(d.as_str())))
            .find(|n| !used.contains(*n))
        {
            return Err(err(
                path,
                format!("storage {unused} is used by no tensor: the records and storages disagree"),
            ));
        }
        let reader = guarded(path, "cannot read PyTorch checkpoint", || {
            PthTensors::new(path, None)
        })?;
        let ckpt = Self {
            path: path.to_path_buf(),
            tensors,
            reader,
        };
        ckpt.check_reader(&sizes)?;
        Ok(ckpt)
    }

    /// candle's own records must be the checked ones, each inside its storage entry.
    fn check_reader(&self, sizes: &BTreeMap<String, u64>) -> Result<()> {
        let infos = self.reader.tensor_infos();
        let names: BTreeSet<&String> = infos.keys().collect();
        if names != self.tensors.keys().collect() {
            return Err(err(
                &self.path,
                "the PyTorch reader found other tensors than the checked records",
            ));
        }
        for (name, info) in infos {
            let layout = &info.layout;
            let end = layout
                .shape()
                .elem_count()
                .checked_mul(info.dtype.size_in_bytes())
                .and_then(|n| n.checked_add(layout.start_offset()));
            let fits = sizes
                .get(&info.path)
                .is_some_and(|&len| end.is_some_and(|e| e as u64 <= len));
            if !fits {
                return Err(err(
                    &self.path,
                    format!("tensor {name}: does not fit its storage {}", info.path),
                ));
            }
        }
        Ok(())
    }

    /// Name, shape and dtype of every tensor, without reading data.
    pub fn shapes(&self) -> impl Iterator<Item = (&str, &[usize], DType)> {
        self.tensors
            .values()
            .map(|t| (t.name.as_str(), t.shape.as_slice(), t.dtype))
    }

    /// Reads every tensor onto `device`.
    pub fn load(&self, device: &Device) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for name in self.tensors.keys() {
            let what = format!("tensor {name}");
            let t = guarded(&self.path, &what, || self.reader.get(name))?
                .ok_or_else(|| err(&self.path, format!("{what}: not found by the reader")))?;
            let t = t
                .to_device(device)
                .map_err(|e| err(&self.path, format!("{what}: {e}")))?;
            out.insert(name.clone(), t);
        }
        Ok(out)
    }
}
