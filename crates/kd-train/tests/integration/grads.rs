use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use candle_nn::{Module, VarBuilder, VarMap};
use kd_train::{
    clip_grad_norm, global_norm, missing_or_zero_grads, named_vars, GradAccumulator, NamedVar,
};

use crate::{assert_close, values, var};

#[test]
fn clip_matches_torch() {
    let a = var(&[0.0, 0.0]);
    let c = var(&[0.0]);
    let vars: Vec<NamedVar> = vec![("a".into(), a.clone()), ("c".into(), c.clone())];
    let mut g = GradStore::default();
    g.insert(
        a.as_tensor(),
        Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap(),
    );
    g.insert(c.as_tensor(), Tensor::new(&[12f32], &Device::Cpu).unwrap());
    let norm = clip_grad_norm(&mut g, &vars, 6.5).unwrap();
    assert!((norm - 13.0).abs() < 1e-6);
    // torch.nn.utils.clip_grad_norm_ on the same grads.
    let ga = values(g.get(a.as_tensor()).unwrap());
    let gc = values(g.get(c.as_tensor()).unwrap());
    assert_close(&ga, &[1.4999998846153937, 1.9999998461538582], 1e-6);
    assert_close(&gc, &[5.999999538461575], 1e-6);
    assert!((global_norm(&g, &vars).unwrap() - 6.5).abs() < 1e-5);

    // Below the threshold: unchanged.
    let norm = clip_grad_norm(&mut g, &vars, 100.0).unwrap();
    assert!((norm - 6.5).abs() < 1e-5);
    assert_close(&values(g.get(c.as_tensor()).unwrap()), &gc, 0.0);

    assert!(clip_grad_norm(&mut g, &vars, 0.0).is_err());
    assert!(clip_grad_norm(&mut g, &vars, f64::INFINITY).is_err());
}

#[test]
fn clip_non_finite_norm_leaves_grads() {
    let a = var(&[0.0, 0.0]);
    let vars: Vec<NamedVar> = vec![("a".into(), a.clone())];
    let mut g = GradStore::default();
    g.insert(
        a.as_tensor(),
        Tensor::new(&[f32::NAN, 1.0], &Device::Cpu).unwrap(),
    );
    let norm = clip_grad_norm(&mut g, &vars, 1.0).unwrap();
    assert!(norm.is_nan());
    assert_eq!(values(g.get(a.as_tensor()).unwrap())[1], 1.0);
}

fn linear_model() -> (VarMap, candle_nn::Linear) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let lin = candle_nn::linear(3, 2, vb.pp("fc")).unwrap();
    (vm, lin)
}

fn mse(lin: &candle_nn::Linear, x: &Tensor, y: &Tensor) -> Tensor {
    let out = lin.forward(x).unwrap();
    (out - y).unwrap().sqr().unwrap().mean_all().unwrap()
}

#[test]
fn accumulation_matches_full_batch() {
    let (vm, lin) = linear_model();
    let vars = named_vars(&vm);
    let x = Tensor::new(
        &[
            [1f32, 2., 3.],
            [-1., 0.5, 2.],
            [0.3, -0.7, 1.1],
            [2., 1., -1.],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let y = Tensor::new(&[[1f32, 0.], [0., 1.], [0.5, 0.5], [-1., 2.]], &Device::Cpu).unwrap();
    let full = mse(&lin, &x, &y).backward().unwrap();

    let mut acc = GradAccumulator::new(vars.clone());
    assert!(acc.is_empty());
    assert!(acc.finish().is_err());
    for half in 0..2 {
        let xs = x.narrow(0, half * 2, 2).unwrap();
        let ys = y.narrow(0, half * 2, 2).unwrap();
        acc.add(&mse(&lin, &xs, &ys).backward().unwrap()).unwrap();
    }
    assert_eq!(acc.micro_batches(), 2);
    let accumulated = acc.finish().unwrap();
    assert!(acc.is_empty());
    for (name, v) in &vars {
        let a = values(full.get(v.as_tensor()).unwrap());
        let b = values(accumulated.get(v.as_tensor()).unwrap());
        assert!(a.iter().any(|x| *x != 0.0), "{name}");
        assert_close(&b, &a, 1e-6);
    }
}

#[test]
fn missing_and_zero_grads_are_reported() {
    let used = var(&[1.0, 2.0]);
    let zeroed = var(&[3.0]);
    let unused = var(&[4.0]);
    let vars: Vec<NamedVar> = vec![
        ("used".into(), used.clone()),
        ("zeroed".into(), zeroed.clone()),
        ("unused".into(), unused.clone()),
    ];
    let loss = (used.sum_all().unwrap() + (zeroed.sum_all().unwrap() * 0.0).unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let bad = missing_or_zero_grads(&grads, &vars).unwrap();
    assert_eq!(bad, vec!["zeroed".to_string(), "unused".to_string()]);
}
