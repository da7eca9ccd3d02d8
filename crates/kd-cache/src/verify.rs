//! Full check of a cache: every checksum, then every record decoded.

use std::fmt;
use std::path::Path;

use crate::error::{CacheError, Result};
use crate::manifest::{check_schema, Manifest, ShardInfo};
use crate::reader::Shard;
use kd_core::fs::sha256_file;

/// What was checked in one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardReport {
    /// File name.
    pub file: String,
    /// Records decoded.
    pub rows: u64,
    /// Tokens in them.
    pub tokens: u64,
    /// File size.
    pub bytes: u64,
}

/// The result of a successful [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Per shard, in manifest order.
    pub shards: Vec<ShardReport>,
    /// Records over all shards.
    pub rows: u64,
    /// Tokens over all shards.
    pub tokens: u64,
    /// Bytes of all shard files.
    pub bytes: u64,
    /// Whether a token-count file was listed and its checksum matched.
    pub token_counts_checked: bool,
    /// Whether an attention-weights file was listed and its size, checksum and tensors
    /// matched.
    pub attention_weights_checked: bool,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ok: {} shards, {} records, {} tokens, {} bytes{}{}",
            self.shards.len(),
            self.rows,
            self.tokens,
            self.bytes,
            if self.token_counts_checked {
                ", token counts checked"
            } else {
                ""
            },
            if self.attention_weights_checked {
                ", attention weights checked"
            } else {
                ""
            }
        )?;
        for s in &self.shards {
            writeln!(
                f,
                "  {}: {} records, {} tokens, {} bytes",
                s.file, s.rows, s.tokens, s.bytes
            )?;
        }
        Ok(())
    }
}

/// Decodes every record of `shard`; returns (rows, tokens) or the first error.
fn decode_all(path: &Path, manifest: &Manifest) -> Result<(u64, u64)> {
    let shard = Shard::open(path, manifest.backend, &manifest.targets)?;
    // Query/key projections must have the teacher's width (2 x hidden_size per token).
    let qk_width = match &manifest.targets.attention_qk {
        Some(_) => Some(
            manifest
                .attention_shape()
                .map_err(|m| CacheError::Manifest {
                    path: path.with_file_name(crate::manifest::MANIFEST_FILE),
                    message: m,
                })?
                .0
                * 2,
        ),
        None => None,
    };
    // Attention inputs must have the teacher's width (hidden_size per token).
    let input_width = match &manifest.targets.attention_input {
        Some(_) => qk_width
            .map(|w| w / 2)
            .or(manifest.attention_shape().ok().map(|s| s.0)),
        None => None,
    };
    let (mut rows, mut tokens) = (0u64, 0u64);
    for r in shard.iter(&manifest.targets) {
        let r = r?;
        if let Some(want) = qk_width {
            for l in &r.attention_qk {
                let w = crate::qk::width(&l.values, r.len()).unwrap_or(0);
                if !r.is_empty() && w != want {
                    return Err(CacheError::corrupt(
                        path,
                        format!("record {rows}"),
                        format!(
                            "attention_qk layer {} holds {w} values per token, expected \
                             2 x hidden_size = {want}",
                            l.layer
                        ),
                    ));
                }
            }
        }
        if let Some(want) = input_width {
            for l in &r.attention_input {
                let w = crate::attention_input::width(&l.values, r.len()).unwrap_or(0);
                if !r.is_empty() && w != want {
                    return Err(CacheError::corrupt(
                        path,
                        format!("record {rows}"),
                        format!(
                            "attention_input layer {} holds {w} values per token, expected \
                             hidden_size = {want}",
                            l.layer
                        ),
                    ));
                }
            }
        }
        rows += 1;
        tokens += r.input_ids.len() as u64;
    }
    Ok((rows, tokens))
}

fn check_shard(dir: &Path, manifest: &Manifest, info: &ShardInfo) -> Result<ShardReport> {
    let path = dir.join(&info.file);
    let meta = std::fs::metadata(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CacheError::corrupt(&path, "file", "listed in manifest.json but missing")
        } else {
            CacheError::io(&path, e)
        }
    })?;
    let sha = sha256_file(&path)?;
    if meta.len() != info.bytes || !sha.eq_ignore_ascii_case(&info.sha256) {
        // Say where the damage is when the decoder can tell.
        let where_ = match decode_all(&path, manifest) {
            Err(CacheError::Corrupt {
                location, message, ..
            }) => format!("; first bad: {location}: {message}"),
            Err(e) => format!("; first bad: {e}"),
            Ok(_) => "; every record still decodes".to_string(),
        };
        return Err(CacheError::corrupt(
            &path,
            "file",
            format!(
                "{} bytes with sha256 {}, manifest.json says {} bytes with sha256 {}{where_}",
                meta.len(),
                short(&sha),
                info.bytes,
                short(&info.sha256)
            ),
        ));
    }
    let (rows, tokens) = decode_all(&path, manifest)?;
    if rows != info.rows || tokens != info.tokens {
        return Err(CacheError::corrupt(
            &path,
            "file",
            format!(
                "{rows} records / {tokens} tokens, manifest.json says {} / {}",
                info.rows, info.tokens
            ),
        ));
    }
    Ok(ShardReport {
        file: info.file.clone(),
        rows,
        tokens,
        bytes: meta.len(),
    })
}

fn short(sha: &str) -> String {
    sha.chars().take(16).collect::<String>() + ".."
}

/// Checks the manifest, the token-count file checksum, every shard's size
/// and SHA-256 against the manifest (mmap shards also carry a CRC-32 per
/// block and for the index), and decodes every record. The error names the
/// first bad file and, where known, the record or row group.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let manifest = Manifest::load(dir)?;
    check_schema(&manifest.schema_version, &manifest.targets).map_err(|message| {
        CacheError::Manifest {
            path: Manifest::path(dir),
            message,
        }
    })?;
    let mut token_counts_checked = false;
    if let Some(tc) = &manifest.token_counts {
        let path = dir.join(&tc.file);
        let sha = sha256_file(&path)?;
        if !sha.eq_ignore_ascii_case(&tc.sha256) {
            return Err(CacheError::corrupt(
                &path,
                "file",
                format!(
                    "sha256 {} != {} in manifest.json",
                    short(&sha),
                    short(&tc.sha256)
                ),
            ));
        }
        token_counts_checked = true;
    }
    let attention_weights_checked = crate::attention_input::load(dir, &manifest)?.is_some();
    let mut report = VerifyReport {
        shards: Vec::new(),
        rows: 0,
        tokens: 0,
        bytes: 0,
        token_counts_checked,
        attention_weights_checked,
    };
    for info in &manifest.shards {
        let s = check_shard(dir, &manifest, info)?;
        report.rows += s.rows;
        report.tokens += s.tokens;
        report.bytes += s.bytes;
        report.shards.push(s);
    }
    Ok(report)
}
