//! Bad model directories, configs and checkpoints: each gives a clear `kd_bert::Error` naming the
//! file and the field or tensor at fault, never a panic.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use kd_bert::tokenizer::load_tokenizer;
use kd_bert::{load_model, Architecture, Error, LoadOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The tiny MLM fixture copied into a fresh temporary directory.
fn tiny_mlm_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    copy_dir(&fixture("tiny_mlm"), &dir);
    // The reference outputs are not part of a model directory.
    std::fs::remove_file(dir.join("expected.safetensors")).unwrap();
    (tmp, dir)
}

/// Rewrites one field of `dir/config.json` (`None` removes it).
fn edit_config(dir: &Path, field: &str, value: Option<serde_json::Value>) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let obj = cfg.as_object_mut().unwrap();
    match value {
        Some(v) => obj.insert(field.to_string(), v),
        None => obj.remove(field),
    };
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
}

fn load_err(what: &str, dir: &Path, opts: &LoadOptions) -> Error {
    expect_err(what, || load_model(dir, opts))
}

/// Asserts a `Config` error on `path` whose message contains every one of `words`.
fn assert_config_err(err: &Error, path: &Path, words: &[&str]) {
    let shown = err.to_string();
    match err {
        Error::Config { path: p, msg } => {
            assert_eq!(p, path, "{shown}");
            for w in words {
                assert!(msg.contains(w), "message lacks {w:?}: {shown}");
            }
        }
        other => panic!("expected Error::Config, got {other:?}"),
    }
    assert!(shown.contains(&path.display().to_string()), "{shown}");
}

#[test]
fn missing_config_json() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_err("no config", tmp.path(), &LoadOptions::default());
    assert_config_err(&err, &tmp.path().join("config.json"), &["not found"]);
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn config_missing_required_field() {
    let (_tmp, dir) = tiny_mlm_copy();
    edit_config(&dir, "hidden_size", None);
    let err = load_err("no hidden_size", &dir, &LoadOptions::default());
    assert_config_err(
        &err,
        &dir.join("config.json"),
        &["missing field", "hidden_size"],
    );
}

#[test]
fn config_field_of_wrong_type() {
    let (_tmp, dir) = tiny_mlm_copy();
    edit_config(&dir, "num_hidden_layers", Some("two".into()));
    let err = load_err("string num_hidden_layers", &dir, &LoadOptions::default());
    assert_config_err(
        &err,
        &dir.join("config.json"),
        &["num_hidden_layers", "invalid type", "\"two\""],
    );
    // An optional field too.
    let (_tmp, dir) = tiny_mlm_copy();
    edit_config(&dir, "layer_norm_eps", Some(serde_json::json!([1e-12])));
    let err = load_err("array layer_norm_eps", &dir, &LoadOptions::default());
    assert_config_err(
        &err,
        &dir.join("config.json"),
        &["layer_norm_eps", "invalid type"],
    );
}

#[test]
fn unknown_activation() {
    let (_tmp, dir) = tiny_mlm_copy();
    edit_config(&dir, "hidden_act", Some("swish".into()));
    let err = load_err("swish", &dir, &LoadOptions::default());
    assert_config_err(
        &err,
        &dir.join("config.json"),
        &["hidden_act", "\"swish\"", "gelu", "relu"],
    );
}

#[test]
fn heads_not_dividing_hidden_size() {
    let (_tmp, dir) = tiny_mlm_copy();
    edit_config(&dir, "num_attention_heads", Some(5.into()));
    let err = load_err("5 heads", &dir, &LoadOptions::default());
    assert_config_err(
        &err,
        &dir.join("config.json"),
        &["num_attention_heads", "32", "5"],
    );
}

/// Asserts a `Mismatch` error on `path` and returns its report lines, checking that the last
/// one names the config the model was built from.
fn mismatch_lines(err: &Error, path: &Path) -> Vec<String> {
    let shown = err.to_string();
    assert!(shown.contains(&path.display().to_string()), "{shown}");
    match err {
        Error::Mismatch { path: p, report } => {
            assert_eq!(p, path);
            let mut lines: Vec<String> = report.lines().map(str::to_string).collect();
            let model = lines.pop().unwrap_or_default();
            let config = path.with_file_name("config.json");
            assert!(
                model.starts_with("model           Bert")
                    && model.ends_with(&format!(" from {}", config.display())),
                "{shown}"
            );
            lines
        }
        other => panic!("expected Error::Mismatch, got {other:?}"),
    }
}

#[test]
fn wrongly_shaped_tensors_are_listed_with_both_shapes() {
    // Layer 1's feed-forward is 40 wide in the checkpoint; the config (and layer 0) say 37.
    let (_tmp, dir) = tiny_mlm_copy();
    let weights = dir.join("model.safetensors");
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    let p = "bert.encoder.layer.1";
    let wide = [
        ("intermediate.dense.bias", vec![40]),
        ("intermediate.dense.weight", vec![40, 32]),
        ("output.dense.weight", vec![32, 40]),
    ];
    for (name, shape) in &wide {
        let t = Tensor::zeros(shape.as_slice(), candle_core::DType::F32, &Device::Cpu).unwrap();
        tensors.insert(format!("{p}.{name}"), t);
    }
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    let err = load_err("layer 1 at 40", &dir, &LoadOptions::default());
    let mut got = mismatch_lines(&err, &weights);
    got.sort();
    let expected = vec![
        format!("shape mismatch  {p}.intermediate.dense.bias: checkpoint [40], model [37]"),
        format!(
            "shape mismatch  {p}.intermediate.dense.weight: checkpoint [40, 32], model [37, 32]"
        ),
        format!("shape mismatch  {p}.output.dense.weight: checkpoint [32, 40], model [32, 37]"),
    ];
    assert_eq!(got, expected, "{err}");
}

#[test]
fn config_sizes_contradicting_the_checkpoint_name_the_field() {
    let (_tmp, dir) = tiny_mlm_copy();
    edit_config(&dir, "intermediate_size", Some(40.into()));
    let err = load_err("intermediate 40", &dir, &LoadOptions::default());
    let weights = dir.join("model.safetensors").display().to_string();
    assert_config_err(
        &err,
        &dir.join("config.json"),
        &[&format!(
            "intermediate_size = 40 but bert.encoder.layer.0.intermediate.dense.weight in \
             {weights} has 37 rows"
        )],
    );
    let (_tmp, dir) = tiny_mlm_copy();
    edit_config(&dir, "num_hidden_layers", Some(3.into()));
    let err = load_err("3 layers", &dir, &LoadOptions::default());
    assert_config_err(
        &err,
        &dir.join("config.json"),
        &["num_hidden_layers = 3 but", "has 2 encoder layers"],
    );
}

#[test]
fn missing_and_unexpected_tensors_in_one_error() {
    let (_tmp, dir) = tiny_mlm_copy();
    let weights = dir.join("model.safetensors");
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    let removed = "bert.encoder.layer.1.attention.self.query.weight";
    assert!(tensors.remove(removed).is_some());
    let extra = "bert.encoder.layer.0.attention.self.rotary.weight";
    tensors.insert(
        extra.into(),
        Tensor::zeros((4, 8), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    // A head this model lacks is not an error.
    tensors.insert(
        "classifier.weight".into(),
        Tensor::zeros((3, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, &weights).unwrap();

    let err = load_err("missing + extra", &dir, &LoadOptions::default());
    let lines = mismatch_lines(&err, &weights);
    assert_eq!(
        lines,
        vec![
            format!("missing         {removed} [32, 32]"),
            format!("unexpected      {extra} [4, 8]"),
        ],
        "{err}"
    );
}

#[test]
fn truncated_safetensors() {
    let (_tmp, dir) = tiny_mlm_copy();
    let weights = dir.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err("truncated", &dir, &LoadOptions::default());
    assert!(
        matches!(&err, Error::Checkpoint { path, .. } if path == &weights),
        "{err:?}"
    );
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    assert!(err.to_string().contains("safetensors"), "{err}");
}

#[test]
fn truncated_pytorch_bin() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cls");
    copy_dir(&fixture("tiny_cls"), &dir);
    let weights = dir.join("pytorch_model.bin");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err("truncated .bin", &dir, &LoadOptions::default());
    assert!(
        matches!(&err, Error::Checkpoint { path, .. } if path == &weights),
        "{err:?}"
    );
    assert!(err.to_string().contains("pytorch_model.bin"), "{err}");
}

#[test]
fn directory_without_weights() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("tiny_mlm/config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let err = load_err("no weights", tmp.path(), &LoadOptions::default());
    match &err {
        Error::Checkpoint { path, msg } => {
            assert_eq!(path, tmp.path());
            for f in ["model.safetensors", "pytorch_model.bin"] {
                assert!(msg.contains(f), "{err}");
            }
        }
        other => panic!("expected Error::Checkpoint, got {other:?}"),
    }
    assert!(err.to_string().contains(&tmp.path().display().to_string()));
}

#[test]
fn directory_without_tokenizer() {
    let (_tmp, dir) = tiny_mlm_copy();
    let err = expect_err("no tokenizer", || load_tokenizer(&dir));
    match &err {
        Error::Tokenizer { path, msg } => {
            assert_eq!(path, &dir);
            assert!(
                msg.contains("tokenizer.json") && msg.contains("vocab.txt"),
                "{err}"
            );
        }
        other => panic!("expected Error::Tokenizer, got {other:?}"),
    }
    assert!(err.to_string().contains(&dir.display().to_string()));
}

#[test]
fn malformed_tokenizer_config() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        asset("minilm").join("vocab.txt"),
        tmp.path().join("vocab.txt"),
    )
    .unwrap();
    let cfg = tmp.path().join("tokenizer_config.json");
    std::fs::write(&cfg, r#"{"do_lower_case": "yes"}"#).unwrap();
    let err = expect_err("do_lower_case string", || load_tokenizer(tmp.path()));
    assert!(
        matches!(&err, Error::Tokenizer { path, msg } if path == &cfg && msg.contains("do_lower_case")),
        "{err:?}"
    );
    std::fs::write(&cfg, "{not json").unwrap();
    let err = expect_err("invalid JSON", || load_tokenizer(tmp.path()));
    assert!(
        matches!(&err, Error::Tokenizer { path, .. } if path == &cfg),
        "{err:?}"
    );
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
}

const MLM_HEAD: [&str; 5] = [
    "cls.predictions.bias",
    "cls.predictions.transform.LayerNorm.bias",
    "cls.predictions.transform.LayerNorm.weight",
    "cls.predictions.transform.dense.bias",
    "cls.predictions.transform.dense.weight",
];

fn mlm_opts(fresh_heads: bool, seed: u64) -> LoadOptions {
    LoadOptions {
        architecture: Some(Architecture::MaskedLm),
        fresh_heads,
        seed,
        ..LoadOptions::default()
    }
}

#[test]
fn base_checkpoint_into_masked_lm_needs_fresh_heads() {
    let dir = fixture("tiny_relu");
    let err = load_err("base into MLM", &dir, &mlm_opts(false, 0));
    let lines = mismatch_lines(&err, &dir.join("model.safetensors"));
    let shapes = ["[99]", "[32]", "[32]", "[32]", "[32, 32]"];
    let expected: Vec<String> = MLM_HEAD
        .iter()
        .zip(shapes)
        .map(|(n, s)| format!("missing         {n} {s}"))
        .collect();
    assert_eq!(lines, expected, "{err}");
}

#[test]
fn fresh_mlm_head_is_reported_and_deterministic() {
    let dir = fixture("tiny_relu");
    let a = load_model(&dir, &mlm_opts(true, 7)).unwrap();
    assert_eq!(a.model.architecture, Architecture::MaskedLm);
    assert_eq!(a.report.initialized, MLM_HEAD.to_vec());
    // The base model's pooler is a head the MLM model lacks: ignored, not an error.
    let ignored: Vec<&str> = a.report.ignored.iter().map(|(n, _)| n.as_str()).collect();
    assert!(ignored.contains(&"pooler.dense.weight"), "{ignored:?}");
    assert!(ignored.contains(&"embeddings.position_ids"), "{ignored:?}");

    let b = load_model(&dir, &mlm_opts(true, 7)).unwrap();
    let c = load_model(&dir, &mlm_opts(true, 8)).unwrap();
    let (bits_a, bits_b, bits_c) = (
        param_bits(&a.varmap),
        param_bits(&b.varmap),
        param_bits(&c.varmap),
    );
    assert_eq!(bits_a, bits_b, "same seed, different fresh head");
    let dense = "cls.predictions.transform.dense.weight";
    assert_ne!(bits_a[dense], bits_c[dense], "seed ignored");
    // Fresh values follow BERT's init: zero biases, unit LayerNorm scale, small weights.
    assert!(bits_a["cls.predictions.bias"].iter().all(|&b| b == 0));
    assert!(bits_a["cls.predictions.transform.LayerNorm.weight"]
        .iter()
        .all(|&b| b == 1.0f32.to_bits()));
    let w: Vec<f32> = bits_a[dense].iter().map(|&b| f32::from_bits(b)).collect();
    let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
    assert!((0.015..0.025).contains(&std), "dense weight std {std}");
    // The encoder comes from the checkpoint, not the seed.
    let name = "bert.encoder.layer.0.attention.self.query.weight";
    assert_eq!(bits_a[name], bits_c[name]);
    let file = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let stored = &file["encoder.layer.0.attention.self.query.weight"];
    let stored: Vec<u32> = stored
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(bits_a[name], stored);
    // The model runs and gives vocabulary logits.
    let exp = expected(fixture("tiny_relu/expected.safetensors"));
    let out = a
        .model
        .encode(&input(&exp), &[], &mut kd_bert::ForwardCtx::eval())
        .unwrap();
    let logits = a.model.mlm_logits(out.last_hidden_state()).unwrap();
    assert_eq!(logits.dims(), &[2, 9, 99]);
}

#[test]
fn fresh_classifier_on_masked_lm_checkpoint() {
    let opts = LoadOptions {
        architecture: Some(Architecture::SequenceClassification),
        fresh_heads: true,
        num_labels: Some(5),
        ..LoadOptions::default()
    };
    let loaded = load_model(&fixture("tiny_mlm"), &opts).unwrap();
    assert_eq!(
        loaded.report.initialized,
        vec![
            "bert.pooler.dense.bias",
            "bert.pooler.dense.weight",
            "classifier.bias",
            "classifier.weight",
        ]
    );
    assert!(loaded
        .report
        .ignored
        .iter()
        .any(|(n, why)| n == "cls.predictions.bias" && why.contains("head")));
    assert_eq!(loaded.model.config.num_labels(), 5);
}
