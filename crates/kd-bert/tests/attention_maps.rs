//! Attention that keeps its maps: the fused CPU path (scores node + context node) against the
//! composed candle path, forward and backward, for a loss that reads both the context and the
//! scores, with padding and dropout.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use kd_bert::model::{gather_positions, BertAttention, EncoderOutput};
use kd_bert::{init_model, ops, Architecture, BertConfig, BertInput, ForwardCtx, LoadedModel};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A seeded standard-normal `f32` tensor.
fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// `max |a - b| / max |b|`.
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let diff = a.sub(b).unwrap().abs().unwrap().flatten_all().unwrap();
    let diff = diff.max(0).unwrap().to_scalar::<f32>().unwrap();
    let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    diff / scale.to_scalar::<f32>().unwrap().max(1e-12)
}

fn sum_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// TinyBERT's attention loss: scores at or below -100 (masked keys) become 0 on both sides,
/// then the mean squared difference.
fn attention_mse(scores: &Tensor, target: &Tensor) -> Tensor {
    let floor = |x: &Tensor| {
        x.le(-100.0)
            .unwrap()
            .where_cond(&x.zeros_like().unwrap(), x)
            .unwrap()
    };
    floor(scores)
        .sub(&floor(target))
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
}

/// The additive key mask of two sequences of length 5, the second with two padding keys.
fn key_mask() -> Tensor {
    Tensor::new(
        &[0f32, 0., 0., 0., 0., 0., 0., 0., -10000., -10000.],
        &Device::Cpu,
    )
    .unwrap()
    .reshape((2, 1, 1, 5))
    .unwrap()
}

/// Context, masked scores and probabilities from candle ops, as `BertAttention` composes them.
fn composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    heads: usize,
    scale: f64,
    keep: Option<&Tensor>,
) -> (Tensor, Tensor, Tensor) {
    let qs = ops::split_heads(q, heads, scale).unwrap();
    let k_t = ops::split_heads_transposed(k, heads).unwrap();
    let vs = ops::split_heads(v, heads, 1.0).unwrap();
    let raw = qs.matmul(&k_t).unwrap();
    let probs = ops::masked_softmax(&raw, mask).unwrap();
    let dropped = match keep {
        Some(m) => probs.mul(m).unwrap(),
        None => probs.clone(),
    };
    let context = ops::merge_heads(&dropped.matmul(&vs).unwrap()).unwrap();
    (context, raw.broadcast_add(mask).unwrap(), probs)
}

#[test]
fn scores_and_context_nodes_match_composed_forward_and_backward() {
    let (b, l, h, heads, scale) = (2, 5, 12, 3, 0.5);
    let mask = key_mask();
    let inputs: Vec<Var> = (0..3)
        .map(|i| Var::from_tensor(&randn(&[b, l, h], i)).unwrap())
        .collect();
    let (q, k, v) = (
        inputs[0].as_tensor(),
        inputs[1].as_tensor(),
        inputs[2].as_tensor(),
    );
    let r = randn(&[b, l, h], 10);
    let target = randn(&[b, heads, l, l], 11);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let keep = ops::keep_mask(b * heads * l * l, 0.25, &mut rng);
    assert!(keep.contains(&0.0) && keep.iter().any(|&x| x > 1.0));
    let keep_t = Tensor::from_vec(keep.clone(), (b, heads, l, l), &Device::Cpu).unwrap();
    for drop in [None, Some(keep)] {
        let scores = ops::attention_scores(q, k, &mask, heads, scale).unwrap();
        let (context, probs) = ops::attention_from_scores(&scores, v, drop.clone()).unwrap();
        let (ctx_ref, scores_ref, probs_ref) =
            composed(q, k, v, &mask, heads, scale, drop.as_ref().map(|_| &keep_t));
        let tag = if drop.is_some() {
            "dropout"
        } else {
            "no dropout"
        };
        assert!(rel_diff(&scores, &scores_ref) < 1e-6, "{tag}: scores");
        assert!(rel_diff(&probs, &probs_ref) < 1e-5, "{tag}: probs");
        assert!(rel_diff(&context, &ctx_ref) < 1e-5, "{tag}: context");
        // Padding keys hold the mask in the scores and get no probability.
        let padded = scores.get(1).unwrap().narrow(2, 3, 2).unwrap();
        let max = padded.flatten_all().unwrap().max(0).unwrap();
        assert!(
            max.to_scalar::<f32>().unwrap() < -9000.0,
            "{tag}: masked scores"
        );
        assert_eq!(
            sum_abs(&probs.get(1).unwrap().narrow(2, 3, 2).unwrap()),
            0.0
        );
        assert!(
            !probs.track_op(),
            "{tag}: the fused probabilities are a constant"
        );
        // A loss that reads the context and the scores: their gradients add up.
        let loss = |c: &Tensor, s: &Tensor| {
            c.mul(&r).unwrap().sum_all().unwrap() + attention_mse(s, &target)
        };
        let g = loss(&context, &scores).unwrap().backward().unwrap();
        let g_ref = loss(&ctx_ref, &scores_ref).unwrap().backward().unwrap();
        // The scores' own share matters: without it the gradients differ.
        let g_ctx_only = context
            .mul(&r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, x) in ["q", "k", "v"].iter().zip(&inputs) {
            let (a, e) = (g.get(x).unwrap(), g_ref.get(x).unwrap());
            let err = rel_diff(a, e);
            assert!(err < 1e-5, "{tag}: d{name} rel err {err}");
            // Padded rows: sequence 1, tokens 3 and 4.
            let rows = |t: &Tensor| t.get(1).unwrap().narrow(0, 3, 2).unwrap();
            assert!(
                rel_diff(&rows(a), &rows(e)) < 1e-5,
                "{tag}: d{name} padded rows"
            );
            // Padded queries still attend (dq); padded keys get no weight and their scores
            // are floored out of the loss, so dk and dv are exactly 0 there.
            let padded = sum_abs(&rows(a));
            match *name {
                "q" => assert!(padded > 0.0, "{tag}: dq padded rows are zero"),
                _ => assert_eq!(padded, 0.0, "{tag}: d{name} at padded keys"),
            }
            if *name != "v" {
                let only = g_ctx_only.get(x).unwrap();
                assert!(
                    rel_diff(only, e) > 1e-2,
                    "{tag}: d{name} ignores the scores' loss"
                );
            }
        }
    }
}

#[test]
fn scored_attention_rejects_bad_shapes_and_handles_empty_batches() {
    let mask = key_mask();
    let q = randn(&[2, 5, 12], 1);
    let odd = randn(&[2, 5, 10], 2);
    assert!(ops::attention_scores(&odd, &odd, &mask, 3, 0.5).is_err());
    assert!(ops::attention_scores(&q, &odd, &mask, 3, 0.5).is_err());
    assert!(ops::attention_scores(&q, &q, &mask.narrow(0, 0, 1).unwrap(), 3, 0.5).is_err());
    let scores = ops::attention_scores(&q, &q, &mask, 3, 0.5).unwrap();
    assert_eq!(scores.dims(), [2, 3, 5, 5]);
    assert!(ops::attention_from_scores(&scores, &odd, None).is_err());
    assert!(ops::attention_from_scores(&scores, &q.narrow(1, 0, 4).unwrap(), None).is_err());
    assert!(ops::attention_from_scores(&scores, &q, Some(vec![1.0; 7])).is_err());
    let empty = Tensor::zeros((0, 5, 12), DType::F32, &Device::Cpu).unwrap();
    let m0 = Tensor::zeros((0, 1, 1, 5), DType::F32, &Device::Cpu).unwrap();
    let s0 = ops::attention_scores(&empty, &empty, &m0, 3, 0.5).unwrap();
    assert_eq!(s0.dims(), [0, 3, 5, 5]);
    let (c0, p0) = ops::attention_from_scores(&s0, &empty, None).unwrap();
    assert_eq!(
        (c0.dims(), p0.dims()),
        ([0, 5, 12].as_slice(), [0, 3, 5, 5].as_slice())
    );
}

fn tiny_model() -> LoadedModel {
    let mut cfg = BertConfig::tiny(50);
    cfg.attention_probs_dropout_prob = 0.25;
    init_model(&cfg, Architecture::MaskedLm, 7, &Device::Cpu, DType::F32).unwrap()
}

/// Two sequences of 8 tokens, the second with three padding tokens.
fn batch() -> BertInput {
    let ids = Tensor::new(
        &[
            [2u32, 10, 11, 12, 13, 14, 15, 3],
            [2, 20, 21, 22, 3, 0, 0, 0],
        ],
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
        token_type_ids: None,
        attention_mask: Some(mask),
    }
}

/// MLM cross-entropy at three positions + a random projection of the last hidden state + the
/// attention loss on the scores of both layers; dropout from a fixed seed.
fn model_loss(m: &LoadedModel, train: bool) -> (Tensor, EncoderOutput) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut ctx = if train {
        ForwardCtx::train(&mut rng)
    } else {
        ForwardCtx::eval()
    };
    let out = m.model.encode(&batch(), &[1, 2], &mut ctx).unwrap();
    let last = out.last_hidden_state();
    let pos = Tensor::new(&[1u32, 5, 10], &Device::Cpu).unwrap();
    let logits = m
        .model
        .mlm_logits(&gather_positions(last, &pos).unwrap())
        .unwrap();
    let labels = Tensor::new(&[10u32, 14, 21], &Device::Cpu).unwrap();
    let mut loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
    loss = (loss
        + last
            .mul(&randn(last.dims(), 20))
            .unwrap()
            .sum_all()
            .unwrap())
    .unwrap();
    for (i, layer) in [1, 2].into_iter().enumerate() {
        let scores = &out.attention(layer).unwrap().scores;
        let target = randn(scores.dims(), 30 + i as u64);
        loss = (loss + attention_mse(scores, &target)).unwrap();
    }
    (loss, out)
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
fn bert_with_kept_maps_matches_composed_path_and_trains_every_parameter() {
    let m = tiny_model();
    let vars = vars(&m.varmap);
    assert!(vars.len() > 30);
    for train in [false, true] {
        let (loss, out) = model_loss(&m, train);
        let (loss_ref, out_ref) = BertAttention::with_composed(|| model_loss(&m, train));
        let tag = if train { "train" } else { "eval" };
        for layer in [1, 2] {
            let (a, e) = (
                out.attention(layer).unwrap(),
                out_ref.attention(layer).unwrap(),
            );
            assert!(
                !a.probs.track_op() && e.probs.track_op(),
                "{tag}: paths taken"
            );
            assert!(
                rel_diff(&a.scores, &e.scores) < 1e-5,
                "{tag}: layer {layer} scores"
            );
            assert!(
                rel_diff(&a.probs, &e.probs) < 1e-5,
                "{tag}: layer {layer} probs"
            );
        }
        for (a, e) in out.hidden_states.iter().zip(&out_ref.hidden_states) {
            assert!(rel_diff(a, e) < 1e-5, "{tag}: hidden states");
        }
        let (l, l_ref) = (
            loss.to_scalar::<f32>().unwrap(),
            loss_ref.to_scalar::<f32>().unwrap(),
        );
        assert!(
            (l - l_ref).abs() <= 1e-5 * l_ref.abs(),
            "{tag}: loss {l} vs {l_ref}"
        );
        let grads = loss.backward().unwrap();
        let grads_ref = loss_ref.backward().unwrap();
        for (name, v) in &vars {
            let a = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{tag}: no grad {name}"));
            let e = grads_ref.get(v.as_tensor()).unwrap();
            let err = rel_diff(a, e);
            assert!(err < 1e-4, "{tag}: {name} grad rel err {err}");
            // With the scores in the loss even the key bias moves the loss.
            assert!(sum_abs(a) > 0.0, "{tag}: zero gradient for {name}");
        }
    }
    // Dropout was on in training: the two runs differ.
    let (eval, _) = model_loss(&m, false);
    let (train, _) = model_loss(&m, true);
    assert_ne!(
        eval.to_scalar::<f32>().unwrap(),
        train.to_scalar::<f32>().unwrap()
    );
}
