//! Writing caches: one shard ([`ShardWriter`]) or a whole cache folder with
//! its manifest ([`CacheWriter`]).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::error::{CacheError, Result};
use crate::manifest::{Backend, Manifest, ShardInfo};
use crate::mmap_shard::MmapShardWriter;
use crate::parquet_write::ParquetShardWriter;
use crate::record::Record;
use crate::targets::TargetSpec;

/// Writer settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterOptions {
    /// Records per shard file before a new one is started (default 100 000).
    pub rows_per_shard: u64,
    /// Parquet: records per row group (default 1000).
    pub row_group_rows: usize,
    /// Parquet: encoded bytes per row group (default 64 MiB); the row group
    /// is cut at whichever limit comes first.
    pub row_group_bytes: usize,
    /// mmap: encoded bytes per zstd block (default 1 MiB).
    pub block_bytes: usize,
    /// zstd level for both backends (default 3).
    pub zstd_level: i32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            rows_per_shard: 100_000,
            row_group_rows: 1000,
            row_group_bytes: 64 << 20,
            block_bytes: 1 << 20,
            zstd_level: 3,
        }
    }
}

#[derive(Debug)]
enum Inner {
    Parquet(Box<ParquetShardWriter>),
    Mmap(Box<MmapShardWriter>),
}

/// Writes one shard file of either backend.
///
/// Records are converted to the spec's precisions when needed
/// ([`Record::conform`]) and checked ([`Record::validate`]). Until
/// [`finish`](Self::finish) the data goes to `name.tmp`, which is removed
/// when finishing fails or the writer is dropped unfinished.
#[derive(Debug)]
pub struct ShardWriter {
    spec: TargetSpec,
    inner: Inner,
}

impl ShardWriter {
    /// Starts the shard `path` for records of `spec`.
    pub fn create(
        path: &Path,
        backend: Backend,
        spec: &TargetSpec,
        options: &WriterOptions,
    ) -> Result<Self> {
        spec.validate()?;
        let inner = match backend {
            Backend::Parquet => Inner::Parquet(Box::new(ParquetShardWriter::create(
                path,
                spec,
                options.row_group_rows,
                options.row_group_bytes,
                options.zstd_level,
            )?)),
            Backend::Mmap => Inner::Mmap(Box::new(MmapShardWriter::create(
                path,
                options.block_bytes,
                options.zstd_level,
            )?)),
        };
        Ok(ShardWriter {
            spec: spec.clone(),
            inner,
        })
    }

    /// Records written so far.
    pub fn rows(&self) -> u64 {
        match &self.inner {
            Inner::Parquet(w) => w.rows(),
            Inner::Mmap(w) => w.rows(),
        }
    }

    /// Appends `record` after converting and checking it.
    pub fn write(&mut self, record: &Record) -> Result<()> {
        let mut r = Cow::Borrowed(record);
        if record.validate(&self.spec).is_err() {
            r.to_mut().conform(&self.spec)?;
        }
        r.validate(&self.spec).map_err(|e| {
            CacheError::Invalid(format!(
                "record (seq_id {}, epoch {}): {e}",
                record.seq_id, record.epoch
            ))
        })?;
        match &mut self.inner {
            Inner::Parquet(w) => w.write(&r),
            Inner::Mmap(w) => w.write(&r),
        }
    }

    /// Completes the file (fsync, atomic rename) and describes it.
    pub fn finish(self) -> Result<ShardInfo> {
        match self.inner {
            Inner::Parquet(w) => w.finish(),
            Inner::Mmap(w) => w.finish(),
        }
    }
}

/// Shard file name: `shard-00000.kdc`, or for a part `part-001-of-004-shard-00000.kdc`.
pub fn shard_name(manifest: &Manifest, index: usize) -> String {
    let ext = manifest.backend.extension();
    match manifest.part {
        Some(p) => format!(
            "part-{:03}-of-{:03}-shard-{index:05}.{ext}",
            p.index, p.count
        ),
        None => format!("shard-{index:05}.{ext}"),
    }
}

/// Writes a cache folder: shards of `rows_per_shard` records, then
/// `manifest.json` (atomically) on [`finish`](Self::finish).
#[derive(Debug)]
pub struct CacheWriter {
    dir: PathBuf,
    manifest: Manifest,
    options: WriterOptions,
    current: Option<ShardWriter>,
}

impl CacheWriter {
    /// Starts a cache in `dir` (created if needed) described by `manifest`
    /// (its `shards` must be empty; they are filled in as shards complete).
    /// Refuses a folder that already holds a manifest.
    pub fn create(dir: &Path, manifest: Manifest, options: WriterOptions) -> Result<Self> {
        if !manifest.shards.is_empty() {
            return Err(CacheError::Invalid(
                "a new cache's manifest must not list shards".into(),
            ));
        }
        manifest.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
        let path = Manifest::path(dir);
        if path.exists() {
            return Err(CacheError::Invalid(format!(
                "{} already exists: refusing to overwrite a cache",
                path.display()
            )));
        }
        Ok(CacheWriter {
            dir: dir.to_path_buf(),
            manifest,
            options,
            current: None,
        })
    }

    /// The manifest so far (shards completed up to now).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Appends a record, starting a new shard when the current one is full.
    pub fn write(&mut self, record: &Record) -> Result<()> {
        if self
            .current
            .as_ref()
            .is_some_and(|w| w.rows() >= self.options.rows_per_shard.max(1))
        {
            self.close_shard()?;
        }
        if self.current.is_none() {
            let name = shard_name(&self.manifest, self.manifest.shards.len());
            self.current = Some(ShardWriter::create(
                &self.dir.join(name),
                self.manifest.backend,
                &self.manifest.targets,
                &self.options,
            )?);
        }
        match self.current.as_mut() {
            Some(w) => w.write(record),
            None => Err(CacheError::Invalid("no open shard".into())),
        }
    }

    fn close_shard(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            let info = w.finish()?;
            self.manifest.shards.push(info);
        }
        Ok(())
    }

    /// Writes the teacher's query/key weights of the `attention_input` layers
    /// (`attention_weights.safetensors`, atomically) and names them in the manifest; a cache
    /// with that target needs them before [`finish`](Self::finish). The layers and widths must
    /// be those of the targets and the teacher config.
    pub fn set_attention_weights(
        &mut self,
        weights: &crate::attention_input::AttentionWeights,
    ) -> Result<()> {
        let Some(a) = &self.manifest.targets.attention_input else {
            return Err(CacheError::Invalid(
                "attention weights given for a cache without attention_input targets".into(),
            ));
        };
        if weights.layers() != a.layers {
            return Err(CacheError::Invalid(format!(
                "attention weights of layers {:?}, the cache's attention_input layers are {:?}",
                weights.layers(),
                a.layers
            )));
        }
        if let Ok((hidden, _)) = self.manifest.attention_shape() {
            if weights.hidden() != hidden {
                return Err(CacheError::Invalid(format!(
                    "attention weights of width {}, the teacher's hidden_size is {hidden}",
                    weights.hidden()
                )));
            }
        }
        self.manifest.attention_weights = Some(crate::attention_input::write(&self.dir, weights)?);
        Ok(())
    }

    /// Completes the last shard and writes `manifest.json`; returns the manifest.
    pub fn finish(mut self) -> Result<Manifest> {
        self.close_shard()?;
        if self.manifest.targets.attention_input.is_some()
            && self.manifest.attention_weights.is_none()
        {
            return Err(CacheError::Invalid(
                "a cache with attention_input targets needs its attention weights \
                 (CacheWriter::set_attention_weights) before the manifest"
                    .into(),
            ));
        }
        self.manifest.save(&self.dir)?;
        Ok(self.manifest)
    }
}
