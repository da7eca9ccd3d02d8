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

/// A fused f32 op against its composed f64 reference (the composed path is taken for f64):
/// outputs and the gradient of every input agree.
fn check_fused_against_f64(
    inputs: &[Tensor],
    f: impl Fn(&[&Tensor]) -> Tensor,
    name: &str,
    tol: f64,
) {
    let vars32: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let vars64: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(DType::F64).unwrap()).unwrap())
        .collect();
    let fused = f(&vars32.iter().map(Var::as_tensor).collect::<Vec<_>>());
    let reference = f(&vars64.iter().map(Var::as_tensor).collect::<Vec<_>>());
    assert_eq!(fused.dims(), reference.dims(), "{name} shape");
    let err = max_rel_diff(&fused, &reference);
    assert!(err < tol, "{name} forward rel err {err}");
    let r = randn(fused.dims(), DType::F32);
    let gf = grads_of(&vars32.iter().collect::<Vec<_>>(), &fused, &r);
    let gr = grads_of(
        &vars64.iter().collect::<Vec<_>>(),
        &reference,
        &r.to_dtype(DType::F64).unwrap(),
    );
    for (i, (a, b)) in gf.iter().zip(&gr).enumerate() {
        let err = max_rel_diff(a, b);
        assert!(err < tol, "{name} input {i} grad rel err {err}");
    }
}

#[test]
fn fused_linear_matches_composed() {
    let inputs = [
        randn(&[2, 5, 7], DType::F32),
        randn(&[3, 7], DType::F32),
        randn(&[3], DType::F32),
    ];
    check_fused_against_f64(
        &inputs,
        |t| ops::linear(t[0], t[1], t[2]).unwrap(),
        "linear",
        1e-5,
    );
    // An empty batch: an empty output, and zero weight and bias gradients.
    let w = Var::from_tensor(&inputs[1]).unwrap();
    let b = Var::from_tensor(&inputs[2]).unwrap();
    let empty = Tensor::zeros((0, 7), DType::F32, &Device::Cpu).unwrap();
    let y = ops::linear(&empty, w.as_tensor(), b.as_tensor()).unwrap();
    assert_eq!(y.dims(), [0, 3]);
    let g = y.sum_all().unwrap().backward().unwrap();
    for v in [&w, &b] {
        let grad = g.get(v.as_tensor()).unwrap();
        let total = grad
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(total, 0.0);
    }
    // A 2-D input, and one that is a non-contiguous view.
    let x = randn(&[4, 7], DType::F32);
    let y = ops::linear(&x.t().unwrap().t().unwrap(), &inputs[1], &inputs[2]).unwrap();
    let expected = x
        .matmul(&inputs[1].t().unwrap())
        .unwrap()
        .broadcast_add(&inputs[2])
        .unwrap();
    assert!(max_rel_diff(&y, &expected) < 1e-6);
}

#[test]
fn fused_head_split_and_merge_match_composed() {
    let x = [randn(&[2, 5, 12], DType::F32)];
    check_fused_against_f64(
        &x,
        |t| ops::split_heads(t[0], 3, 0.5).unwrap(),
        "split_heads",
        1e-6,
    );
    check_fused_against_f64(
        &x,
        |t| ops::split_heads_transposed(t[0], 3).unwrap(),
        "split_heads_transposed",
        1e-6,
    );
    let x = [randn(&[2, 3, 5, 4], DType::F32)];
    check_fused_against_f64(&x, |t| ops::merge_heads(t[0]).unwrap(), "merge_heads", 1e-6);
    // Hand-checked layout: element (b, l, h * d + e) lands at (b, h, l, e) and (b, h, e, l).
    let v: Vec<f32> = (0..2 * 5 * 12).map(|i| i as f32).collect();
    let x = Tensor::from_vec(v, (2, 5, 12), &Device::Cpu).unwrap();
    let split = ops::split_heads(&x, 3, 1.0).unwrap();
    let k_t = ops::split_heads_transposed(&x, 3).unwrap();
    let at = |t: &Tensor, i: [usize; 4]| -> f32 {
        t.get(i[0])
            .unwrap()
            .get(i[1])
            .unwrap()
            .get(i[2])
            .unwrap()
            .get(i[3])
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let expected = (60 + 3 * 12 + 2 * 4 + 1) as f32;
    assert_eq!(at(&split, [1, 2, 3, 1]), expected);
    assert_eq!(at(&k_t, [1, 2, 1, 3]), expected);
    assert_eq!(
        ops::merge_heads(&split).unwrap().to_vec3::<f32>().unwrap(),
        x.to_vec3::<f32>().unwrap()
    );
}

/// Attention from candle ops, the reference for the fused op.
fn composed_attention(
    t: &[&Tensor],
    mask: &Tensor,
    heads: usize,
    scale: f64,
    drop: Option<&Tensor>,
) -> Tensor {
    let q = ops::split_heads(t[0], heads, scale).unwrap();
    let k_t = ops::split_heads_transposed(t[1], heads).unwrap();
    let v = ops::split_heads(t[2], heads, 1.0).unwrap();
    let mut probs = ops::masked_softmax(&q.matmul(&k_t).unwrap(), mask).unwrap();
    if let Some(d) = drop {
        probs = probs.mul(d).unwrap();
    }
    ops::merge_heads(&probs.matmul(&v).unwrap()).unwrap()
}

#[test]
fn fused_attention_matches_composed() {
    let (b, l, h, heads) = (2, 5, 12, 3);
    let inputs = [
        randn(&[b, l, h], DType::F32),
        randn(&[b, l, h], DType::F32),
        randn(&[b, l, h], DType::F32),
    ];
    // The second sequence has two padding keys.
    let mask = Tensor::new(
        &[0f32, 0., 0., 0., 0., 0., 0., 0., -10000., -10000.],
        &Device::Cpu,
    )
    .unwrap()
    .reshape((b, 1, 1, l))
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let keep = ops::keep_mask(b * heads * l * l, 0.25, &mut rng);
    assert!(keep
        .iter()
        .all(|&k| k == 0.0 || (k - 1.0 / 0.75).abs() < 1e-6));
    assert!(keep.contains(&0.0));
    let keep_t = Tensor::from_vec(keep.clone(), (b, heads, l, l), &Device::Cpu).unwrap();
    for drop in [None, Some(&keep)] {
        check_fused_against_f64(
            &inputs,
            |t| {
                if t[0].dtype() == DType::F32 {
                    assert!(ops::attention_fits(t[0], &mask));
                    ops::attention(t[0], t[1], t[2], &mask, heads, 0.5, drop.cloned()).unwrap()
                } else {
                    let m = mask.to_dtype(DType::F64).unwrap();
                    let d = drop.map(|_| keep_t.to_dtype(DType::F64).unwrap());
                    composed_attention(t, &m, heads, 0.5, d.as_ref())
                }
            },
            "attention",
            1e-5,
        );
    }
    // An empty batch gives an empty context.
    let empty = Tensor::zeros((0, l, h), DType::F32, &Device::Cpu).unwrap();
    let m0 = Tensor::zeros((0, 1, 1, l), DType::F32, &Device::Cpu).unwrap();
    let out = ops::attention(&empty, &empty, &empty, &m0, heads, 0.5, None).unwrap();
    assert_eq!(out.dims(), [0, l, h]);
    // Inputs that do not split into heads are an error, not a panic.
    let odd = randn(&[b, l, 10], DType::F32);
    assert!(ops::attention(&odd, &odd, &odd, &mask, 3, 0.5, None).is_err());
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

/// Every parameter gets a gradient, non-zero except the attention key bias: adding `b` to
/// every key adds `q·b` to all scores of a query, which the softmax cancels, so its exact
/// gradient is 0 and only rounding noise (tiny next to the key weight's) may appear.
#[test]
fn every_parameter_receives_a_gradient_zero_only_for_the_key_bias() {
    for (arch, act) in [
        (Architecture::MaskedLm, "gelu"),
        (Architecture::SequenceClassification, "gelu_new"),
        (Architecture::MaskedLm, "relu"),
    ] {
        let m = tiny(DType::F32, arch, act);
        let grads = loss(&m, Some(1)).backward().unwrap();
        let vars = vars(&m.varmap);
        assert!(vars.len() > 30);
        let l1 = |name: &str| -> f32 {
            let v = &vars.iter().find(|(n, _)| n == name).unwrap().1;
            let g = grads.get(v.as_tensor());
            let g = g.unwrap_or_else(|| panic!("{arch:?}: no gradient for {name}"));
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let mut key_biases = 0;
        for (name, _) in &vars {
            match name.strip_suffix("attention.self.key.bias") {
                Some(layer) => {
                    let (bias, weight) =
                        (l1(name), l1(&format!("{layer}attention.self.key.weight")));
                    assert!(
                        bias <= 1e-5 * weight,
                        "{arch:?}: {name} has gradient mass {bias} (key weight {weight})"
                    );
                    key_biases += 1;
                }
                None => assert!(l1(name) > 0.0, "{arch:?}: zero gradient for {name}"),
            }
        }
        assert_eq!(
            key_biases, m.model.config.num_hidden_layers,
            "{arch:?}: one key bias per layer"
        );
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
