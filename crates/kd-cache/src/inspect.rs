//! Sizes of a cache per column, in bytes per token.
//!
//! Parquet: the compressed and uncompressed sizes of the column chunks from
//! the file metadata. mmap: each record's encoded size per section (see
//! [`crate::codec::section_sizes`]); the compressed bytes of the blocks are
//! shared out in proportion (an estimate, since zstd compresses sections
//! unevenly). In both, `overhead` is the rest of the files (Parquet footer
//! and indexes; mmap header, block table, record index and footer), so the
//! columns plus the overhead add up to the shard files' size.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::manifest::{Backend, Manifest};
use crate::mmap_shard::MmapShard;
use crate::reader::{CacheReader, Shard};

/// Size of one column (or mmap record section).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSize {
    /// Column name (`input_ids`, `hidden_l6`, ...; int8 scales are counted
    /// with their tensor in mmap shards, as `<name>_scale` columns in Parquet).
    pub name: String,
    /// Bytes on disk (mmap: estimated share of the compressed blocks).
    pub bytes: u64,
    /// Bytes before compression.
    pub raw_bytes: u64,
}

/// What [`inspect`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectReport {
    /// The cache folder.
    pub dir: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// Records.
    pub rows: u64,
    /// Real tokens.
    pub tokens: u64,
    /// Size of all shard files.
    pub file_bytes: u64,
    /// Per column, in schema order.
    pub columns: Vec<ColumnSize>,
    /// File bytes outside the columns.
    pub overhead: u64,
}

impl InspectReport {
    /// Bytes per token of the shard files.
    pub fn bytes_per_token(&self) -> f64 {
        self.file_bytes as f64 / self.tokens.max(1) as f64
    }

    /// Bytes per token of one column, if present.
    pub fn column_bytes_per_token(&self, name: &str) -> Option<f64> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.bytes as f64 / self.tokens.max(1) as f64)
    }
}

fn add(map: &mut Vec<ColumnSize>, name: &str, bytes: u64, raw: u64) {
    match map.iter_mut().find(|c| c.name == name) {
        Some(c) => {
            c.bytes += bytes;
            c.raw_bytes += raw;
        }
        None => map.push(ColumnSize {
            name: name.to_string(),
            bytes,
            raw_bytes: raw,
        }),
    }
}

fn mmap_columns(shard: &MmapShard, out: &mut Vec<ColumnSize>) -> Result<u64> {
    let compressed: u64 = shard.blocks().iter().map(|b| u64::from(b.compressed)).sum();
    let raw_total: u64 = shard.blocks().iter().map(|b| u64::from(b.raw)).sum();
    let mut raw: Vec<(String, u64)> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..shard.len() {
        let r = shard.get(i)?;
        for (name, size) in crate::codec::section_sizes(&r) {
            match index.get(&name) {
                Some(&j) => raw[j].1 += size,
                None => {
                    index.insert(name.clone(), raw.len());
                    raw.push((name, size));
                }
            }
        }
    }
    let mut shares: Vec<u64> = raw
        .iter()
        .map(|(_, r)| (*r as u128 * compressed as u128 / raw_total.max(1) as u128) as u64)
        .collect();
    let given: u64 = shares.iter().sum();
    if let Some(j) = (0..raw.len()).max_by_key(|&j| raw[j].1) {
        shares[j] += compressed - given;
    }
    for ((name, r), b) in raw.iter().zip(shares) {
        add(out, name, b, *r);
    }
    Ok(compressed)
}

/// Sizes per column of the cache in `dir` (decodes every record of mmap
/// shards; reads only metadata of Parquet shards).
pub fn inspect(dir: &Path) -> Result<InspectReport> {
    let reader = CacheReader::open(dir)?;
    let manifest = reader.manifest().clone();
    let mut columns = Vec::new();
    let mut in_columns = 0u64;
    for s in 0..reader.num_shards() {
        match reader.shard(s) {
            Some(Shard::Parquet(p)) => {
                for rg in p.metadata().row_groups() {
                    for c in rg.columns() {
                        let name = c.column_path().parts().first().cloned().unwrap_or_default();
                        let bytes = c.compressed_size().max(0) as u64;
                        add(
                            &mut columns,
                            &name,
                            bytes,
                            c.uncompressed_size().max(0) as u64,
                        );
                        in_columns += bytes;
                    }
                }
            }
            Some(Shard::Mmap(m)) => in_columns += mmap_columns(m, &mut columns)?,
            None => {}
        }
    }
    let file_bytes = manifest.bytes();
    debug_assert!(manifest.backend == Backend::Mmap || in_columns <= file_bytes);
    Ok(InspectReport {
        dir: dir.to_path_buf(),
        rows: manifest.rows(),
        tokens: manifest.tokens(),
        file_bytes,
        overhead: file_bytes.saturating_sub(in_columns),
        columns,
        manifest,
    })
}

fn short_sha(sha: &str) -> String {
    if sha.is_empty() {
        "(not recorded)".into()
    } else {
        sha.chars().take(12).collect::<String>() + ".."
    }
}

fn teacher_line(m: &Manifest) -> String {
    let c = &m.teacher.config;
    let get = |k: &str| match c.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "?".into(),
    };
    let arch = if c.is_object() {
        format!(
            "{} ({} layers, hidden {}, {} heads)",
            get("model_type"),
            get("num_hidden_layers"),
            get("hidden_size"),
            get("num_attention_heads"),
        )
    } else {
        "(no config recorded)".into()
    };
    let source = m
        .teacher
        .source
        .as_ref()
        .map(|s| format!(", from {s}"))
        .unwrap_or_default();
    format!(
        "{arch}, weights sha256 {}{source}",
        short_sha(&m.teacher.weights_sha256)
    )
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.manifest;
        let tok = self.tokens.max(1) as f64;
        writeln!(
            f,
            "cache {} ({}, {} shards, {})",
            self.dir.display(),
            m.backend,
            m.shards.len(),
            m.schema_version
        )?;
        writeln!(f, "teacher   {}", teacher_line(m))?;
        writeln!(f, "tokenizer sha256 {}", short_sha(&m.tokenizer_sha256))?;
        writeln!(f, "targets   {}", m.targets)?;
        if let (Some(w), Some(a)) = (&m.attention_weights, &m.targets.attention_input) {
            writeln!(
                f,
                "weights   {}: query/key of layers {:?}, {} bytes once per cache ({:.1} \
                 bytes/token over these tokens), sha256 {}",
                w.file,
                a.layers,
                w.bytes,
                w.bytes as f64 / tok,
                short_sha(&w.sha256)
            )?;
        }
        if let Some(p) = m.part {
            writeln!(
                f,
                "part      {}/{} (merge the parts before training)",
                p.index, p.count
            )?;
        }
        writeln!(
            f,
            "records   {} ({} epochs), tokens {}, {:.1} tokens/record",
            self.rows,
            m.epochs,
            self.tokens,
            self.tokens as f64 / self.rows.max(1) as f64
        )?;
        writeln!(
            f,
            "size      {} bytes, {:.1} bytes/token",
            self.file_bytes,
            self.bytes_per_token()
        )?;
        let est = if m.backend == Backend::Mmap {
            " (est.)"
        } else {
            ""
        };
        writeln!(
            f,
            "\n{:<22} {:>14} {:>12} {:>7} {:>12}",
            "column",
            "bytes",
            format!("B/token{est}"),
            "share",
            "raw B/token"
        )?;
        let total = self.file_bytes.max(1) as f64;
        for c in &self.columns {
            writeln!(
                f,
                "{:<22} {:>14} {:>12.2} {:>6.1}% {:>12.2}",
                c.name,
                c.bytes,
                c.bytes as f64 / tok,
                100.0 * c.bytes as f64 / total,
                c.raw_bytes as f64 / tok
            )?;
        }
        writeln!(
            f,
            "{:<22} {:>14} {:>12.2} {:>6.1}%",
            "(overhead)",
            self.overhead,
            self.overhead as f64 / tok,
            100.0 * self.overhead as f64 / total
        )?;
        writeln!(
            f,
            "{:<22} {:>14} {:>12.2} {:>6.1}%",
            "total",
            self.file_bytes,
            self.bytes_per_token(),
            100.0
        )
    }
}
