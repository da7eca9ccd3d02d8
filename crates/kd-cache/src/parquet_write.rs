//! Parquet shards: the Arrow schema of a [`TargetSpec`] and the writer.
//!
//! One row per record; row groups are cut every `row_group_rows` records or
//! once the buffered records hold `row_group_bytes`. Column types are listed
//! in `schemas/cache-v2.md`; every non-f32 float tensor is a `binary` blob of
//! little-endian elements. Each column chunk and the footer carry a CRC-32
//! in the file's key-value metadata (`schemas/cache-v2.md`, section 5.1).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Float32Builder, ListBuilder, UInt16Builder, UInt32Builder,
    UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::Digest;

use crate::error::{CacheError, Result};
use crate::manifest::{schema_version_for, ShardInfo};
use crate::mmap_shard::file_name;
use crate::parquet_checksums::{chunk_range, patch_footer, ChecksumSink, Checksums, KEY};
use crate::precision::Precision;
use crate::quant::Quantized;
use crate::record::{Label, Record};
use crate::targets::TargetSpec;
use kd_core::fs::TmpFile;

/// Column of the hidden state of `layer`.
pub fn hidden_column(layer: u32) -> String {
    format!("hidden_l{layer}")
}

/// Column of the attention scores of `layer`.
pub fn attention_column(layer: u32) -> String {
    format!("attention_l{layer}")
}

/// Column of the query/key projections of `layer`.
pub fn attention_qk_column(layer: u32) -> String {
    format!("attention_qk_l{layer}")
}

/// Column of the attention input (hidden state `layer - 1`) of encoder layer `layer`.
pub fn attention_input_column(layer: u32) -> String {
    format!("attention_input_l{layer}")
}

fn list_of(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(t, true)))
}

fn tensor_type(p: Precision) -> DataType {
    match p {
        Precision::F32 => list_of(DataType::Float32),
        _ => DataType::Binary,
    }
}

fn tensor_field(name: &str, p: Precision, shape: &str) -> Field {
    let meta = HashMap::from([
        ("kd.precision".to_string(), p.name().to_string()),
        ("kd.shape".to_string(), shape.to_string()),
    ]);
    Field::new(name, tensor_type(p), false).with_metadata(meta)
}

/// The Arrow schema of a shard holding `spec`.
pub fn arrow_schema(spec: &TargetSpec) -> SchemaRef {
    let mut f = vec![
        Field::new("seq_id", DataType::UInt64, false),
        Field::new("epoch", DataType::UInt32, false),
        Field::new("input_ids", list_of(DataType::UInt32), false),
        Field::new("token_type_ids", list_of(DataType::UInt32), true),
        Field::new("mlm_positions", list_of(DataType::UInt32), false),
        Field::new("mlm_labels", list_of(DataType::UInt32), false),
    ];
    if let Some(t) = &spec.mlm_topk {
        f.push(Field::new("topk_ids", list_of(DataType::UInt32), false));
        f.push(tensor_field(
            "topk_logits",
            t.logit_precision,
            "[n_mask, k]",
        ));
        f.push(Field::new(
            "log_partition",
            list_of(DataType::Float32),
            false,
        ));
    }
    if spec.mlm_sampled.is_some() {
        f.push(Field::new(
            "sampled_offsets",
            list_of(DataType::UInt32),
            false,
        ));
        f.push(Field::new("sampled_ids", list_of(DataType::UInt32), false));
        f.push(Field::new(
            "sampled_counts",
            list_of(DataType::UInt16),
            false,
        ));
    }
    let stored_inputs = spec
        .attention_input
        .as_ref()
        .map(|a| crate::targets::LayerSpec {
            layers: crate::attention_input::stored_layers(spec),
            precision: a.precision,
        });
    for (layers, name, shape) in [
        (&spec.hidden, hidden_column as fn(u32) -> String, "[n, H]"),
        (&spec.attention, attention_column, "[heads, n, n]"),
        (
            &spec.attention_qk,
            attention_qk_column,
            "[n, 2, heads, head_dim]",
        ),
        (&stored_inputs, attention_input_column, "[n, H]"),
    ] {
        if let Some(l) = layers {
            for &layer in &l.layers {
                f.push(tensor_field(&name(layer), l.precision, shape));
                if l.precision == Precision::Int8 {
                    let scale = format!("{}_scale", name(layer));
                    f.push(Field::new(scale, list_of(DataType::Float32), false));
                }
            }
        }
    }
    if spec.logits {
        f.push(Field::new("logits", list_of(DataType::Float32), false));
    }
    f.push(Field::new("label_class", DataType::UInt32, true));
    f.push(Field::new("label_value", DataType::Float32, true));
    let meta = HashMap::from([
        (
            "kd.schema_version".to_string(),
            schema_version_for(spec).to_string(),
        ),
        ("kd.targets".to_string(), spec.to_string()),
    ]);
    Arc::new(Schema::new_with_metadata(f, meta))
}

fn list_u32<'a>(rows: impl Iterator<Item = Option<&'a [u32]>>) -> ArrayRef {
    let mut b = ListBuilder::new(UInt32Builder::new());
    for r in rows {
        match r {
            Some(v) => {
                b.values().append_slice(v);
                b.append(true);
            }
            None => b.append(false),
        }
    }
    Arc::new(b.finish())
}

fn list_f32<'a>(rows: impl Iterator<Item = &'a [f32]>) -> ArrayRef {
    let mut b = ListBuilder::new(Float32Builder::new());
    for v in rows {
        b.values().append_slice(v);
        b.append(true);
    }
    Arc::new(b.finish())
}

/// The data column of a tensor: `list<float32>` for f32, else `binary`.
fn tensor_column<'a>(p: Precision, rows: impl Iterator<Item = &'a Quantized>) -> ArrayRef {
    if p == Precision::F32 {
        let decoded: Vec<Vec<f32>> = rows.map(|q| q.decode()).collect();
        return list_f32(decoded.iter().map(|v| v.as_slice()));
    }
    let mut b = BinaryBuilder::new();
    for q in rows {
        b.append_value(q.data());
    }
    Arc::new(b.finish())
}

/// Builds the record batch of `records` for `schema`/`spec` (records are
/// checked against `spec` beforehand).
pub fn build_batch(
    records: &[Record],
    spec: &TargetSpec,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let mut seq = UInt64Builder::new();
    let mut epoch = UInt32Builder::new();
    for r in records {
        seq.append_value(r.seq_id);
        epoch.append_value(r.epoch);
    }
    cols.push(Arc::new(seq.finish()));
    cols.push(Arc::new(epoch.finish()));
    cols.push(list_u32(
        records.iter().map(|r| Some(r.input_ids.as_slice())),
    ));
    cols.push(list_u32(
        records.iter().map(|r| r.token_type_ids.as_deref()),
    ));
    cols.push(list_u32(
        records.iter().map(|r| Some(r.mlm_positions.as_slice())),
    ));
    cols.push(list_u32(
        records.iter().map(|r| Some(r.mlm_labels.as_slice())),
    ));
    if let Some(t) = &spec.mlm_topk {
        let topk: Vec<_> = records.iter().filter_map(|r| r.mlm_topk.as_ref()).collect();
        cols.push(list_u32(topk.iter().map(|t| Some(t.ids.as_slice()))));
        cols.push(tensor_column(
            t.logit_precision,
            topk.iter().map(|t| &t.logits),
        ));
        cols.push(list_f32(topk.iter().map(|t| t.log_partition.as_slice())));
    }
    if spec.mlm_sampled.is_some() {
        let s: Vec<_> = records
            .iter()
            .filter_map(|r| r.mlm_sampled.as_ref())
            .collect();
        cols.push(list_u32(s.iter().map(|s| Some(s.offsets.as_slice()))));
        cols.push(list_u32(s.iter().map(|s| Some(s.ids.as_slice()))));
        let mut b = ListBuilder::new(UInt16Builder::new());
        for s in &s {
            b.values().append_slice(&s.counts);
            b.append(true);
        }
        cols.push(Arc::new(b.finish()));
    }
    type Layers = fn(&Record) -> &Vec<crate::record::LayerValues>;
    let stored_inputs = spec
        .attention_input
        .as_ref()
        .map(|a| crate::targets::LayerSpec {
            layers: crate::attention_input::stored_layers(spec),
            precision: a.precision,
        });
    let kinds: [(&Option<crate::targets::LayerSpec>, Layers); 4] = [
        (&spec.hidden, |r| &r.hidden),
        (&spec.attention, |r| &r.attention),
        (&spec.attention_qk, |r| &r.attention_qk),
        (&stored_inputs, |r| &r.attention_input),
    ];
    for (spec_layers, of) in kinds {
        let Some(l) = spec_layers else { continue };
        for (i, _) in l.layers.iter().enumerate() {
            let tensors: Vec<&Quantized> = records.iter().map(|r| &of(r)[i].values).collect();
            cols.push(tensor_column(l.precision, tensors.iter().copied()));
            if l.precision == Precision::Int8 {
                cols.push(list_f32(tensors.iter().map(|q| q.scales())));
            }
        }
    }
    if spec.logits {
        cols.push(list_f32(
            records.iter().map(|r| r.logits.as_deref().unwrap_or(&[])),
        ));
    }
    let mut class = UInt32Builder::new();
    let mut value = Float32Builder::new();
    for r in records {
        class.append_option(match r.label {
            Some(Label::Class(c)) => Some(c),
            _ => None,
        });
        value.append_option(match r.label {
            Some(Label::Value(v)) => Some(v),
            _ => None,
        });
    }
    cols.push(Arc::new(class.finish()));
    cols.push(Arc::new(value.finish()));
    RecordBatch::try_new(schema.clone(), cols)
        .map_err(|e| CacheError::Invalid(format!("building a record batch: {e}")))
}

/// Encoded size estimate of a record (what it adds to a row group before compression).
fn record_bytes(r: &Record) -> usize {
    crate::codec::section_sizes(r)
        .iter()
        .map(|(_, b)| *b as usize)
        .sum()
}

/// Writes one Parquet shard to `name.tmp`, renamed into place by
/// [`finish`](Self::finish); dropped unfinished or after an error, it removes
/// `name.tmp`.
pub struct ParquetShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    guard: TmpFile,
    spec: TargetSpec,
    schema: SchemaRef,
    writer: Option<ArrowWriter<ChecksumSink<BufWriter<File>>>>,
    /// CRC-32 of each column chunk of the row groups written so far.
    checksums: Checksums,
    buffer: Vec<Record>,
    buffered_bytes: usize,
    row_group_rows: usize,
    row_group_bytes: usize,
    rows: u64,
    tokens: u64,
}

impl std::fmt::Debug for ParquetShardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetShardWriter")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish()
    }
}

impl ParquetShardWriter {
    /// Starts `path` for records of `spec`; a row group is cut every
    /// `row_group_rows` records or `row_group_bytes` of buffered data.
    pub fn create(
        path: &Path,
        spec: &TargetSpec,
        row_group_rows: usize,
        row_group_bytes: usize,
        zstd_level: i32,
    ) -> Result<Self> {
        let (guard, file) = TmpFile::create(path)?;
        let tmp = guard.tmp().to_path_buf();
        let level = ZstdLevel::try_new(zstd_level)
            .map_err(|e| CacheError::Invalid(format!("zstd level {zstd_level}: {e}")))?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_size(row_group_rows.max(1))
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::None);
        for c in ["seq_id", "epoch"] {
            props =
                props.set_column_statistics_enabled(ColumnPath::from(c), EnabledStatistics::Chunk);
        }
        let schema = arrow_schema(spec);
        let out = ChecksumSink::new(BufWriter::with_capacity(1 << 20, file));
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props.build()))
            .map_err(|e| CacheError::corrupt(&tmp, "schema", e.to_string()))?;
        Ok(ParquetShardWriter {
            path: path.to_path_buf(),
            tmp,
            guard,
            spec: spec.clone(),
            schema,
            writer: Some(writer),
            checksums: Checksums {
                row_groups: Vec::new(),
            },
            buffer: Vec::new(),
            buffered_bytes: 0,
            row_group_rows: row_group_rows.max(1),
            // binary columns have 32-bit offsets: keep a row group well below 2 GiB
            row_group_bytes: row_group_bytes.clamp(1, 1 << 30),
            rows: 0,
            tokens: 0,
        })
    }

    /// Records written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends a record (already checked against the targets).
    pub fn write(&mut self, r: &Record) -> Result<()> {
        self.buffered_bytes += record_bytes(r);
        self.buffer.push(r.clone());
        self.rows += 1;
        self.tokens += r.input_ids.len() as u64;
        if self.buffer.len() >= self.row_group_rows || self.buffered_bytes >= self.row_group_bytes {
            self.flush_row_group()?;
        }
        Ok(())
    }

    fn flush_row_group(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let batch = build_batch(&self.buffer, &self.spec, &self.schema)?;
        let w = self.writer.as_mut().ok_or_else(|| {
            CacheError::Invalid(format!("{}: writer already finished", self.tmp.display()))
        })?;
        let err = |e: parquet::errors::ParquetError| {
            CacheError::corrupt(&self.tmp, "write", e.to_string())
        };
        w.write(&batch).map_err(err)?;
        w.flush().map_err(err)?;
        // Every row group written since the last flush: its column chunks
        // get checksummed as their bytes reach the file.
        let done = self.checksums.row_groups.len();
        let mut ranges = Vec::new();
        for rg in w.flushed_row_groups().iter().skip(done) {
            for c in 0..rg.num_columns() {
                ranges.push(
                    chunk_range(rg, c).map_err(|m| CacheError::corrupt(&self.tmp, "write", m))?,
                );
            }
            self.checksums.row_groups.push(vec![0; rg.num_columns()]);
        }
        for (start, len) in ranges {
            w.inner_mut().register(start, len);
        }
        self.buffer.clear();
        self.buffered_bytes = 0;
        Ok(())
    }

    /// Writes the last row group and the footer, fsyncs, renames `name.tmp`
    /// to `name` and returns the shard's description.
    pub fn finish(mut self) -> Result<ShardInfo> {
        self.flush_row_group()?;
        let mut w = self.writer.take().ok_or_else(|| {
            CacheError::Invalid(format!("{}: writer already finished", self.tmp.display()))
        })?;
        // A placeholder checksum entry goes into the footer; the real one (the
        // same length) is written over it once every byte has gone through.
        let placeholder = self.checksums.entry();
        let footer_at = w.bytes_written() as u64;
        w.inner_mut().keep_tail_from(footer_at);
        w.append_key_value_metadata(KeyValue::new(KEY.to_string(), placeholder.clone()));
        let sink = w
            .into_inner()
            .map_err(|e| CacheError::corrupt(&self.tmp, "footer", e.to_string()))?;
        let mut parts = sink.finish().map_err(|e| CacheError::io(&self.tmp, e))?;
        let mut at = 0;
        for rg in &mut self.checksums.row_groups {
            for crc in rg.iter_mut() {
                *crc = parts.crcs.get(at).copied().unwrap_or(0);
                at += 1;
            }
        }
        if at != parts.crcs.len() {
            let m = "column chunk checksums do not match the row groups";
            return Err(CacheError::corrupt(&self.tmp, "footer", m));
        }
        patch_footer(&mut parts.tail, &placeholder, &self.checksums)
            .map_err(|m| CacheError::corrupt(&self.tmp, "footer", m))?;
        let io = |e| CacheError::io(&self.tmp, e);
        let mut file = parts.inner.into_inner().map_err(|e| io(e.into_error()))?;
        file.seek(SeekFrom::Start(footer_at)).map_err(io)?;
        file.write_all(&parts.tail).map_err(io)?;
        parts.sha.update(&parts.tail);
        let (sha256, bytes) = (hex::encode(parts.sha.finalize()), parts.bytes);
        drop(file);
        self.guard.commit()?;
        Ok(ShardInfo {
            file: file_name(&self.path),
            rows: self.rows,
            tokens: self.tokens,
            bytes,
            sha256,
        })
    }
}
