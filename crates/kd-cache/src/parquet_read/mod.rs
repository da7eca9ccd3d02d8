//! Reading Parquet shards: row-group random access and streaming.
//!
//! Every read is checked: the footer's CRC-32 when opening, and each column
//! chunk's CRC-32 before it is decoded, on the very bytes decoded (read once
//! from the file opened with the shard). Shards written before checksums
//! existed have none to check here; [`CacheReader`](crate::CacheReader)
//! checks their SHA-256 against the manifest when opening them.
//!
//! Decoding runs under `catch_unwind`, so a damaged file that trips a panic
//! inside the Parquet decoder still comes back as an error naming the file
//! and row group.

mod decode;
mod guard;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray};
use arrow::datatypes::UInt32Type;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::reader::ChunkReader;

use crate::error::{CacheError, Result};
use crate::parquet_checksums::{
    check_entry, check_footer_crc, read_checked, Checksums, FileChunks,
};
use crate::record::Record;
use crate::targets::TargetSpec;
use decode::{column, decode_row};
use guard::guarded;
use kd_core::fs::{describe_read_error, read_exact_at, sha256_of_open_file};

/// Rows decoded per batch while streaming.
const BATCH_ROWS: usize = 64;

/// A Parquet shard opened for reading.
pub struct ParquetShard {
    path: PathBuf,
    spec: TargetSpec,
    /// The file as opened; every read goes to it.
    file: Arc<File>,
    /// Its size when opened.
    file_len: u64,
    meta: ArrowReaderMetadata,
    /// The checksums of the footer's entry (`None`: written without).
    checksums: Option<Checksums>,
    /// First row of each row group, plus the total at the end.
    starts: Vec<usize>,
    cache: Mutex<Option<(usize, Arc<Vec<Record>>)>>,
}

impl std::fmt::Debug for ParquetShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetShard")
            .field("path", &self.path)
            .field("rows", &self.len())
            .finish()
    }
}

impl ParquetShard {
    /// Opens `path` for records of `spec`: reads its footer once, checks its
    /// CRC-32 (when the shard has checksums) and that the shard holds the
    /// targets of `spec`.
    pub fn open(path: &Path, spec: &TargetSpec) -> Result<Self> {
        let corrupt = |m: String| CacheError::corrupt(path, "footer", m);
        let file = File::open(path).map_err(|e| CacheError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| CacheError::io(path, e))?.len();
        let footer = read_footer(&file, file_len).map_err(corrupt)?;
        // Checked before it is decoded: damaged bytes never reach the decoder.
        let entry_at = check_footer_crc(&footer).map_err(corrupt)?;
        let (meta, checksums) = guarded(|| {
            let meta =
                ParquetMetaDataReader::decode_metadata(&footer).map_err(|e| e.to_string())?;
            let checksums = check_entry(&footer, entry_at, &meta)?;
            let meta = ArrowReaderMetadata::try_new(Arc::new(meta), ArrowReaderOptions::new())
                .map_err(|e| e.to_string())?;
            Ok((meta, checksums))
        })
        .map_err(corrupt)?;
        let targets = meta.schema().metadata().get("kd.targets");
        if targets.is_some_and(|t| *t != spec.to_string()) {
            return Err(corrupt(format!(
                "holds targets `{}`, expected `{spec}`",
                targets.map_or("", |t| t.as_str())
            )));
        }
        let mut starts = vec![0usize];
        for rg in meta.metadata().row_groups() {
            let total = usize::try_from(rg.num_rows())
                .ok()
                .and_then(|rows| starts[starts.len() - 1].checked_add(rows))
                .ok_or_else(|| corrupt(format!("row count {}", rg.num_rows())))?;
            starts.push(total);
        }
        Ok(ParquetShard {
            path: path.to_path_buf(),
            spec: spec.clone(),
            file: Arc::new(file),
            file_len,
            meta,
            checksums,
            starts,
            cache: Mutex::new(None),
        })
    }

    /// Whether the shard carries checksums (every shard written since they
    /// exist); without, reads are not checked here.
    pub fn has_checksums(&self) -> bool {
        self.checksums.is_some()
    }

    /// Lower-case hex SHA-256 of the file as opened (read through the open
    /// file, so it describes the bytes this shard reads).
    pub fn sha256(&self) -> Result<String> {
        sha256_of_open_file(&self.file, self.file_len).map_err(|e| {
            let m = describe_read_error(&self.file, self.file_len, &e);
            CacheError::corrupt(&self.path, "file", m)
        })
    }

    /// A decoder over row group `rg`, columns `roots` (top-level fields;
    /// `None`: all), `batch_rows` rows at a time; with checksums, the column
    /// chunks are read and checked first.
    fn decoder(
        &self,
        rg: usize,
        roots: Option<&[usize]>,
        batch_rows: usize,
    ) -> std::result::Result<ParquetRecordBatchReader, String> {
        let descr = self.meta.parquet_schema();
        let mask = roots.map_or(ProjectionMask::all(), |r| {
            ProjectionMask::roots(descr, r.iter().copied())
        });
        let decoder = Decoder {
            shard: self,
            rg,
            mask,
            batch_rows,
        };
        match &self.checksums {
            Some(sums) => {
                let leaves: Vec<usize> = (0..descr.num_columns())
                    .filter(|&c| decoder.mask.leaf_included(c))
                    .collect();
                let meta = self.meta.metadata();
                decoder.build(read_checked(
                    &self.file,
                    self.file_len,
                    meta,
                    sums,
                    rg,
                    &leaves,
                )?)
            }
            None => decoder.build(FileChunks {
                file: self.file.clone(),
                len: self.file_len,
            }),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// Whether the shard has no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of row groups.
    pub fn row_groups(&self) -> usize {
        self.starts.len() - 1
    }

    /// The Parquet metadata (row groups, column chunk sizes).
    pub fn metadata(&self) -> &parquet::file::metadata::ParquetMetaData {
        self.meta.metadata()
    }

    /// The row group holding row `i`.
    pub fn row_group_of(&self, i: usize) -> Option<usize> {
        if i >= self.len() {
            return None;
        }
        Some(self.starts.partition_point(|&s| s <= i) - 1)
    }

    /// Every record of row group `rg` (the last one decoded is cached).
    pub fn row_group(&self, rg: usize) -> Result<Arc<Vec<Record>>> {
        if let Ok(g) = self.cache.lock() {
            if let Some((c, recs)) = g.as_ref() {
                if *c == rg {
                    return Ok(recs.clone());
                }
            }
        }
        let mut out = Vec::new();
        for batch in self.batches(rg, usize::MAX)? {
            out.extend(batch?);
        }
        let out = Arc::new(out);
        if let Ok(mut g) = self.cache.lock() {
            *g = Some((rg, out.clone()));
        }
        Ok(out)
    }

    /// Record `i` (decodes its row group unless it is the cached one).
    pub fn get(&self, i: usize) -> Result<Record> {
        let rg = self.row_group_of(i).ok_or_else(|| {
            CacheError::corrupt(
                &self.path,
                format!("row {i}"),
                format!("out of range ({} rows)", self.len()),
            )
        })?;
        let recs = self.row_group(rg)?;
        recs.get(i - self.starts[rg]).cloned().ok_or_else(|| {
            CacheError::corrupt(
                &self.path,
                format!("row {i} (row group {rg})"),
                "row group holds fewer rows than its metadata says",
            )
        })
    }

    /// Decoded batches of row group `rg`, `batch_rows` rows at a time.
    fn batches(&self, rg: usize, batch_rows: usize) -> Result<RowGroupBatches<'_>> {
        let rows = self.starts.get(rg + 1).copied().unwrap_or(0) - self.starts[rg];
        let reader = guarded(|| self.decoder(rg, None, batch_rows.min(rows)))
            .map_err(|m| CacheError::corrupt(&self.path, format!("row group {rg}"), m))?;
        Ok(RowGroupBatches {
            shard: self,
            rg,
            next_row: self.starts[rg],
            reader: Some(reader),
        })
    }

    fn decode_batch(
        &self,
        batch: &RecordBatch,
        first_row: usize,
        rg: usize,
    ) -> Result<Vec<Record>> {
        let mut out = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let row = first_row + i;
            let loc = || format!("row {row} (row group {rg})");
            let r = guarded(|| decode_row(batch, i, &self.spec))
                .map_err(|m| CacheError::corrupt(&self.path, loc(), m))?;
            r.validate(&self.spec)
                .map_err(|e| CacheError::corrupt(&self.path, loc(), e.to_string()))?;
            out.push(r);
        }
        Ok(out)
    }

    /// The `(epoch, token count)` of every record, reading only the `epoch` and `input_ids`
    /// columns (a small fraction of a shard that holds hidden states).
    pub fn epochs_and_lengths(&self) -> Result<Vec<(u32, u32)>> {
        let mut out = Vec::with_capacity(self.len());
        for rg in 0..self.row_groups() {
            let loc = format!("row group {rg}, columns epoch, input_ids");
            guarded(|| self.epochs_and_lengths_of(rg, &mut out))
                .map_err(|m| CacheError::corrupt(&self.path, loc, m))?;
        }
        Ok(out)
    }

    /// Appends the `(epoch, token count)` of the records of row group `rg` to `out`.
    fn epochs_and_lengths_of(
        &self,
        rg: usize,
        out: &mut Vec<(u32, u32)>,
    ) -> std::result::Result<(), String> {
        let schema = self.meta.schema();
        let roots = ["epoch", "input_ids"].map(|c| {
            schema
                .index_of(c)
                .map_err(|_| format!("column `{c}` is missing"))
        });
        let roots = [roots[0].clone()?, roots[1].clone()?];
        let expected = self.starts[rg + 1];
        for batch in self.decoder(rg, Some(&roots), 8192)? {
            let b = batch.map_err(|e| e.to_string())?;
            let epoch = column(&b, "epoch")?
                .as_primitive_opt::<UInt32Type>()
                .ok_or("column `epoch` is not uint32")?;
            let ids = column(&b, "input_ids")?
                .as_list_opt::<i32>()
                .ok_or("column `input_ids` is not a list")?;
            let offsets = ids.value_offsets();
            for i in 0..b.num_rows() {
                if epoch.is_null(i) || ids.is_null(i) {
                    return Err(format!("row {}: epoch or input_ids is null", out.len()));
                }
                let len = offsets[i + 1] - offsets[i];
                let len =
                    u32::try_from(len).map_err(|_| format!("row {}: length {len}", out.len()))?;
                out.push((epoch.value(i), len));
            }
        }
        if out.len() != expected {
            return Err(format!(
                "{} rows up to here, the footer says {expected}",
                out.len()
            ));
        }
        Ok(())
    }

    /// Streams every record in order, row group by row group. After an error
    /// in a row group the iteration resumes at the next one.
    pub fn iter(&self) -> ParquetIter<'_> {
        ParquetIter {
            shard: self,
            rg: 0,
            current: None,
            pending: Vec::new().into_iter(),
        }
    }
}

struct RowGroupBatches<'a> {
    shard: &'a ParquetShard,
    rg: usize,
    next_row: usize,
    reader: Option<ParquetRecordBatchReader>,
}

impl Iterator for RowGroupBatches<'_> {
    type Item = Result<Vec<Record>>;

    fn next(&mut self) -> Option<Self::Item> {
        let reader = self.reader.as_mut()?;
        let loc = format!("row {} (row group {})", self.next_row, self.rg);
        let step = guarded(|| match reader.next() {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(e)) => Err(e.to_string()),
        });
        match step {
            Ok(None) => {
                self.reader = None;
                let end = self.shard.starts[self.rg + 1];
                if self.next_row != end {
                    let msg = format!("row group ended at row {}, expected {end}", self.next_row);
                    return Some(Err(CacheError::corrupt(&self.shard.path, loc, msg)));
                }
                None
            }
            Ok(Some(batch)) => {
                let first = self.next_row;
                self.next_row += batch.num_rows();
                let r = self.shard.decode_batch(&batch, first, self.rg);
                if r.is_err() {
                    self.reader = None;
                }
                Some(r)
            }
            Err(m) => {
                self.reader = None;
                Some(Err(CacheError::corrupt(&self.shard.path, loc, m)))
            }
        }
    }
}

/// Streams the records of a Parquet shard in order.
pub struct ParquetIter<'a> {
    shard: &'a ParquetShard,
    rg: usize,
    current: Option<RowGroupBatches<'a>>,
    pending: std::vec::IntoIter<Record>,
}

impl std::fmt::Debug for ParquetIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetIter")
            .field("path", &self.shard.path)
            .field("row_group", &self.rg)
            .finish()
    }
}

impl Iterator for ParquetIter<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.pending.next() {
                return Some(Ok(r));
            }
            if let Some(cur) = self.current.as_mut() {
                match cur.next() {
                    Some(Ok(recs)) => {
                        self.pending = recs.into_iter();
                        continue;
                    }
                    Some(Err(e)) => {
                        self.current = None;
                        return Some(Err(e));
                    }
                    None => self.current = None,
                }
            }
            if self.rg >= self.shard.row_groups() {
                return None;
            }
            let rg = self.rg;
            self.rg += 1;
            match self.shard.batches(rg, BATCH_ROWS) {
                Ok(b) => self.current = Some(b),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The Thrift footer of a Parquet file of `len` bytes (read once; decoded
/// and checked from these bytes).
fn read_footer(file: &File, len: u64) -> std::result::Result<Vec<u8>, String> {
    if len < 12 {
        return Err(format!("{len} bytes is too short for a Parquet file"));
    }
    let mut end = [0u8; 8];
    read_exact_at(file, &mut end, len - 8).map_err(|e| describe_read_error(file, len, &e))?;
    if &end[4..] != b"PAR1" {
        return Err("no Parquet magic at the end (truncated file?)".into());
    }
    let footer_len = u64::from(u32::from_le_bytes([end[0], end[1], end[2], end[3]]));
    if footer_len + 12 > len {
        return Err(format!(
            "footer of {footer_len} bytes does not fit the file ({len})"
        ));
    }
    let mut footer = vec![0u8; footer_len as usize];
    read_exact_at(file, &mut footer, len - 8 - footer_len)
        .map_err(|e| describe_read_error(file, len, &e))?;
    Ok(footer)
}

/// What [`ParquetShard::decoder`] builds a reader for.
struct Decoder<'a> {
    shard: &'a ParquetShard,
    rg: usize,
    mask: ProjectionMask,
    batch_rows: usize,
}

impl Decoder<'_> {
    /// The record batch reader over `input`.
    fn build<T: ChunkReader + 'static>(
        &self,
        input: T,
    ) -> std::result::Result<ParquetRecordBatchReader, String> {
        ParquetRecordBatchReaderBuilder::new_with_metadata(input, self.shard.meta.clone())
            .with_row_groups(vec![self.rg])
            .with_projection(self.mask.clone())
            .with_batch_size(self.batch_rows.max(1))
            .build()
            .map_err(|e| e.to_string())
    }
}
