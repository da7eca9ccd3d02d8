//! Loss values and gradients against the PyTorch fixtures of
//! `tests/fixtures/make_loss_fixtures.py` (tolerance 1e-5, relative above 1).

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::*;
use kd_distill::*;

const TOL: f64 = 1e-5;

/// Checks `loss(student)` and its gradient against `<prefix>.loss` / `<prefix>.grad`, with the
/// student in `f32` (the fused CPU kernels where a loss has one) and in `f64` (the composed
/// candle ops every other device and dtype uses).
fn check(
    f: &std::collections::HashMap<String, Tensor>,
    prefix: &str,
    student: &str,
    loss: impl Fn(&Tensor) -> Result<Tensor>,
) {
    for dtype in [DType::F32, DType::F64] {
        let s = var(&get(f, student).to_dtype(dtype).unwrap());
        let l = loss(s.as_tensor()).unwrap();
        let (value, g) = value_and_grads(&[&s], &l);
        assert_scalar(
            &format!("{prefix} {dtype:?} value"),
            value,
            scalar(&get(f, &format!("{prefix}.loss"))),
            TOL,
        );
        assert_close(
            &format!("{prefix} {dtype:?} grad"),
            &g[0],
            &get(f, &format!("{prefix}.grad")),
            TOL,
        );
    }
}

fn topk(f: &std::collections::HashMap<String, Tensor>, prefix: &str, t: f64) -> TopKTargets {
    TopKTargets::new(
        &get_u32(f, &format!("{prefix}.ids")),
        &get(f, &format!("{prefix}.logits")),
        &get(f, &format!("{prefix}.log_partition")),
        t,
    )
    .unwrap()
}

#[test]
fn soft_target_full_matches_distilbert() {
    let f = fixture("soft_targets.safetensors");
    let teacher = get(&f, "teacher");
    let cfg = SoftTargetConfig::new(scalar(&get(&f, "temperature")));
    check(&f, "full", "student", |s| {
        soft_target_full(s, &teacher, &cfg)
    });
}

#[test]
fn soft_target_topk_matches_formulas() {
    let f = fixture("soft_targets.safetensors");
    let cfg = SoftTargetConfig::new(scalar(&get(&f, "temperature")));
    let targets = topk(&f, "topk", cfg.temperature);
    check(&f, "topk_rest", "student", |s| {
        soft_target_topk(s, &targets, TailMode::RestBucket, &cfg)
    });
    check(&f, "topk_renorm", "student", |s| {
        soft_target_topk(s, &targets, TailMode::Renormalize, &cfg)
    });
}

#[test]
fn soft_target_topk_with_full_vocabulary_is_distilbert_kl() {
    let f = fixture("soft_targets.safetensors");
    let cfg = SoftTargetConfig::new(scalar(&get(&f, "temperature")));
    let targets = topk(&f, "fullk", cfg.temperature);
    assert_eq!(targets.k(), 50);
    check(&f, "full", "student", |s| {
        soft_target_topk(s, &targets, TailMode::RestBucket, &cfg)
    });
    // And against the Rust full-logit loss directly.
    let s = get(&f, "student");
    let a = soft_target_topk(&s, &targets, TailMode::RestBucket, &cfg).unwrap();
    let b = soft_target_full(&s, &get(&f, "teacher"), &cfg).unwrap();
    assert_scalar("k = V vs full", scalar(&a), scalar(&b), 1e-6);
}

#[test]
fn soft_target_topk_from_cache_layout() {
    let f = fixture("soft_targets.safetensors");
    let t = scalar(&get(&f, "temperature")) as f32;
    let ids = get_u32_vec(&f, "topk.ids");
    let logits: Vec<f32> = get(&f, "topk.logits")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let lz: Vec<f32> = get(&f, "topk.log_partition").to_vec1().unwrap();
    // Two stored temperatures per position, the loss's one second.
    let stored: Vec<f32> = lz.iter().flat_map(|&v| [v + 100.0, v]).collect();
    let targets =
        TopKTargets::from_cache_layout(&ids, &logits, &stored, &[1.0, t], t, 8, &Device::Cpu)
            .unwrap();
    let cfg = SoftTargetConfig::new(f64::from(t));
    check(&f, "topk_rest", "student", |s| {
        soft_target_topk(s, &targets, TailMode::RestBucket, &cfg)
    });
    let err =
        TopKTargets::from_cache_layout(&ids, &logits, &stored, &[1.0, t], 3.0, 8, &Device::Cpu)
            .unwrap_err();
    assert!(
        err.to_string().contains("temperature 3 is not stored"),
        "{err}"
    );
}

#[test]
fn soft_target_sampled_matches_formula() {
    let f = fixture("soft_targets.safetensors");
    let cfg = SoftTargetConfig::new(scalar(&get(&f, "temperature")));
    let targets = SampledTargets::from_slices(
        &get_u32_vec(&f, "sampled.offsets"),
        &get_u32_vec(&f, "sampled.ids"),
        &get_u32_vec(&f, "sampled.counts"),
        &Device::Cpu,
    )
    .unwrap();
    check(&f, "sampled", "student", |s| {
        soft_target_sampled(s, &targets, &cfg)
    });
}

#[test]
fn mlm_cross_entropy_matches_torch() {
    let f = fixture("soft_targets.safetensors");
    let labels = get(&f, "labels"); // int64, as torch stores them
    check(&f, "mlm", "student", |s| mlm_cross_entropy(s, &labels));
}

#[test]
fn cosine_embedding_matches_distilbert() {
    let f = fixture("hidden.safetensors");
    let (t, mask) = (get(&f, "teacher"), get(&f, "attention_mask"));
    check(&f, "cos", "student", |s| cosine_embedding(s, &t, &mask));
}

#[test]
fn hidden_mse_matches_tinybert() {
    let f = fixture("hidden.safetensors");
    let t = get(&f, "teacher");
    check(&f, "hidden_mse", "student", |s| hidden_mse(s, &t));
}

#[test]
fn projection_then_hidden_mse_matches_torch() {
    let f = fixture("hidden.safetensors");
    let t = get(&f, "teacher");
    let (w, b) = (var(&get(&f, "proj.weight")), var(&get(&f, "proj.bias")));
    let proj = Projection::from_tensors(w.as_tensor().clone(), b.as_tensor().clone()).unwrap();
    let s = var(&get(&f, "student_small"));
    let l = hidden_mse(&proj.project(s.as_tensor()).unwrap(), &t).unwrap();
    let (value, g) = value_and_grads(&[&s, &w, &b], &l);
    assert_scalar(
        "proj_mse value",
        value,
        scalar(&get(&f, "proj_mse.loss")),
        TOL,
    );
    assert_close("proj_mse grad", &g[0], &get(&f, "proj_mse.grad"), TOL);
    assert_close(
        "proj_mse grad weight",
        &g[1],
        &get(&f, "proj_mse.grad_weight"),
        TOL,
    );
    assert_close(
        "proj_mse grad bias",
        &g[2],
        &get(&f, "proj_mse.grad_bias"),
        TOL,
    );
}

#[test]
fn projection_initialises_like_bert() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let proj = Projection::new(vb.pp("fit_dense"), 312, 768).unwrap();
    assert_eq!((proj.student_dim(), proj.teacher_dim()), (312, 768));
    let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    assert!(names.contains(&"fit_dense.weight".to_string()), "{names:?}");
    let w: Vec<f32> = proj.weight().flatten_all().unwrap().to_vec1().unwrap();
    let std = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
    assert!((std - 0.02).abs() < 0.001, "weight std {std}");
    let b: Vec<f32> = proj.bias().to_vec1().unwrap();
    assert!(b.iter().all(|&x| x == 0.0));
    let err = proj
        .project(&Tensor::zeros((2, 3, 16), DType::F32, &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("[2, 3, 16]"), "{err}");
}

#[test]
fn attention_mse_matches_tinybert() {
    let f = fixture("attention.safetensors");
    let t = get(&f, "teacher");
    check(&f, "attention", "student", |s| attention_mse(s, &t));
}

#[test]
fn prediction_soft_ce_matches_tinybert() {
    let f = fixture("prediction.safetensors");
    let t = get(&f, "teacher");
    let batch = SoftCeReduction::BatchMean;
    check(&f, "soft_ce_t1", "student", |s| {
        prediction_soft_ce(s, &t, 1.0, batch)
    });
    check(&f, "soft_ce_t2", "student", |s| {
        prediction_soft_ce(s, &t, 2.0, batch)
    });
    check(&f, "soft_ce_t1_elem", "student", |s| {
        prediction_soft_ce(s, &t, 1.0, SoftCeReduction::ElementMean)
    });
}

#[test]
fn logit_mse_matches_torch() {
    let f = fixture("prediction.safetensors");
    let t = get(&f, "teacher");
    check(&f, "mse", "student", |s| logit_mse(s, &t));
}
