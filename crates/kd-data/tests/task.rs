//! Task datasets: TSV/JSONL reading, label kinds, errors, pair encoding.

mod common;

use std::path::PathBuf;

use common::{encoder, id};
use kd_data::encode::truncate_longest_first;
use kd_data::{
    encode_dataset, encode_text_pair, read_task, read_task_with_labels, ColumnRef, DataError,
    Label, LabelKind, TaskFormat, TaskSpec,
};

fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn spec(format: TaskFormat, label_kind: LabelKind) -> TaskSpec {
    TaskSpec {
        format,
        text: ColumnRef::Name("sentence".into()),
        text_pair: None,
        label: ColumnRef::Name("label".into()),
        label_kind,
    }
}

const TSV: TaskFormat = TaskFormat::Tsv { header: true };

#[test]
fn tsv_with_header_class_ids() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "t.tsv",
        "sentence\tlabel\nthe cat sat\t1\n\nthe dog\t0\r\nred\t3\n",
    );
    let ds = read_task(&p, &spec(TSV, LabelKind::ClassId)).unwrap();
    assert_eq!(ds.examples.len(), 3);
    assert_eq!(ds.examples[1].text, "the dog");
    assert_eq!(ds.examples[1].line, 4);
    assert_eq!(ds.examples[2].label, Label::Class(3));
    assert_eq!(ds.num_labels, 4);
    assert!(ds.label_names.is_empty());
}

#[test]
fn named_labels_use_sorted_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "t.tsv",
        "label\tsentence\npos\ta\nneg\tb\nneutral\tc\npos\td\n",
    );
    let ds = read_task(&p, &spec(TSV, LabelKind::Named)).unwrap();
    assert_eq!(ds.label_names, ["neg", "neutral", "pos"]);
    let labels: Vec<_> = ds.examples.iter().map(|e| e.label).collect();
    assert_eq!(
        labels,
        [
            Label::Class(2),
            Label::Class(0),
            Label::Class(1),
            Label::Class(2)
        ]
    );
    assert_eq!(ds.num_labels, 3);
    // A dev file with the training vocabulary; an unseen label is an error naming its line.
    let dev = write(&dir, "d.tsv", "label\tsentence\nneg\tx\nmaybe\ty\n");
    let s = spec(TSV, LabelKind::Named);
    let err = read_task_with_labels(&dev, &s, &ds.label_names).unwrap_err();
    assert!(
        matches!(err, DataError::BadLabel { line: 3, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("d.tsv:3"), "{err}");
}

#[test]
fn regression_labels_and_index_columns_without_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "t.tsv", "a one\tb one\t4.5\na two\tb two\t-0.25\n");
    let s = TaskSpec {
        format: TaskFormat::Tsv { header: false },
        text: ColumnRef::Index(0),
        text_pair: Some(ColumnRef::Index(1)),
        label: ColumnRef::Index(2),
        label_kind: LabelKind::Regression,
    };
    let ds = read_task(&p, &s).unwrap();
    assert_eq!(ds.examples[0].text_pair.as_deref(), Some("b one"));
    assert_eq!(ds.examples[1].label, Label::Value(-0.25));
    assert_eq!(ds.num_labels, 1);
}

#[test]
fn missing_label_column_lists_available_columns() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "t.tsv", "sentence\tscore\tsource\nx\t1\ty\n");
    let err = read_task(&p, &spec(TSV, LabelKind::ClassId)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::MissingColumn { .. }), "{err:?}");
    assert!(msg.contains("t.tsv") && msg.contains("`label`"), "{msg}");
    assert!(msg.contains("sentence, score, source"), "{msg}");
    // Without a header, the available columns are indices.
    let s = TaskSpec {
        format: TaskFormat::Tsv { header: false },
        text: ColumnRef::Index(0),
        text_pair: None,
        label: ColumnRef::Index(5),
        label_kind: LabelKind::ClassId,
    };
    let err = read_task(&p, &s).unwrap_err();
    assert!(err.to_string().contains("#0, #1, #2"), "{err}");
}

#[test]
fn non_numeric_label_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "t.tsv", "sentence\tlabel\nok\t1\nbad\tpositive\n");
    let err = read_task(&p, &spec(TSV, LabelKind::ClassId)).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, DataError::BadLabel { line: 3, .. }),
        "{err:?}"
    );
    assert!(msg.contains("t.tsv:3") && msg.contains("`label`") && msg.contains("positive"));
    let p = write(&dir, "r.tsv", "sentence\tlabel\nok\tnan\n");
    let err = read_task(&p, &spec(TSV, LabelKind::Regression)).unwrap_err();
    assert!(err.to_string().contains("r.tsv:2"), "{err}");
}

#[test]
fn wrong_field_count_names_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "t.tsv", "sentence\tlabel\nok\t1\nextra\t1\tfield\n");
    let err = read_task(&p, &spec(TSV, LabelKind::ClassId)).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::FieldCount {
                line: 3,
                expected: 2,
                found: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("t.tsv:3"));
}

#[test]
fn non_utf8_task_file_names_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.tsv");
    std::fs::write(&p, b"sentence\tlabel\nna\xefve\t1\n").unwrap();
    let err = read_task(&p, &spec(TSV, LabelKind::ClassId)).unwrap_err();
    assert!(matches!(err, DataError::NonUtf8 { line: 2, .. }), "{err:?}");
}

#[test]
fn jsonl_reading_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let fmt = TaskFormat::Jsonl;
    let p = write(
        &dir,
        "t.jsonl",
        "{\"sentence\": \"a\", \"label\": 1}\n{\"sentence\": \"b\", \"label\": \"0\"}\n",
    );
    let ds = read_task(&p, &spec(fmt, LabelKind::ClassId)).unwrap();
    assert_eq!(ds.examples[0].label, Label::Class(1));
    assert_eq!(ds.examples[1].label, Label::Class(0));
    let ds = read_task(&p, &spec(fmt, LabelKind::Named)).unwrap();
    assert_eq!(ds.label_names, ["0", "1"]);

    let p = write(
        &dir,
        "m.jsonl",
        "{\"sentence\": \"a\", \"label\": 1}\n{\"sentence\": \"b\", \"y\": 1}\n",
    );
    let err = read_task(&p, &spec(fmt, LabelKind::ClassId)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("m.jsonl:2") && msg.contains("`label`") && msg.contains("sentence, y"));

    let p = write(&dir, "b.jsonl", "{\"sentence\": \"a\", \"label\": 1.5}\n");
    let err = read_task(&p, &spec(fmt, LabelKind::ClassId)).unwrap_err();
    assert!(
        matches!(err, DataError::BadLabel { line: 1, .. }),
        "{err:?}"
    );

    let p = write(
        &dir,
        "j.jsonl",
        "{\"sentence\": \"a\", \"label\": 1}\n[1, 2\n",
    );
    let err = read_task(&p, &spec(fmt, LabelKind::ClassId)).unwrap_err();
    assert!(matches!(err, DataError::Json { line: 2, .. }), "{err:?}");
}

#[test]
fn pair_encoding_with_token_types() {
    let enc = encoder();
    let (ids, types) = encode_text_pair(&enc, "The cat sat", Some("on a mat."), 64).unwrap();
    let expect: Vec<u32> = [
        "[CLS]", "the", "cat", "sat", "[SEP]", "on", "a", "mat", ".", "[SEP]",
    ]
    .iter()
    .map(|t| id(t))
    .collect();
    assert_eq!(ids, expect);
    assert_eq!(types, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    let (ids, types) = encode_text_pair(&enc, "runs", None, 64).unwrap();
    assert_eq!(ids, [id("[CLS]"), id("run"), id("##s"), id("[SEP]")]);
    assert_eq!(types, [0, 0, 0, 0]);
}

#[test]
fn truncation_is_longest_first() {
    let mut a: Vec<u32> = (0..10).collect();
    let mut b: Vec<u32> = (100..104).collect();
    truncate_longest_first(&mut a, &mut b, 8);
    assert_eq!((a.len(), b.len()), (4, 4));
    assert_eq!(a, [0, 1, 2, 3]);
    let enc = encoder();
    let long = common::words(20, 0);
    let (ids, types) = encode_text_pair(&enc, &long, Some("one two three"), 12).unwrap();
    assert_eq!(ids.len(), 12);
    // 9 content tokens: a keeps 6, b keeps 3 (b was shorter and untouched).
    assert_eq!(types.iter().filter(|&&t| t == 1).count(), 4);
    assert_eq!(ids[ids.len() - 1], id("[SEP]"));
    let (ids, _) = encode_text_pair(&enc, &long, None, 12).unwrap();
    assert_eq!(ids.len(), 12);
    assert!(encode_text_pair(&enc, "a", None, 2).is_err());
}

#[test]
fn encode_dataset_keeps_order_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "t.tsv",
        "sentence\tother\tlabel\nthe cat\tred\t1\nblue\tthe dog sat\t0\n",
    );
    let mut s = spec(TSV, LabelKind::ClassId);
    s.text_pair = Some(ColumnRef::Name("other".into()));
    let ds = read_task(&p, &s).unwrap();
    let out = encode_dataset(&ds, &encoder(), 128).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].label, Label::Class(1));
    assert_eq!(out[1].input_ids.len(), 1 + 1 + 1 + 3 + 1);
    assert_eq!(out[1].token_type_ids, [0, 0, 0, 1, 1, 1, 1]);
}

#[test]
fn empty_task_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "e.tsv", "sentence\tlabel\n\n");
    let err = read_task(&p, &spec(TSV, LabelKind::ClassId)).unwrap_err();
    assert!(matches!(err, DataError::EmptyDataset { .. }), "{err:?}");
    let p = write(&dir, "e.jsonl", "");
    let err = read_task(&p, &spec(TaskFormat::Jsonl, LabelKind::ClassId)).unwrap_err();
    assert!(err.to_string().contains("e.jsonl"), "{err}");
}
