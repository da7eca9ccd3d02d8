use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use kd_train::{is_no_decay, AdamW, AdamWConfig, Error, NamedVar};

use crate::{assert_close, values, var};

const GW: [[f64; 3]; 3] = [[0.1, -0.2, 0.3], [-0.5, 0.4, 0.0], [0.05, 0.05, -1.0]];
const GB: [[f64; 2]; 3] = [[1.0, -1.0], [0.5, 0.5], [-0.25, 2.0]];
const LRS: [f64; 3] = [0.1, 0.05, 0.02];

fn cfg() -> AdamWConfig {
    AdamWConfig {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    }
}

/// Plain f64 AdamW recurrence (torch.optim.AdamW, amsgrad=False).
fn reference(p0: &[f64], grads: &[&[f64]], lrs: &[f64], c: &AdamWConfig, wd: f64) -> Vec<f64> {
    let mut p = p0.to_vec();
    let mut m = vec![0.0; p.len()];
    let mut v = vec![0.0; p.len()];
    for (t, (g, lr)) in grads.iter().zip(lrs).enumerate() {
        let t = (t + 1) as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for i in 0..p.len() {
            p[i] *= 1.0 - lr * wd;
            m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
            v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
            let denom = v[i].sqrt() / bc2.sqrt() + c.eps;
            p[i] -= lr / bc1 * m[i] / denom;
        }
    }
    p
}

fn grads_for(pairs: &[(&Var, &[f64])]) -> GradStore {
    let mut store = GradStore::default();
    for (v, g) in pairs {
        let t = Tensor::new(*g, &Device::Cpu)
            .unwrap()
            .to_dtype(v.dtype())
            .unwrap();
        store.insert(v.as_tensor(), t);
    }
    store
}

fn three_steps(dtype: DType) -> (Vec<f64>, Vec<f64>, AdamW) {
    let w = Var::from_tensor(
        &Tensor::new(&[1.0f64, -2.0, 0.5], &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
    )
    .unwrap();
    let b = Var::from_tensor(
        &Tensor::new(&[0.25f64, -0.75], &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
    )
    .unwrap();
    let named: Vec<NamedVar> = vec![
        ("cls.predictions.transform.dense.weight".into(), w.clone()),
        ("cls.predictions.transform.dense.bias".into(), b.clone()),
    ];
    let mut opt = AdamW::builder(cfg()).build_named(named).unwrap();
    for i in 0..3 {
        opt.set_lr(LRS[i]).unwrap();
        opt.step(&grads_for(&[(&w, &GW[i]), (&b, &GB[i])])).unwrap();
    }
    (values(w.as_tensor()), values(b.as_tensor()), opt)
}

#[test]
fn adamw_matches_closed_form_f64() {
    let (w, b, opt) = three_steps(DType::F64);
    let gw: Vec<&[f64]> = GW.iter().map(|g| g.as_slice()).collect();
    let gb: Vec<&[f64]> = GB.iter().map(|g| g.as_slice()).collect();
    assert_close(
        &w,
        &reference(&[1.0, -2.0, 0.5], &gw, &LRS, &cfg(), 0.1),
        1e-12,
    );
    // The bias is in the no-decay group.
    assert_close(
        &b,
        &reference(&[0.25, -0.75], &gb, &LRS, &cfg(), 0.0),
        1e-12,
    );
    assert_eq!(opt.num_updates(), 3);
}

#[test]
fn adamw_matches_closed_form_f32() {
    let (w, b, _) = three_steps(DType::F32);
    let gw: Vec<&[f64]> = GW.iter().map(|g| g.as_slice()).collect();
    let gb: Vec<&[f64]> = GB.iter().map(|g| g.as_slice()).collect();
    assert_close(
        &w,
        &reference(&[1.0, -2.0, 0.5], &gw, &LRS, &cfg(), 0.1),
        1e-6,
    );
    assert_close(&b, &reference(&[0.25, -0.75], &gb, &LRS, &cfg(), 0.0), 1e-6);
}

#[test]
fn adamw_matches_torch_values() {
    // torch.optim.AdamW (float64), decay group wd=0.1 and no-decay group,
    // same grads and per-step lr as above.
    let (w, b, _) = three_steps(DType::F64);
    let torch_w = [0.9215956932962689, -1.8921726911130317, 0.36806756145734454];
    let torch_b = [0.09211779228871425, -0.6458297849164756];
    assert_close(&w, &torch_w, 1e-12);
    assert_close(&b, &torch_b, 1e-12);
}

#[test]
fn no_decay_predicate() {
    assert!(is_no_decay(
        "bert.encoder.layer.0.attention.self.query.bias"
    ));
    assert!(is_no_decay("bert.embeddings.LayerNorm.weight"));
    assert!(is_no_decay("bert.encoder.layer.3.output.LayerNorm.bias"));
    assert!(is_no_decay("cls.predictions.bias"));
    assert!(!is_no_decay(
        "bert.encoder.layer.0.attention.self.query.weight"
    ));
    assert!(!is_no_decay("bert.embeddings.word_embeddings.weight"));
}

#[test]
fn groups_and_frozen_vars() {
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let init = candle_nn::Init::Const(1.0);
    let emb = vb
        .get_with_hints(3, "bert.embeddings.word_embeddings.weight", init)
        .unwrap();
    let ln = vb
        .get_with_hints(3, "bert.embeddings.LayerNorm.weight", init)
        .unwrap();
    let q = vb
        .get_with_hints(3, "bert.encoder.layer.0.attention.self.query.weight", init)
        .unwrap();
    let opt_builder = AdamW::builder(cfg()).freeze_when(|n| n.contains("embeddings.word_"));
    let mut opt = opt_builder.build(&vm).unwrap();
    assert_eq!(
        opt.frozen_names(),
        ["bert.embeddings.word_embeddings.weight"]
    );
    assert_eq!(opt.no_decay_names(), ["bert.embeddings.LayerNorm.weight"]);
    assert_eq!(
        opt.decay_names(),
        ["bert.encoder.layer.0.attention.self.query.weight"]
    );
    let loss = (emb.sum_all().unwrap() + ln.sum_all().unwrap() + q.sum_all().unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    opt.step(&grads).unwrap();
    assert_eq!(values(&emb), vec![1.0; 3], "frozen var must not change");
    assert!(values(&ln).iter().all(|&x| x < 1.0));
    // Same gradient: decayed var moves further than the no-decay one.
    assert!(values(&q)[0] < values(&ln)[0]);
    let state = opt.state_tensors().unwrap();
    assert!(!state.keys().any(|k| k.contains("word_embeddings")));

    // Explicit decay predicate: nothing decays.
    let opt = AdamW::builder(cfg())
        .decay_when(|_| false)
        .build(&vm)
        .unwrap();
    assert!(opt.decay_names().is_empty());
}

#[test]
fn missing_grad_skips_param() {
    let a = var(&[1.0, 2.0]);
    let b = var(&[3.0]);
    let mut opt = AdamW::builder(cfg())
        .build_named(vec![("a".into(), a.clone()), ("b".into(), b.clone())])
        .unwrap();
    opt.step(&grads_for(&[(&a, &[1.0, 1.0])])).unwrap();
    assert_eq!(values(&b), vec![3.0]);
    let st = opt.state_tensors().unwrap();
    assert_eq!(st["step.a"].to_scalar::<i64>().unwrap(), 1);
    assert_eq!(st["step.b"].to_scalar::<i64>().unwrap(), 0);
}

#[test]
fn state_roundtrip_continues_identically() {
    let run = |restore_from: Option<&HashMap<String, Tensor>>| {
        let a = var(&[0.5, -1.5, 2.0]);
        let mut opt = AdamW::builder(cfg())
            .build_named(vec![("x.weight".into(), a.clone())])
            .unwrap();
        if let Some(st) = restore_from {
            // Restore weights reached after 2 steps, then the state.
            a.set(&st["__weights"]).unwrap();
            let mut st = st.clone();
            st.remove("__weights");
            opt.load_state_tensors(&st).unwrap();
        } else {
            for g in [[0.1, 0.2, -0.3], [0.3, -0.1, 0.2]] {
                opt.step(&grads_for(&[(&a, &g)])).unwrap();
            }
        }
        let mut st = opt.state_tensors().unwrap();
        st.insert("__weights".into(), a.as_tensor().copy().unwrap());
        opt.step(&grads_for(&[(&a, &[-0.2, 0.4, 0.1])])).unwrap();
        (
            a.as_tensor().to_vec1::<f32>().unwrap(),
            st,
            opt.num_updates(),
        )
    };
    let (straight, st, n1) = run(None);
    let (resumed, _, n2) = run(Some(&st));
    assert_eq!(n1, 3);
    assert_eq!(n2, 3);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&straight), bits(&resumed));
}

#[test]
fn load_state_errors() {
    let a = var(&[1.0, 2.0]);
    let mut opt = AdamW::builder(cfg())
        .build_named(vec![("a".into(), a.clone())])
        .unwrap();
    let good = opt.state_tensors().unwrap();

    let mut missing = good.clone();
    missing.remove("exp_avg_sq.a");
    let err = opt.load_state_tensors(&missing).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor { name } if name == "exp_avg_sq.a"),
        "{err}"
    );

    let mut bad_shape = good.clone();
    bad_shape.insert(
        "exp_avg.a".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let err = opt.load_state_tensors(&bad_shape).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");

    let mut extra = good.clone();
    extra.insert(
        "exp_avg.frozen".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let err = opt.load_state_tensors(&extra).unwrap_err();
    assert!(matches!(err, Error::UnexpectedTensor { .. }), "{err}");

    opt.load_state_tensors(&good).unwrap();
}

#[test]
fn invalid_config_is_an_error() {
    let mut c = cfg();
    c.beta1 = 1.0;
    assert!(AdamW::builder(c).build_named(Vec::new()).is_err());
    let mut opt = AdamW::builder(cfg()).build_named(Vec::new()).unwrap();
    assert!(opt.set_lr(f64::NAN).is_err());
    assert!(opt.set_lr(-1.0).is_err());
}

#[test]
fn half_precision_params_keep_f32_moments() {
    let w = Var::from_tensor(
        &Tensor::new(&[1.0f32, -1.0], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap(),
    )
    .unwrap();
    let mut opt = AdamW::builder(cfg())
        .build_named(vec![("w".into(), w.clone())])
        .unwrap();
    opt.step(&grads_for(&[(&w, &[1.0, -1.0])])).unwrap();
    assert_eq!(w.dtype(), DType::BF16);
    let st = opt.state_tensors().unwrap();
    assert_eq!(st["exp_avg.w"].dtype(), DType::F32);
    let got = values(w.as_tensor());
    assert!(got[0] < 1.0 && got[1] > -1.0);
}
