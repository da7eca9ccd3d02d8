//! Reading Parquet shards: row-group random access and streaming.
//!
//! Decoding runs under `catch_unwind`, so a damaged file that trips a panic
//! inside the Parquet decoder still comes back as an error naming the file
//! and row group.

use std::cell::Cell;
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float32Type, UInt16Type, UInt32Type, UInt64Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;

use crate::error::{CacheError, Result};
use crate::parquet_write::{attention_column, hidden_column};
use crate::precision::Precision;
use crate::quant::Quantized;
use crate::record::{Label, LayerValues, Record, Sampled, TopK};
use crate::targets::TargetSpec;

/// Rows decoded per batch while streaming.
const BATCH_ROWS: usize = 64;

thread_local! {
    /// Set while this thread decodes under [`guarded`].
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Installs (once) a panic hook that stays quiet for panics caught by
/// [`guarded`] and hands every other panic to the hook that was there before.
fn quiet_guarded_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into an error.
fn guarded<T>(
    f: impl FnOnce() -> std::result::Result<T, String>,
) -> std::result::Result<T, String> {
    quiet_guarded_panics();
    let was = GUARDED.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    match result {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "decoder panicked".into());
            Err(format!("decoder failed: {msg}"))
        }
    }
}

/// A Parquet shard opened for reading.
pub struct ParquetShard {
    path: PathBuf,
    spec: TargetSpec,
    meta: ArrowReaderMetadata,
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
    /// Opens `path` (reads its footer) for records of `spec`.
    pub fn open(path: &Path, spec: &TargetSpec) -> Result<Self> {
        let file = File::open(path).map_err(|e| CacheError::io(path, e))?;
        let meta = guarded(|| {
            ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|e| e.to_string())
        })
        .map_err(|m| CacheError::corrupt(path, "footer", m))?;
        let mut starts = vec![0usize];
        for rg in meta.metadata().row_groups() {
            let rows = usize::try_from(rg.num_rows())
                .map_err(|_| CacheError::corrupt(path, "footer", "negative row count"))?;
            starts.push(starts[starts.len() - 1] + rows);
        }
        Ok(ParquetShard {
            path: path.to_path_buf(),
            spec: spec.clone(),
            meta,
            starts,
            cache: Mutex::new(None),
        })
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
        let loc = format!("row group {rg}");
        let file = File::open(&self.path).map_err(|e| CacheError::io(&self.path, e))?;
        let rows = self.starts.get(rg + 1).copied().unwrap_or(0) - self.starts[rg];
        let reader = guarded(|| {
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
                .with_row_groups(vec![rg])
                .with_batch_size(batch_rows.min(rows).max(1))
                .build()
                .map_err(|e| e.to_string())
        })
        .map_err(|m| CacheError::corrupt(&self.path, &loc, m))?;
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
        let file = File::open(&self.path).map_err(|e| CacheError::io(&self.path, e))?;
        let corrupt = |m: String| CacheError::corrupt(&self.path, "columns epoch, input_ids", m);
        guarded(|| {
            let schema = self.meta.schema();
            let roots = ["epoch", "input_ids"].map(|c| {
                schema
                    .index_of(c)
                    .map_err(|_| format!("column `{c}` is missing"))
            });
            let mask = ProjectionMask::roots(
                self.meta.parquet_schema(),
                [roots[0].clone()?, roots[1].clone()?],
            );
            let reader =
                ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
                    .with_projection(mask)
                    .with_batch_size(8192)
                    .build()
                    .map_err(|e| e.to_string())?;
            let mut out = Vec::with_capacity(self.len());
            for batch in reader {
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
                    out.push((epoch.value(i), (offsets[i + 1] - offsets[i]) as u32));
                }
            }
            if out.len() != self.len() {
                return Err(format!(
                    "{} rows, the footer says {}",
                    out.len(),
                    self.len()
                ));
            }
            Ok(out)
        })
        .map_err(corrupt)
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
    reader: Option<parquet::arrow::arrow_reader::ParquetRecordBatchReader>,
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

type Res<T> = std::result::Result<T, String>;

fn column<'a>(b: &'a RecordBatch, name: &str) -> Res<&'a dyn Array> {
    b.column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| format!("column `{name}` is missing"))
}

fn list_u32(b: &RecordBatch, name: &str, i: usize) -> Res<Option<Vec<u32>>> {
    let col = column(b, name)?;
    if col.is_null(i) {
        return Ok(None);
    }
    let list = col
        .as_list_opt::<i32>()
        .ok_or(format!("column `{name}` is not a list"))?;
    let v = list.value(i);
    let p = v
        .as_primitive_opt::<UInt32Type>()
        .ok_or(format!("column `{name}` is not a list<uint32>"))?;
    Ok(Some(p.values().to_vec()))
}

fn need<T>(v: Option<T>, name: &str) -> Res<T> {
    v.ok_or_else(|| format!("column `{name}` is null"))
}

fn list_f32(b: &RecordBatch, name: &str, i: usize) -> Res<Vec<f32>> {
    let col = column(b, name)?;
    if col.is_null(i) {
        return Err(format!("column `{name}` is null"));
    }
    let list = col
        .as_list_opt::<i32>()
        .ok_or(format!("column `{name}` is not a list"))?;
    let v = list.value(i);
    let p = v
        .as_primitive_opt::<Float32Type>()
        .ok_or(format!("column `{name}` is not a list<float32>"))?;
    Ok(p.values().to_vec())
}

/// The tensor in column `name` at row `i`; `cols` maps the element count to
/// the row length.
fn tensor(
    b: &RecordBatch,
    name: &str,
    i: usize,
    p: Precision,
    cols: &dyn Fn(usize) -> usize,
) -> Res<Quantized> {
    let data = if p == Precision::F32 {
        list_f32(b, name, i)?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    } else {
        let col = column(b, name)?;
        let bin = col
            .as_binary_opt::<i32>()
            .ok_or(format!("column `{name}` is not binary"))?;
        if bin.is_null(i) {
            return Err(format!("column `{name}` is null"));
        }
        bin.value(i).to_vec()
    };
    let scales = if p == Precision::Int8 {
        list_f32(b, &format!("{name}_scale"), i)?
    } else {
        Vec::new()
    };
    let cols = cols(data.len() / p.elem_size());
    Quantized::from_parts(p, cols, data, scales).map_err(|e| format!("column `{name}`: {e}"))
}

/// Decodes row `i` of `b` (a batch of a shard holding `spec`).
fn decode_row(b: &RecordBatch, i: usize, spec: &TargetSpec) -> Res<Record> {
    let seq = column(b, "seq_id")?
        .as_primitive_opt::<UInt64Type>()
        .ok_or("column `seq_id` is not uint64")?;
    let epoch = column(b, "epoch")?
        .as_primitive_opt::<UInt32Type>()
        .ok_or("column `epoch` is not uint32")?;
    if seq.is_null(i) || epoch.is_null(i) {
        return Err("seq_id or epoch is null".into());
    }
    let input_ids = need(list_u32(b, "input_ids", i)?, "input_ids")?;
    let n = input_ids.len();
    let mut r = Record {
        seq_id: seq.value(i),
        epoch: epoch.value(i),
        input_ids,
        token_type_ids: list_u32(b, "token_type_ids", i)?,
        mlm_positions: need(list_u32(b, "mlm_positions", i)?, "mlm_positions")?,
        mlm_labels: need(list_u32(b, "mlm_labels", i)?, "mlm_labels")?,
        ..Record::default()
    };
    if let Some(t) = &spec.mlm_topk {
        r.mlm_topk = Some(TopK {
            ids: need(list_u32(b, "topk_ids", i)?, "topk_ids")?,
            logits: tensor(b, "topk_logits", i, t.logit_precision, &|_| t.k as usize)?,
            log_partition: list_f32(b, "log_partition", i)?,
        });
    }
    if spec.mlm_sampled.is_some() {
        let counts_col = column(b, "sampled_counts")?
            .as_list_opt::<i32>()
            .ok_or("column `sampled_counts` is not a list")?;
        let counts = counts_col.value(i);
        let counts = counts
            .as_primitive_opt::<UInt16Type>()
            .ok_or("column `sampled_counts` is not a list<uint16>")?;
        r.mlm_sampled = Some(Sampled {
            offsets: need(list_u32(b, "sampled_offsets", i)?, "sampled_offsets")?,
            ids: need(list_u32(b, "sampled_ids", i)?, "sampled_ids")?,
            counts: counts.values().to_vec(),
        });
    }
    if let Some(h) = &spec.hidden {
        for &layer in &h.layers {
            let per_token = |elems: usize| elems.checked_div(n).unwrap_or(0);
            let values = tensor(b, &hidden_column(layer), i, h.precision, &per_token)?;
            r.hidden.push(LayerValues { layer, values });
        }
    }
    if let Some(a) = &spec.attention {
        for &layer in &a.layers {
            let values = tensor(b, &attention_column(layer), i, a.precision, &|_| n)?;
            r.attention.push(LayerValues { layer, values });
        }
    }
    if spec.logits {
        r.logits = Some(list_f32(b, "logits", i)?);
    }
    let class = column(b, "label_class")?
        .as_primitive_opt::<UInt32Type>()
        .ok_or("column `label_class` is not uint32")?;
    let value = column(b, "label_value")?
        .as_primitive_opt::<Float32Type>()
        .ok_or("column `label_value` is not float32")?;
    r.label = match (class.is_valid(i), value.is_valid(i)) {
        (true, false) => Some(Label::Class(class.value(i))),
        (false, true) => Some(Label::Value(value.value(i))),
        (false, false) => None,
        (true, true) => return Err("both label_class and label_value are set".into()),
    };
    Ok(r)
}
