//! Parquet corpora: a text column, one document per row.

use arrow::array::{Int32Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use kd_data::{Corpus, CorpusFormat, DataError};
use parquet::arrow::ArrowWriter;
use std::path::Path;
use std::sync::Arc;

fn write(path: &Path, texts: Vec<Option<&str>>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("text", DataType::Utf8, true),
    ]));
    let ids = Int32Array::from((0..texts.len() as i32).collect::<Vec<_>>());
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(ids), Arc::new(StringArray::from(texts))],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn format(col: &str) -> CorpusFormat {
    CorpusFormat::Parquet {
        text_column: col.into(),
    }
}

#[test]
fn rows_become_documents_and_lines_paragraphs() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("a.parquet"),
        vec![
            Some("first para\n\nsecond para"),
            None,
            Some("  only one  "),
        ],
    );
    let corpus = Corpus::load(&[dir.path().to_path_buf()], &format("text")).unwrap();
    assert_eq!(corpus.documents.len(), 2);
    let texts: Vec<Vec<&str>> = corpus
        .documents
        .iter()
        .map(|d| d.paragraphs.iter().map(|p| p.text.as_str()).collect())
        .collect();
    assert_eq!(
        texts,
        vec![vec!["first para", "second para"], vec!["only one"]]
    );
    assert_eq!(
        corpus.documents[1].line, 3,
        "the row number of the third row"
    );
}

#[test]
fn a_missing_or_non_text_column_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.parquet");
    write(&path, vec![Some("x")]);
    let err = Corpus::load(std::slice::from_ref(&path), &format("body")).unwrap_err();
    assert!(matches!(err, DataError::MissingColumn { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("body") && msg.contains("id, text") && msg.contains("a.parquet"),
        "{msg}"
    );
    let msg = Corpus::load(std::slice::from_ref(&path), &format("id"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("not strings") && msg.contains("Int32"),
        "{msg}"
    );
    std::fs::write(&path, b"not parquet").unwrap();
    let msg = Corpus::load(&[path], &format("text"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("Parquet"), "{msg}");
}
