//! The fingerprint of a checkpoint's weights, as a teacher cache records its teacher: a
//! change to any weight file, including one shard of a sharded checkpoint, changes it.

use super::read::{find_weights, shard_files};
use crate::error::{Error, Result};
use kd_core::fs::sha256_file;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The sha256 (hex) of the weights of `path`, a model directory (its weight file as
/// [`find_weights`] picks it) or a weight file.
///
/// A single file (`model.safetensors`, `pytorch_model.bin`) hashes to the sha256 of its bytes,
/// so fingerprints written before sharded checkpoints were covered stay valid. A sharded
/// `*.index.json` hashes to the sha256 over a version tag, the index file's sha256, and the
/// name and sha256 of every shard the index names, in sorted order: changing, swapping or
/// renaming any shard changes the fingerprint.
pub fn weights_sha256(path: &Path) -> Result<String> {
    let file = if path.is_dir() {
        find_weights(path)?
    } else {
        path.to_path_buf()
    };
    let is_index = file
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".index.json"));
    if !is_index {
        return Ok(sha256_file(&file)?);
    }
    let mut h = Sha256::new();
    h.update(b"kd-bert/sharded-weights/v1\0");
    h.update(sha256_file(&file)?.as_bytes());
    for shard in shard_files(&file)? {
        let name = shard
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Checkpoint {
                path: file.clone(),
                msg: format!("shard {} has no UTF-8 file name", shard.display()),
            })?;
        h.update(b"\0");
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(sha256_file(&shard)?.as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}
