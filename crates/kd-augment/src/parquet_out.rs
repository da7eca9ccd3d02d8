//! The transfer set as Parquet too (zstd), beside the JSONL: the same rows and columns
//! (`text`, `text_b` for pairs, `label`, `source_id`, `method`), for tools that read columnar
//! data. `label` is an Int64 class id, a Utf8 name (named labels) or a Float32 target. kd-data's
//! task readers take the JSONL; this copy is for inspection and other tools.

use crate::error::{AugmentError, Result};
use arrow::array::{ArrayRef, Float32Array, Int64Array, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use kd_data::{Label, LabelKind, TaskDataset};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::Arc;

/// Rows gathered column by column while the JSONL is written.
#[derive(Debug, Default)]
pub struct ParquetRows {
    text: Vec<String>,
    text_b: Vec<Option<String>>,
    source_id: Vec<u64>,
    method: Vec<&'static str>,
}

impl ParquetRows {
    /// Adds a row of example `source_id`.
    pub fn push(&mut self, source_id: u64, texts: (&str, Option<&str>), method: &'static str) {
        self.text.push(texts.0.to_string());
        self.text_b.push(texts.1.map(str::to_string));
        self.source_id.push(source_id);
        self.method.push(method);
    }

    /// Writes the rows to `path` atomically; labels come from `data` by `source_id`.
    pub fn write(&self, path: &Path, data: &TaskDataset, kind: LabelKind) -> Result<()> {
        let label_of = |id: &u64| data.examples[*id as usize].label;
        let label: (DataType, ArrayRef) = match kind {
            LabelKind::Regression => {
                let v = self.source_id.iter().map(|id| label_of(id).as_f32());
                (
                    DataType::Float32,
                    Arc::new(Float32Array::from_iter_values(v)),
                )
            }
            LabelKind::Named => {
                let v = self.source_id.iter().map(|id| match label_of(id) {
                    Label::Class(c) => data.label_names.get(c as usize).cloned(),
                    Label::Value(v) => Some(v.to_string()),
                });
                (DataType::Utf8, Arc::new(StringArray::from_iter(v)))
            }
            LabelKind::ClassId => {
                let v = self.source_id.iter().map(|id| label_of(id).as_f32() as i64);
                (DataType::Int64, Arc::new(Int64Array::from_iter_values(v)))
            }
        };
        let pairs = self.text_b.iter().any(Option::is_some);
        let mut fields = vec![Field::new("text", DataType::Utf8, false)];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(&self.text))];
        if pairs {
            fields.push(Field::new("text_b", DataType::Utf8, true));
            columns.push(Arc::new(StringArray::from_iter(
                self.text_b.iter().map(|t| t.as_deref()),
            )));
        }
        fields.push(Field::new("label", label.0, true));
        columns.push(label.1);
        fields.push(Field::new("source_id", DataType::UInt64, false));
        columns.push(Arc::new(UInt64Array::from_iter_values(
            self.source_id.iter().copied(),
        )));
        fields.push(Field::new("method", DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from_iter_values(
            self.method.iter().copied(),
        )));
        let schema = Arc::new(Schema::new(fields));
        let batch =
            RecordBatch::try_new(schema.clone(), columns).map_err(|e| parquet_err(path, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        kd_core::fs::write_atomic_with(path, |tmp| -> Result<()> {
            let file = std::fs::File::create(tmp).map_err(|cause| AugmentError::Io {
                path: tmp.to_path_buf(),
                cause,
            })?;
            let mut w =
                ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| parquet_err(tmp, e))?;
            w.write(&batch).map_err(|e| parquet_err(tmp, e))?;
            w.close().map_err(|e| parquet_err(tmp, e))?;
            Ok(())
        })
    }
}

fn parquet_err(path: &Path, e: impl std::fmt::Display) -> AugmentError {
    AugmentError::Setting(format!("{}: cannot write Parquet: {e}", path.display()))
}
