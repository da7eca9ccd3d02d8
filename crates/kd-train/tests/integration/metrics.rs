use std::collections::BTreeMap;
use std::io::Write;

use kd_train::{read_metrics, MetricsWriter, StepMetrics};

fn record(step: u64) -> StepMetrics {
    StepMetrics {
        step,
        epoch: 0,
        lr: 1e-4 * step as f64,
        loss: 2.5 / (step + 1) as f64,
        terms: BTreeMap::from([("kd".to_string(), 1.5), ("mlm".to_string(), 0.5)]),
        grad_norm: Some(0.75),
        tokens_per_s: Some(1234.5),
        elapsed_s: step as f64 * 0.5,
    }
}

#[test]
fn lines_parse_and_append_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/metrics.jsonl");
    {
        let mut w = MetricsWriter::open(&path).unwrap();
        for s in 1..=3 {
            w.write(&record(s)).unwrap();
        }
    }
    {
        let mut w = MetricsWriter::open(&path).unwrap();
        w.write(&record(4)).unwrap();
        w.write(&serde_json::json!({"step": 4, "eval_accuracy": 0.9}))
            .unwrap();
        assert!(w.write(&42).is_err(), "non-object records are rejected");
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 5);
    let rows = read_metrics(&path).unwrap();
    assert_eq!(rows.len(), 5);
    for (i, row) in rows.iter().take(4).enumerate() {
        let parsed: StepMetrics = serde_json::from_value(row.clone()).unwrap();
        assert_eq!(parsed, record(i as u64 + 1));
        assert_eq!(row["terms"]["kd"], 1.5);
        assert_eq!(row["grad_norm"], 0.75);
        assert_eq!(row["tokens_per_s"], 1234.5);
    }
    assert_eq!(rows[4]["eval_accuracy"], 0.9);
}

#[test]
fn torn_line_and_resume_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    let mut w = MetricsWriter::open(&path).unwrap();
    for s in 1..=5 {
        w.write(&record(s)).unwrap();
    }
    drop(w);
    // Crash in the middle of a line.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(br#"{"step": 6, "lo"#).unwrap();
    drop(f);

    // Resume from a checkpoint at step 3: later lines and the torn one go.
    let mut w = MetricsWriter::open_resumed(&path, 3).unwrap();
    w.write(&record(4)).unwrap();
    let steps: Vec<u64> = read_metrics(&path)
        .unwrap()
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);

    // Plain reopen after a torn line starts a new line.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"{\"step\": 9").unwrap();
    drop(f);
    let mut w = MetricsWriter::open(&path).unwrap();
    w.write(&record(5)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let last = text.lines().last().unwrap();
    assert_eq!(
        serde_json::from_str::<StepMetrics>(last).unwrap(),
        record(5)
    );
}
