//! Reading a cache folder through one interface for both backends.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::attention_input::AttentionWeights;

use crate::error::{CacheError, Result};
use crate::manifest::{check_schema, Backend, Manifest};
use crate::mmap_shard::{MmapIter, MmapShard};
use crate::parquet_read::{ParquetIter, ParquetShard};
use crate::record::Record;
use crate::targets::TargetSpec;

/// One opened shard of either backend.
#[derive(Debug)]
pub enum Shard {
    /// A Parquet file.
    Parquet(ParquetShard),
    /// An mmap shard.
    Mmap(MmapShard),
}

impl Shard {
    /// Opens `path` as a shard of `backend` holding `spec` (a Parquet shard
    /// that records other targets is refused). Reads are checked against the
    /// shard's own checksums (mmap blocks, Parquet column chunks and footer);
    /// a Parquet shard written before it carried checksums is not checked here
    /// ([`CacheReader::open`] checks its SHA-256 against the manifest).
    pub fn open(path: &Path, backend: Backend, spec: &TargetSpec) -> Result<Shard> {
        Ok(match backend {
            Backend::Parquet => Shard::Parquet(ParquetShard::open(path, spec)?),
            Backend::Mmap => Shard::Mmap(MmapShard::open(path)?),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        match self {
            Shard::Parquet(s) => s.path(),
            Shard::Mmap(s) => s.path(),
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        match self {
            Shard::Parquet(s) => s.len(),
            Shard::Mmap(s) => s.len(),
        }
    }

    /// Whether the shard has no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record `i` of the shard, checked against `spec`.
    pub fn get(&self, i: usize, spec: &TargetSpec) -> Result<Record> {
        match self {
            Shard::Parquet(s) => s.get(i),
            Shard::Mmap(s) => checked(s.path(), i, s.get(i), spec),
        }
    }

    /// The `(epoch, token count)` of every record, without decoding the records.
    pub fn epochs_and_lengths(&self) -> Result<Vec<(u32, u32)>> {
        match self {
            Shard::Parquet(s) => s.epochs_and_lengths(),
            Shard::Mmap(s) => s.epochs_and_lengths(),
        }
    }

    /// Streams the records in order, checked against `spec`.
    pub fn iter<'a>(&'a self, spec: &'a TargetSpec) -> ShardIter<'a> {
        match self {
            Shard::Parquet(s) => ShardIter::Parquet(s.iter()),
            Shard::Mmap(s) => ShardIter::Mmap {
                iter: MmapIter::new(s),
                spec,
                next: 0,
            },
        }
    }
}

fn checked(path: &Path, i: usize, r: Result<Record>, spec: &TargetSpec) -> Result<Record> {
    let r = r?;
    r.validate(spec)
        .map_err(|e| CacheError::corrupt(path, format!("record {i}"), e.to_string()))?;
    Ok(r)
}

/// Streams the records of one shard.
#[derive(Debug)]
pub enum ShardIter<'a> {
    /// Over a Parquet shard.
    Parquet(ParquetIter<'a>),
    /// Over an mmap shard.
    Mmap {
        /// The block-by-block iterator.
        iter: MmapIter<'a>,
        /// Targets each record is checked against.
        spec: &'a TargetSpec,
        /// Index of the next record.
        next: usize,
    },
}

impl Iterator for ShardIter<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ShardIter::Parquet(it) => it.next(),
            ShardIter::Mmap { iter, spec, next } => {
                let r = iter.next()?;
                let i = *next;
                *next += 1;
                let path = iter.shard().path().to_path_buf();
                Some(checked(&path, i, r, spec))
            }
        }
    }
}

/// A cache folder opened for reading: random access and streaming over all
/// shards, in manifest order.
#[derive(Debug)]
pub struct CacheReader {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
    /// First global record index of each shard, plus the total at the end.
    starts: Vec<usize>,
    /// The query/key weights of the `attention_input` layers, given to every record.
    attention_weights: Option<Arc<AttentionWeights>>,
}

impl CacheReader {
    /// Reads `dir/manifest.json` and opens every shard (mmap or Parquet
    /// footer). Fails, naming the file, on an unsupported schema version, a
    /// missing shard, a size or row count that differs from the manifest, or
    /// a damaged header/footer/index. Parquet shards written before they
    /// carried checksums are checked against the manifest's SHA-256 here (one
    /// read of each file); every other read is checked as it happens.
    pub fn open(dir: &Path) -> Result<CacheReader> {
        let manifest = Manifest::load(dir)?;
        check_schema(&manifest.schema_version, &manifest.targets).map_err(|message| {
            CacheError::Manifest {
                path: Manifest::path(dir),
                message,
            }
        })?;
        if manifest.targets.attention_qk.is_some() || manifest.targets.attention_input.is_some() {
            manifest
                .attention_shape()
                .map_err(|message| CacheError::Manifest {
                    path: Manifest::path(dir),
                    message,
                })?;
        }
        let attention_weights = crate::attention_input::load(dir, &manifest)?.map(Arc::new);
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut starts = vec![0usize];
        for info in &manifest.shards {
            let path = dir.join(&info.file);
            let meta = std::fs::metadata(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    CacheError::corrupt(&path, "file", "listed in manifest.json but missing")
                } else {
                    CacheError::io(&path, e)
                }
            })?;
            if meta.len() != info.bytes {
                return Err(CacheError::corrupt(
                    &path,
                    "file",
                    format!(
                        "{} bytes, manifest.json says {} (truncated or replaced?)",
                        meta.len(),
                        info.bytes
                    ),
                ));
            }
            let shard = Shard::open(&path, manifest.backend, &manifest.targets)?;
            if let Shard::Parquet(p) = &shard {
                // Written before Parquet shards carried checksums: check the
                // whole file, as opened, against the manifest instead.
                if !p.has_checksums() && !p.sha256()?.eq_ignore_ascii_case(&info.sha256) {
                    return Err(CacheError::corrupt(
                        &path,
                        "file",
                        "sha256 differs from manifest.json (damaged or replaced?)",
                    ));
                }
            }
            if shard.len() as u64 != info.rows {
                return Err(CacheError::corrupt(
                    &path,
                    "file",
                    format!("{} records, manifest.json says {}", shard.len(), info.rows),
                ));
            }
            starts.push(starts[starts.len() - 1] + shard.len());
            shards.push(shard);
        }
        Ok(CacheReader {
            dir: dir.to_path_buf(),
            manifest,
            shards,
            starts,
            attention_weights,
        })
    }

    /// The teacher's query/key weights of the `attention_input` layers (checked against the
    /// manifest when opening), which every record read through this reader carries.
    pub fn attention_weights(&self) -> Option<&Arc<AttentionWeights>> {
        self.attention_weights.as_ref()
    }

    fn attach(&self, r: Result<Record>) -> Result<Record> {
        let mut r = r?;
        r.attention_weights = self.attention_weights.clone();
        Ok(r)
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The targets stored.
    pub fn targets(&self) -> &TargetSpec {
        &self.manifest.targets
    }

    /// Number of records over all shards.
    pub fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// Whether the cache has no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of shards.
    pub fn num_shards(&self) -> usize {
        self.shards.len()
    }

    /// Shard `s`.
    pub fn shard(&self, s: usize) -> Option<&Shard> {
        self.shards.get(s)
    }

    /// Global record indices of shard `s`.
    pub fn shard_range(&self, s: usize) -> Range<usize> {
        match (self.starts.get(s), self.starts.get(s + 1)) {
            (Some(&a), Some(&b)) => a..b,
            _ => 0..0,
        }
    }

    /// `(shard, index within the shard)` of global record `i`.
    pub fn locate(&self, i: usize) -> Option<(usize, usize)> {
        if i >= self.len() {
            return None;
        }
        let s = self.starts.partition_point(|&x| x <= i) - 1;
        Some((s, i - self.starts[s]))
    }

    /// Record `i` (global index, manifest order).
    pub fn get(&self, i: usize) -> Result<Record> {
        let (s, j) = self.locate(i).ok_or_else(|| {
            CacheError::Invalid(format!(
                "{}: record {i} out of range ({} records)",
                self.dir.display(),
                self.len()
            ))
        })?;
        self.attach(self.shards[s].get(j, &self.manifest.targets))
    }

    /// Streams every record in order.
    pub fn iter(&self) -> CacheIter<'_> {
        self.iter_shards((0..self.shards.len()).collect())
    }

    /// Streams the records of shard `s` in order.
    pub fn iter_shard(&self, s: usize) -> CacheIter<'_> {
        self.iter_shards(vec![s])
    }

    /// Streams shard after shard in `order` (e.g. a shuffled permutation of
    /// `0..num_shards()`); an index past the last shard yields an error.
    pub fn iter_shards(&self, order: Vec<usize>) -> CacheIter<'_> {
        CacheIter {
            reader: self,
            order: order.into_iter(),
            current: None,
        }
    }
}

/// Streams records over a sequence of shards.
#[derive(Debug)]
pub struct CacheIter<'a> {
    reader: &'a CacheReader,
    order: std::vec::IntoIter<usize>,
    current: Option<ShardIter<'a>>,
}

impl Iterator for CacheIter<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.current.as_mut().and_then(|c| c.next()) {
                return Some(self.reader.attach(r));
            }
            let s = self.order.next()?;
            match self.reader.shards.get(s) {
                Some(shard) => self.current = Some(shard.iter(&self.reader.manifest.targets)),
                None => {
                    self.current = None;
                    return Some(Err(CacheError::Invalid(format!(
                        "no shard {s} (the cache has {})",
                        self.reader.shards.len()
                    ))));
                }
            }
        }
    }
}
