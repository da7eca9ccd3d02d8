//! Gradient correctness: fused ops against composed references, every parameter receives a
//! gradient, and the analytic gradient matches finite differences.

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::VarMap;
use kd_bert::{init_model, ops, Architecture, BertConfig, BertInput, ForwardCtx, LoadedModel};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn randn(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::randn(0f32, 1f32, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    let diff = a.sub(&b).unwrap().abs().unwrap().flatten_all().unwrap();
    let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    let scale = scale.to_scalar::<f64>().unwrap().max(1e-12);
    diff.max(0).unwrap().to_scalar::<f64>().unwrap() / scale
}

/// Gradient of `sum(f(x) * r)` with respect to each input.
fn grads_of(inputs: &[&Var], out: &Tensor, r: &Tensor) -> Vec<Tensor> {
    let loss = out.mul(r).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    inputs
        .iter()
        .map(|v| g.get(v.as_tensor()).expect("gradient present").clone())
        .collect()
}

#[test]
fn fused_softmax_backward_matches_composed() {
    let x = Var::from_tensor(&randn(&[3, 4, 7, 7], DType::F32)).unwrap();
    let r = randn(&[3, 4, 7, 7], DType::F32);
    let fused = ops::softmax_last_dim(x.as_tensor()).unwrap();
    let reference = candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap();
    assert!(max_rel_diff(&fused, &reference) < 1e-6);
    let gf = grads_of(&[&x], &fused, &r);
    let gr = grads_of(&[&x], &reference, &r);
    let err = max_rel_diff(&gf[0], &gr[0]);
    assert!(err < 1e-5, "softmax grad rel err {err}");
}

#[test]
fn fused_layer_norm_backward_matches_composed() {
    let x = Var::from_tensor(&(randn(&[5, 3, 16], DType::F32) * 3.0).unwrap()).unwrap();
    let w = Var::from_tensor(&randn(&[16], DType::F32)).unwrap();
    let b = Var::from_tensor(&randn(&[16], DType::F32)).unwrap();
    let r = randn(&[5, 3, 16], DType::F32);
    let fused = ops::layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
    // The composed path (taken for f64) is plain differentiable candle ops.
    let to64 = |v: &Var| Var::from_tensor(&v.to_dtype(DType::F64).unwrap()).unwrap();
    let (x64, w64, b64) = (to64(&x), to64(&w), to64(&b));
    let reference =
        ops::layer_norm(x64.as_tensor(), w64.as_tensor(), b64.as_tensor(), 1e-5).unwrap();
    assert!(max_rel_diff(&fused, &reference) < 1e-5);
    let gf = grads_of(&[&x, &w, &b], &fused, &r);
    let gr = grads_of(
        &[&x64, &w64, &b64],
        &reference,
        &r.to_dtype(DType::F64).unwrap(),
    );
    for (name, (a, b)) in ["x", "weight", "bias"].iter().zip(gf.iter().zip(&gr)) {
        let err = max_rel_diff(a, b);
        assert!(err < 1e-4, "layer_norm d{name} rel err {err}");
    }
}

#[test]
fn fused_gelu_backward_matches_candle() {
    let x = Var::from_tensor(&(randn(&[4, 33], DType::F32) * 2.0).unwrap()).unwrap();
    let r = randn(&[4, 33], DType::F32);
    for (fused, reference) in [
        (
            ops::gelu_erf(x.as_tensor()).unwrap(),
            x.as_tensor().gelu_erf().unwrap(),
        ),
        (
            ops::gelu_tanh(x.as_tensor()).unwrap(),
            x.as_tensor().gelu().unwrap(),
        ),
    ] {
        assert!(max_rel_diff(&fused, &reference) < 1e-5);
        let gf = grads_of(&[&x], &fused, &r);
        let gr = grads_of(&[&x], &reference, &r);
        let err = max_rel_diff(&gf[0], &gr[0]);
        assert!(err < 1e-4, "gelu grad rel err {err}");
    }
}

fn tiny(dtype: DType, arch: Architecture, act: &str) -> LoadedModel {
    let mut cfg = BertConfig::tiny(50);
    cfg.hidden_act = act.into();
    cfg.set_labels(None, 3);
    init_model(&cfg, arch, 7, &Device::Cpu, dtype).unwrap()
}

fn batch() -> BertInput {
    let ids = Tensor::new(
        &[
            [2u32, 10, 11, 12, 13, 14, 15, 3],
            [2, 20, 21, 22, 3, 0, 0, 0],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let types = Tensor::new(
        &[[0u32, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0, 0]],
        &Device::Cpu,
    )
    .unwrap();
    let mask = Tensor::new(
        &[[1u32, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0, 0]],
        &Device::Cpu,
    )
    .unwrap();
    BertInput {
        input_ids: ids,
        token_type_ids: Some(types),
        attention_mask: Some(mask),
    }
}

/// Masked-LM loss at three positions plus, for classifiers, a classification loss; dropout
/// masks come from a fixed seed so repeated evaluations are the same function.
fn loss(m: &LoadedModel, dropout_seed: Option<u64>) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(dropout_seed.unwrap_or(0));
    let mut ctx = match dropout_seed {
        Some(_) => ForwardCtx::train(&mut rng),
        None => ForwardCtx::eval(),
    };
    let input = batch();
    let out = m.model.encode(&input, &[1, 2], &mut ctx).unwrap();
    match m.model.architecture {
        Architecture::MaskedLm => {
            let pos = Tensor::new(&[1u32, 5, 10], &Device::Cpu).unwrap();
            let h = kd_bert::model::gather_positions(out.last_hidden_state(), &pos).unwrap();
            let logits = m.model.mlm_logits(&h).unwrap();
            let labels = Tensor::new(&[10u32, 14, 21], &Device::Cpu).unwrap();
            candle_nn::loss::cross_entropy(&logits, &labels).unwrap()
        }
        _ => {
            let logits = m.model.classify(&out, &mut ctx).unwrap();
            let labels = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
            candle_nn::loss::cross_entropy(&logits, &labels).unwrap()
        }
    }
}

fn vars(map: &VarMap) -> Vec<(String, Var)> {
    let mut v: Vec<_> = map
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn every_parameter_receives_a_nonzero_gradient() {
    for (arch, act) in [
        (Architecture::MaskedLm, "gelu"),
        (Architecture::SequenceClassification, "gelu_new"),
        (Architecture::MaskedLm, "relu"),
    ] {
        let m = tiny(DType::F32, arch, act);
        let grads = loss(&m, Some(1)).backward().unwrap();
        let vars = vars(&m.varmap);
        assert!(vars.len() > 30);
        let missing: Vec<&String> = vars
            .iter()
            .filter(|(_, v)| {
                grads.get(v.as_tensor()).is_none_or(|g| {
                    g.abs()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                        == 0.0
                })
            })
            .map(|(n, _)| n)
            .collect();
        assert!(missing.is_empty(), "{arch:?}: no gradient for {missing:?}");
    }
}

/// Directional finite differences in f64 agree with backprop, and the fused f32 gradients
/// agree with the f64 ones.
#[test]
fn gradient_matches_finite_differences() {
    for arch in [Architecture::MaskedLm, Architecture::SequenceClassification] {
        let m64 = tiny(DType::F64, arch, "gelu");
        let m32 = tiny(DType::F32, arch, "gelu");
        let g64 = loss(&m64, Some(3)).backward().unwrap();
        let g32 = loss(&m32, Some(3)).backward().unwrap();
        let vars64 = vars(&m64.varmap);
        let vars32 = vars(&m32.varmap);
        for (dir_seed, eps) in [(11u64, 1e-5), (12, 1e-5)] {
            let mut rng = ChaCha8Rng::seed_from_u64(dir_seed);
            let dirs: Vec<Tensor> = vars64
                .iter()
                .map(|(_, v)| {
                    let n = v.elem_count();
                    let d: Vec<f64> = (0..n)
                        .map(|_| rand::Rng::random_range(&mut rng, -1.0..1.0))
                        .collect();
                    Tensor::from_vec(d, v.shape(), &Device::Cpu).unwrap()
                })
                .collect();
            let analytic: f64 = vars64
                .iter()
                .zip(&dirs)
                .map(|((_, v), d)| {
                    g64.get(v.as_tensor())
                        .unwrap()
                        .mul(d)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap()
                })
                .sum();
            let shift = |sign: f64| {
                for ((_, v), d) in vars64.iter().zip(&dirs) {
                    v.set(&(v.as_tensor() + (d * (sign * eps)).unwrap()).unwrap())
                        .unwrap();
                }
            };
            shift(1.0);
            let up = loss(&m64, Some(3)).to_scalar::<f64>().unwrap();
            shift(-2.0);
            let down = loss(&m64, Some(3)).to_scalar::<f64>().unwrap();
            shift(1.0);
            let numeric = (up - down) / (2.0 * eps);
            let rel = (numeric - analytic).abs() / analytic.abs().max(1e-8);
            println!("{arch:?}: analytic {analytic:.8e} numeric {numeric:.8e} rel {rel:.2e}");
            assert!(rel < 1e-6, "{arch:?}: rel err {rel}");
        }
        for ((name, v64), (_, v32)) in vars64.iter().zip(&vars32) {
            let a = g32.get(v32.as_tensor()).unwrap();
            let b = g64.get(v64.as_tensor()).unwrap();
            // The key bias has an exactly-zero true gradient (softmax is shift invariant), so
            // compare with an absolute floor as well as relative to the tensor's scale.
            let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            let scale = scale.to_scalar::<f64>().unwrap();
            let err = max_rel_diff(a, b) * scale.max(1e-12);
            let tol = 1e-3 * scale + 1e-6;
            assert!(
                err < tol,
                "{arch:?} {name}: f32 fused vs f64 grad abs err {err} > {tol}"
            );
        }
    }
}
