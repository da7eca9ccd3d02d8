//! Hand-derived values: identical student and teacher, a 2-class KL, uniform logits, cosine
//! geometry, the attention threshold, scaling, dtypes, empty inputs and loss combination.

mod common;

use candle_core::{DType, Device, Tensor, Var, D};
use common::*;
use kd_distill::combine::{CE, COS, MLM};
use kd_distill::*;

fn t2(rows: &[&[f32]]) -> Tensor {
    let cols = rows[0].len();
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), cols), &Device::Cpu).unwrap()
}

fn val(t: &Tensor) -> f64 {
    scalar(t)
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // Deterministic pseudo-random values without candle's unseeded RNG.
    let n: usize = shape.iter().product();
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 6.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn topk_of(logits: &Tensor, k: usize, t: f64) -> TopKTargets {
    // Top-k of each row with the log-partition at T, in the row-maximum frame.
    let rows: Vec<Vec<f32>> = logits.to_vec2().unwrap();
    let (mut ids, mut z, mut lz) = (vec![], vec![], vec![]);
    for r in &rows {
        let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut order: Vec<usize> = (0..r.len()).collect();
        order.sort_by(|&a, &b| r[b].total_cmp(&r[a]));
        for &i in &order[..k] {
            ids.push(i as u32);
            z.push(r[i] - max);
        }
        let s: f64 = r.iter().map(|&x| ((f64::from(x - max)) / t).exp()).sum();
        lz.push(s.ln() as f32);
    }
    TopKTargets::from_slices(&ids, &z, &lz, k, t, &Device::Cpu).unwrap()
}

#[test]
fn identical_student_and_teacher_give_zero() {
    let x = randn(&[4, 20], 1);
    let cfg = SoftTargetConfig::default();
    let s = Var::from_tensor(&x).unwrap();
    let losses = [
        ("full", soft_target_full(s.as_tensor(), &x, &cfg).unwrap()),
        (
            "topk rest",
            soft_target_topk(
                s.as_tensor(),
                &topk_of(&x, 5, 2.0),
                TailMode::RestBucket,
                &cfg,
            )
            .unwrap(),
        ),
        (
            "topk renorm",
            soft_target_topk(
                s.as_tensor(),
                &topk_of(&x, 5, 2.0),
                TailMode::Renormalize,
                &cfg,
            )
            .unwrap(),
        ),
        ("logit mse", logit_mse(s.as_tensor(), &x).unwrap()),
        (
            "soft ce - entropy",
            (prediction_soft_ce(s.as_tensor(), &x, 1.0, SoftCeReduction::BatchMean).unwrap()
                - prediction_soft_ce(&x, &x, 1.0, SoftCeReduction::BatchMean).unwrap())
            .unwrap(),
        ),
    ];
    for (name, l) in losses {
        let (value, g) = value_and_grads(&[&s], &l);
        let gmax = max_err(&g[0], &g[0].zeros_like().unwrap());
        println!("{name}: value {value:.2e}, max |grad| {gmax:.2e}");
        assert!(
            value.abs() < 1e-6 && gmax < 1e-6,
            "{name}: {value} / {gmax}"
        );
    }
    let h = randn(&[2, 3, 8], 2);
    let mask = t2(&[&[1.0, 1.0, 0.0], &[1.0, 0.0, 0.0]]);
    assert!(val(&cosine_embedding(&h, &h, &mask).unwrap()).abs() < 1e-6);
    assert!(val(&hidden_mse(&h, &h).unwrap()).abs() < 1e-12);
    let a = randn(&[1, 2, 3, 3], 3);
    assert!(val(&attention_mse(&a, &a).unwrap()).abs() < 1e-12);
}

#[test]
fn two_class_kl_has_its_known_value() {
    // p = (3/4, 1/4) from teacher logits (ln 3, 0); q = (1/2, 1/2) from zeros.
    let kl = 0.75 * 1.5f64.ln() + 0.25 * 0.5f64.ln();
    let s = t2(&[&[0.0, 0.0]]);
    let t1 = t2(&[&[3f32.ln(), 0.0]]);
    let plain = SoftTargetConfig {
        temperature: 1.0,
        t2_scaling: false,
    };
    assert_scalar(
        "KL T=1",
        val(&soft_target_full(&s, &t1, &plain).unwrap()),
        kl,
        1e-7,
    );
    // At T = 2 the same distributions come from doubled logits; T² multiplies the KL by 4.
    let tt = t2(&[&[2.0 * 3f32.ln(), 0.0]]);
    let cfg = SoftTargetConfig::new(2.0);
    assert_scalar(
        "KL T=2",
        val(&soft_target_full(&s, &tt, &cfg).unwrap()),
        4.0 * kl,
        1e-6,
    );
    let no_t2 = SoftTargetConfig {
        t2_scaling: false,
        ..cfg
    };
    assert_scalar(
        "KL T=2 no T²",
        val(&soft_target_full(&s, &tt, &no_t2).unwrap()),
        kl,
        1e-7,
    );
    // Top-1 with the rest bucket: buckets {0} and {1} are the two classes, the same KL.
    let top1 = topk_of(&tt, 1, 2.0);
    let rest = soft_target_topk(&s, &top1, TailMode::RestBucket, &cfg).unwrap();
    assert_scalar("top-1 rest bucket", val(&rest), 4.0 * kl, 1e-6);
    let renorm = soft_target_topk(&s, &top1, TailMode::Renormalize, &cfg).unwrap();
    assert_scalar("top-1 renormalised", val(&renorm), 0.0, 1e-7);
    // Cross-entropy of the same pair: H(p, q) = ln 2.
    let ce = prediction_soft_ce(&s, &t1, 1.0, SoftCeReduction::BatchMean).unwrap();
    assert_scalar("soft CE", val(&ce), 2f64.ln(), 1e-7);
    let ce = prediction_soft_ce(&s, &t1, 1.0, SoftCeReduction::ElementMean).unwrap();
    assert_scalar("soft CE element mean", val(&ce), 2f64.ln() / 2.0, 1e-7);
}

#[test]
fn uniform_logits_give_log_vocab_cross_entropy() {
    let logits = Tensor::zeros((3, 40), DType::F32, &Device::Cpu).unwrap();
    let labels = Tensor::new(&[0u32, 17, 39], &Device::Cpu).unwrap();
    let ce = mlm_cross_entropy(&logits, &labels).unwrap();
    assert_scalar("uniform CE", val(&ce), 40f64.ln(), 1e-6);
    // One draw of each position's label: the sampled estimate at T = 1 is the same CE.
    let sampled =
        SampledTargets::from_slices(&[0, 1, 2, 3], &[0, 17, 39], &[1u16, 1, 1], &Device::Cpu)
            .unwrap();
    let cfg = SoftTargetConfig {
        temperature: 1.0,
        t2_scaling: true,
    };
    let l = soft_target_sampled(&logits, &sampled, &cfg).unwrap();
    assert_scalar("sampled CE", val(&l), 40f64.ln(), 1e-6);
}

#[test]
fn cosine_geometry() {
    let s = Tensor::new(&[[[1f32, 0.0], [1.0, 1.0], [3.0, 4.0]]], &Device::Cpu).unwrap();
    let t = Tensor::new(&[[[0f32, 2.0], [-2.0, -2.0], [9.0, 9.0]]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 0]], &Device::Cpu).unwrap();
    // Orthogonal (1 − 0) and opposite (1 + 1); the third row is padding.
    assert_scalar(
        "cos",
        val(&cosine_embedding(&s, &t, &mask).unwrap()),
        1.5,
        1e-7,
    );
    let scaled = s.affine(7.0, 0.0).unwrap();
    let all = Tensor::new(&[[1u8, 1, 1]], &Device::Cpu).unwrap();
    assert!(val(&cosine_embedding(&s, &scaled, &all).unwrap()).abs() < 1e-7);
}

#[test]
fn attention_threshold_applies_to_each_side() {
    let dev = &Device::Cpu;
    let s = Tensor::new(&[-100f32, -99.5, 3.0, -10003.0], dev)
        .unwrap()
        .reshape((1, 1, 2, 2))
        .unwrap();
    let t = Tensor::new(&[1f32, 0.5, -100.0, -9998.0], dev)
        .unwrap()
        .reshape((1, 1, 2, 2))
        .unwrap();
    // ŝ = (0, -99.5, 3, 0), t̂ = (1, 0.5, 0, 0): squared diffs 1, 10000, 9, 0.
    let sv = Var::from_tensor(&s).unwrap();
    let l = attention_mse(sv.as_tensor(), &t).unwrap();
    let (value, g) = value_and_grads(&[&sv], &l);
    assert_scalar("attention", value, 10010.0 / 4.0, 1e-7);
    let g: Vec<f32> = g[0].flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(g, [0.0, -50.0, 1.5, 0.0]);
}

#[test]
fn half_precision_and_f64_students() {
    let x = randn(&[3, 30], 4);
    let t = randn(&[3, 30], 5);
    let cfg = SoftTargetConfig::default();
    let reference = val(&soft_target_full(&x, &t, &cfg).unwrap());
    for dtype in [DType::F16, DType::BF16, DType::F64] {
        let s = Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap();
        let l = soft_target_full(s.as_tensor(), &t.to_dtype(dtype).unwrap(), &cfg).unwrap();
        let (value, g) = value_and_grads(&[&s], &l);
        assert_eq!(g[0].dtype(), dtype);
        let tol = if dtype == DType::F64 { 1e-6 } else { 5e-2 };
        assert_scalar(&format!("{dtype:?}"), value, reference, tol);
    }
}

#[test]
fn empty_inputs_give_a_connected_zero() {
    let cfg = SoftTargetConfig::default();
    let s = Var::from_tensor(&Tensor::zeros((0, 10), DType::F32, &Device::Cpu).unwrap()).unwrap();
    let t = Tensor::zeros((0, 10), DType::F32, &Device::Cpu).unwrap();
    let no_labels = Tensor::zeros(0, DType::U32, &Device::Cpu).unwrap();
    let topk = TopKTargets::from_slices(&[], &[], &[], 3, 2.0, &Device::Cpu).unwrap();
    let sampled = SampledTargets::from_slices::<u16>(&[0], &[], &[], &Device::Cpu).unwrap();
    for l in [
        soft_target_full(s.as_tensor(), &t, &cfg).unwrap(),
        soft_target_topk(s.as_tensor(), &topk, TailMode::RestBucket, &cfg).unwrap(),
        soft_target_sampled(s.as_tensor(), &sampled, &cfg).unwrap(),
        mlm_cross_entropy(s.as_tensor(), &no_labels).unwrap(),
    ] {
        assert_eq!(l.dims(), [] as [usize; 0]);
        assert_eq!(val(&l), 0.0);
        assert!(l.backward().unwrap().get(s.as_tensor()).is_some());
    }
    let h = Tensor::ones((1, 2, 4), DType::F32, &Device::Cpu).unwrap();
    let none = Tensor::zeros((1, 2), DType::U32, &Device::Cpu).unwrap();
    assert_eq!(val(&cosine_embedding(&h, &h, &none).unwrap()), 0.0);
}

#[test]
fn log_softmax_compositions_are_differentiable() {
    let x = randn(&[3, 7], 6).to_dtype(DType::F64).unwrap();
    let r = randn(&[3, 7], 7).to_dtype(DType::F64).unwrap();
    let v = Var::from_tensor(&x).unwrap();
    let ours = kd_distill::ops::log_softmax_last_dim(v.as_tensor()).unwrap();
    let candle = candle_nn::ops::log_softmax(v.as_tensor(), D::Minus1).unwrap();
    assert!(max_err(&ours, &candle) < 1e-12);
    let g_ours = ours.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let g_candle = candle
        .mul(&r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let (a, b) = (g_ours.get(&v).unwrap(), g_candle.get(&v).unwrap());
    // Analytic: d/dx_j Σ_i r_i log q_i = r_j − q_j Σ_i r_i.
    let q = candle_nn::ops::softmax(&x, D::Minus1).unwrap();
    let expected = r
        .sub(&q.broadcast_mul(&r.sum_keepdim(1).unwrap()).unwrap())
        .unwrap();
    assert_close("ours vs analytic", a, &expected, 1e-12);
    assert_close("candle_nn vs analytic", b, &expected, 1e-12);
}

#[test]
fn weights_combine_named_terms() {
    let w = LossWeights::distilbert();
    assert_eq!(
        (w.get(CE), w.get(MLM), w.get(COS)),
        (Some(5.0), Some(2.0), Some(1.0))
    );
    let s = Var::from_tensor(&Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap()).unwrap();
    let ce = s.as_tensor().sum_all().unwrap(); // 3
    let mlm = s.as_tensor().sqr().unwrap().sum_all().unwrap(); // 5
    let out = w.combine(&[(CE, ce), (MLM, mlm)]).unwrap();
    assert_eq!(val(&out.total), 5.0 * 3.0 + 2.0 * 5.0);
    assert_eq!(out.terms.get(CE), Some(&3.0));
    assert_eq!(out.terms.get(MLM), Some(&5.0));
    let g = out.total.backward().unwrap();
    let g: Vec<f32> = g.get(&s).unwrap().to_vec1().unwrap();
    assert_eq!(g, [5.0 + 2.0 * 2.0 * 1.0, 5.0 + 2.0 * 2.0 * 2.0]);
    let zero = Tensor::new(0f32, &Device::Cpu).unwrap();
    let e = w
        .combine(&[("hidden", zero.clone())])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no weight for loss term \"hidden\""), "{e}");
    let e = w
        .combine(&[(CE, zero.clone()), (CE, zero)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("given twice"), "{e}");
    let e = w
        .combine(&[(CE, s.as_tensor().clone())])
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a scalar: shape [2]"), "{e}");
    assert!(w.combine(&[]).is_err());
    // A zero weight reports the term but keeps a NaN out of the total.
    let nan = Tensor::new(f32::NAN, &Device::Cpu).unwrap();
    let w0 = LossWeights::new().with("a", 1.0).with("b", 0.0);
    let out = w0
        .combine(&[("a", Tensor::new(2f32, &Device::Cpu).unwrap()), ("b", nan)])
        .unwrap();
    assert_eq!(val(&out.total), 2.0);
    assert!(out.terms["b"].is_nan());
}

#[test]
fn extreme_logits_stay_finite() {
    // Student mass all on one id (the rest of the vocabulary underflows), a teacher with a
    // masked (-inf) entry: values and gradients stay finite.
    let s = t2(&[&[1e4, 0.0, -1e4, 5.0], &[0.0, 0.0, 0.0, 0.0]]);
    let t = t2(&[
        &[3.0, f32::NEG_INFINITY, 0.0, 1.0],
        &[50.0, -50.0, 0.0, 0.0],
    ]);
    let t_finite = t2(&[&[3.0, -20.0, 0.0, 1.0], &[50.0, -50.0, 0.0, 0.0]]);
    let cfg = SoftTargetConfig::default();
    let top2 = topk_of(&t_finite, 2, 2.0);
    let sampled =
        SampledTargets::from_slices(&[0, 2, 3], &[0, 2, 0], &[3u16, 1, 4], &Device::Cpu).unwrap();
    let labels = Tensor::new(&[2u32, 1], &Device::Cpu).unwrap();
    let sv = Var::from_tensor(&s).unwrap();
    let x = sv.as_tensor();
    for (name, l) in [
        ("full", soft_target_full(x, &t, &cfg)),
        (
            "topk rest",
            soft_target_topk(x, &top2, TailMode::RestBucket, &cfg),
        ),
        (
            "topk renorm",
            soft_target_topk(x, &top2, TailMode::Renormalize, &cfg),
        ),
        ("sampled", soft_target_sampled(x, &sampled, &cfg)),
        ("mlm", mlm_cross_entropy(x, &labels)),
        (
            "soft ce",
            prediction_soft_ce(x, &t, 1.0, SoftCeReduction::BatchMean),
        ),
    ] {
        let (value, g) = value_and_grads(&[&sv], &l.unwrap());
        let g: Vec<f32> = g[0].flatten_all().unwrap().to_vec1().unwrap();
        println!("{name}: {value}");
        assert!(
            value.is_finite() && g.iter().all(|v| v.is_finite()),
            "{name}: {value} {g:?}"
        );
    }
}
