//! Corpus reading: order, blank lines, strict UTF-8, empty corpora, JSONL.

mod common;

use std::path::PathBuf;

use kd_data::{Corpus, CorpusFormat, DataError};

fn write(dir: &std::path::Path, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn folder_files_sorted_blank_lines_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "b.txt", b"second doc\n\n  \nmore\n");
    write(dir.path(), "a.txt", b"first doc\r\nline two\r\n");
    write(dir.path(), "c.md", b"ignored\n");
    let extra = write(dir.path(), "z.data", b"explicit file\n");
    let corpus = Corpus::load(&[dir.path().to_path_buf(), extra], &CorpusFormat::Text).unwrap();
    let names: Vec<_> = corpus
        .files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["a.txt", "b.txt", "z.data"]);
    assert_eq!(corpus.documents.len(), 3);
    let ids: Vec<u32> = corpus.documents.iter().map(|d| d.id).collect();
    assert_eq!(ids, [0, 1, 2]);
    let b = &corpus.documents[1];
    assert_eq!(b.paragraphs.len(), 2);
    assert_eq!(
        (b.paragraphs[0].line, b.paragraphs[0].text.as_str()),
        (1, "second doc")
    );
    assert_eq!(
        (b.paragraphs[1].line, b.paragraphs[1].text.as_str()),
        (4, "more")
    );
    assert_eq!(corpus.documents[0].paragraphs[1].text, "line two");
    assert_eq!(corpus.num_paragraphs(), 5);
    let flat: Vec<(u32, usize)> = corpus.paragraphs().map(|(d, p)| (d.id, p.line)).collect();
    assert_eq!(flat, [(0, 1), (0, 2), (1, 1), (1, 4), (2, 1)]);
}

#[test]
fn non_utf8_error_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bad.txt",
        b"fine\n\nalso fine\ncaf\xe9 latin-1\nafter\n",
    );
    let err = Corpus::load(&[dir.path().to_path_buf()], &CorpusFormat::Text).unwrap_err();
    match &err {
        DataError::NonUtf8 { path, line, offset } => {
            assert_eq!(path, &p);
            assert_eq!(*line, 4);
            assert_eq!(*offset, 3);
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("bad.txt:4"), "{msg}");
}

#[test]
fn empty_corpus_is_an_error_naming_inputs() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "blank.txt", b"\n   \n\r\n");
    let err = Corpus::load(&[dir.path().to_path_buf()], &CorpusFormat::Text).unwrap_err();
    assert!(matches!(err, DataError::EmptyCorpus { .. }), "{err:?}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
    let empty = tempfile::tempdir().unwrap();
    let err = Corpus::load(&[empty.path().to_path_buf()], &CorpusFormat::Text).unwrap_err();
    assert!(matches!(err, DataError::EmptyCorpus { .. }), "{err:?}");
    let err = Corpus::load(&[], &CorpusFormat::Text).unwrap_err();
    assert!(matches!(err, DataError::EmptyCorpus { .. }), "{err:?}");
}

#[test]
fn missing_input_is_an_io_error_naming_it() {
    let err = Corpus::load(&[PathBuf::from("/no/such/corpus")], &CorpusFormat::Text).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }));
    assert!(err.to_string().contains("/no/such/corpus"));
}

#[test]
fn jsonl_records_are_documents() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "c.jsonl",
        b"{\"text\": \"para one\\npara two\", \"id\": 7}\n\n{\"text\": \"other\"}\n",
    );
    let fmt = CorpusFormat::Jsonl {
        text_field: "text".into(),
    };
    let corpus = Corpus::load(&[dir.path().to_path_buf()], &fmt).unwrap();
    assert_eq!(corpus.files, [p]);
    assert_eq!(corpus.documents.len(), 2);
    assert_eq!(corpus.documents[0].paragraphs.len(), 2);
    assert_eq!(corpus.documents[1].line, 3);
    assert_eq!(corpus.documents[1].paragraphs[0].text, "other");
}

#[test]
fn jsonl_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let fmt = CorpusFormat::Jsonl {
        text_field: "text".into(),
    };
    let p = write(
        dir.path(),
        "bad.jsonl",
        b"{\"text\": \"ok\"}\n{\"text\": oops}\n",
    );
    let err = Corpus::load(&[p], &fmt).unwrap_err();
    assert!(matches!(err, DataError::Json { line: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("bad.jsonl:2"));

    let p = write(
        dir.path(),
        "missing.jsonl",
        b"{\"text\": \"ok\"}\n{\"body\": \"x\", \"n\": 1}\n",
    );
    let err = Corpus::load(&[p], &fmt).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::Field { line: 2, .. }), "{err:?}");
    assert!(
        msg.contains("missing.jsonl:2") && msg.contains("`text`"),
        "{msg}"
    );
    assert!(msg.contains("body") && msg.contains('n'), "{msg}");

    let p = write(dir.path(), "num.jsonl", b"{\"text\": 5}\n");
    let err = Corpus::load(&[p], &fmt).unwrap_err();
    assert!(err.to_string().contains("not a string"), "{err}");
}

#[test]
fn from_texts_builds_documents() {
    let corpus = Corpus::from_texts(&[vec!["a", "", "b"], vec![]]).unwrap();
    assert_eq!(corpus.documents.len(), 2);
    assert_eq!(corpus.documents[0].paragraphs[1].line, 3);
    assert_eq!(corpus.documents[1].id, 1);
    let _ = common::id("the");
}
