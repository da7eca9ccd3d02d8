//! Parquet corpora: one document per row, its text in a named string column (split on newlines
//! into paragraphs), as in the Parquet exports of common text datasets.

use crate::corpus::{Document, Paragraph};
use crate::error::{DataError, Result};
use arrow::array::{Array, LargeStringArray, StringArray, StringViewArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

/// Appends the documents of the Parquet file `path` (text in column `column`) to `documents`;
/// `Document::line` is the 1-based row number. Errors name the file, and the column with the
/// columns the file has.
pub fn read_parquet(path: &Path, column: &str, documents: &mut Vec<Document>) -> Result<()> {
    let invalid = |msg: String| DataError::Invalid(format!("{}: {msg}", path.display()));
    crate::text::require_regular_file(path)?;
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| invalid(format!("not a readable Parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let index = schema
        .index_of(column)
        .map_err(|_| DataError::MissingColumn {
            path: path.to_path_buf(),
            column: column.to_string(),
            available: schema.fields().iter().map(|f| f.name().clone()).collect(),
        })?;
    let reader = builder
        .build()
        .map_err(|e| invalid(format!("cannot read: {e}")))?;
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| invalid(format!("row {}: {e}", row + 1)))?;
        let col = batch.column(index);
        let text_at = |i: usize| -> Option<String> {
            if col.is_null(i) {
                return None;
            }
            if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
                return Some(a.value(i).to_string());
            }
            if let Some(a) = col.as_any().downcast_ref::<LargeStringArray>() {
                return Some(a.value(i).to_string());
            }
            col.as_any()
                .downcast_ref::<StringViewArray>()
                .map(|a| a.value(i).to_string())
        };
        if col.as_any().downcast_ref::<StringArray>().is_none()
            && col.as_any().downcast_ref::<LargeStringArray>().is_none()
            && col.as_any().downcast_ref::<StringViewArray>().is_none()
        {
            return Err(invalid(format!(
                "column `{column}` holds {}, not strings",
                col.data_type()
            )));
        }
        for i in 0..batch.num_rows() {
            row += 1;
            let Some(text) = text_at(i) else { continue };
            let paragraphs = text
                .lines()
                .filter(|p| !p.trim().is_empty())
                .map(|p| Paragraph {
                    line: row,
                    text: p.trim().to_string(),
                })
                .collect();
            documents.push(Document {
                id: 0,
                path: path.to_path_buf(),
                line: row,
                paragraphs,
            });
        }
    }
    Ok(())
}
