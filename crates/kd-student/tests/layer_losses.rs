//! TinyBERT's layer losses as loss-list entries: `hidden_mse` with a uniform map and learned
//! projections, `attention_mse` with a uniform map, checked on one padded micro-batch against
//! an independent f64 computation from the student run one record at a time (no padding).
//! The value and the gradient of every projection weight and bias are checked; kd-distill's
//! own tests check the loss functions against PyTorch.

mod common;

use candle_core::{Device, Tensor, Var};
use common::*;
use kd_bert::{BertInput, ForwardCtx};
use kd_cache::{LayerValues, Precision, Quantized, Record};
use kd_student::cache_task::collate_records;
use kd_student::loss_spec::{LayerLoss, LossSpec, ProjectionKind};
use kd_student::loss_terms::{resolve, term, wants, ModelShapes, TermInputs, TopKLayout};
use kd_student::student::{BertStudent, Student};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The pretend teacher: 4 layers of width 48, the student's 4 heads.
const T_LAYERS: usize = 4;
const T_HIDDEN: usize = 48;
const HEADS: usize = 4;
const TEACHER: ModelShapes = ModelShapes {
    layers: T_LAYERS,
    hidden: T_HIDDEN,
    heads: HEADS,
};

fn records(rng: &mut ChaCha8Rng) -> Vec<Record> {
    [5usize, 9, 7]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let mut ids: Vec<u32> = (0..n).map(|_| rng.random_range(5..VOCAB as u32)).collect();
            (ids[0], ids[n - 1]) = (2, 3);
            let mut r = Record {
                seq_id: i as u64,
                input_ids: ids,
                ..Record::default()
            };
            for layer in [2u32, 4] {
                let h: Vec<f32> = (0..n * T_HIDDEN)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect();
                r.hidden.push(LayerValues {
                    layer,
                    values: Quantized::encode(&h, T_HIDDEN, Precision::F32).unwrap(),
                });
                let a: Vec<f32> = (0..HEADS * n * n)
                    .map(|_| rng.random_range(-3.0..3.0))
                    .collect();
                r.attention.push(LayerValues {
                    layer,
                    values: Quantized::encode(&a, n, Precision::F32).unwrap(),
                });
            }
            r
        })
        .collect()
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn var(student: &BertStudent, name: &str) -> Var {
    student.varmap().data().lock().unwrap()[name].clone()
}

#[test]
fn hidden_and_attention_entries_match_an_unpadded_f64_computation() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let student = tiny_student(&dir.path().join("m"));
    let losses = vec![
        LossSpec::HiddenMse(LayerLoss {
            map: serde_json::from_str("\"uniform\"").unwrap(),
            projection: Some(ProjectionKind::Linear),
            ..LayerLoss::default()
        }),
        LossSpec::AttentionMse(LayerLoss {
            map: serde_json::from_str("\"uniform\"").unwrap(),
            ..LayerLoss::default()
        }),
    ];
    let resolved = resolve(&losses, TINY, TEACHER, student.varmap(), 7, &dev).unwrap();
    assert_eq!(resolved[0].pairs, [(1, 2), (2, 4)]);
    assert_eq!(resolved[1].pairs, [(1, 2), (2, 4)]);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let recs = records(&mut rng);
    let batch = collate_records(&recs, 0).unwrap();
    let out = student
        .forward(&batch, &wants(&resolved), &mut ForwardCtx::eval())
        .unwrap();
    let inputs = TermInputs {
        records: &recs,
        batch: &batch,
        topk: &TopKLayout::default(),
        device: &dev,
    };
    let hidden = term(&resolved[0], &out, &inputs).unwrap();
    let attention = term(&resolved[1], &out, &inputs).unwrap();

    // The reference: each record alone, the projections read back from the parameters.
    let bert = student.loaded.inference_model().unwrap();
    let proj: Vec<(Vec<f64>, Vec<f64>)> = [1, 2]
        .iter()
        .map(|s| {
            let p = format!("distill.loss0.hidden_mse.layer{s}");
            (
                to_f64(var(&student, &format!("{p}.weight")).as_tensor()),
                to_f64(var(&student, &format!("{p}.bias")).as_tensor()),
            )
        })
        .collect();
    let tokens: usize = recs.iter().map(Record::len).sum();
    let (mut want_hidden, mut want_attention) = (0f64, 0f64);
    let mut grad_w = vec![vec![0f64; T_HIDDEN * HIDDEN]; 2];
    let mut grad_b = vec![vec![0f64; T_HIDDEN]; 2];
    let entries: usize = recs.iter().map(|r| HEADS * r.len() * r.len()).sum();
    for r in &recs {
        let n = r.len();
        let input = BertInput {
            input_ids: Tensor::from_slice(&r.input_ids, (1, n), &dev).unwrap(),
            token_type_ids: None,
            attention_mask: None,
        };
        let enc = bert
            .encode(&input, &[1, 2], &mut ForwardCtx::eval())
            .unwrap();
        for (i, (s, t)) in [(1usize, 2u32), (2, 4)].into_iter().enumerate() {
            let h = to_f64(&enc.hidden_states[s]);
            let target = r.hidden_layer(t).unwrap().decode();
            let (w, b) = &proj[i];
            for tok in 0..n {
                for o in 0..T_HIDDEN {
                    let mut p = b[o];
                    for k in 0..HIDDEN {
                        p += w[o * HIDDEN + k] * h[tok * HIDDEN + k];
                    }
                    let d = p - f64::from(target[tok * T_HIDDEN + o]);
                    let scale = 1.0 / (tokens * T_HIDDEN) as f64;
                    want_hidden += d * d * scale;
                    grad_b[i][o] += 2.0 * d * scale;
                    for k in 0..HIDDEN {
                        grad_w[i][o * HIDDEN + k] += 2.0 * d * scale * h[tok * HIDDEN + k];
                    }
                }
            }
            let scores = to_f64(&enc.attention(s).unwrap().scores);
            let target = r.attention_layer(t).unwrap().decode();
            for (x, y) in scores.iter().zip(&target) {
                want_attention += (x - f64::from(*y)).powi(2) / entries as f64;
            }
        }
    }
    let close = |what: &str, got: f64, want: f64| {
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1e-3),
            "{what}: kd {got} vs reference {want}"
        );
    };
    close("hidden_mse", to_f64(&hidden)[0], want_hidden);
    close("attention_mse", to_f64(&attention)[0], want_attention);
    let grads = hidden.backward().unwrap();
    for (i, s) in [1, 2].iter().enumerate() {
        let p = format!("distill.loss0.hidden_mse.layer{s}");
        let gw = to_f64(grads.get(&var(&student, &format!("{p}.weight"))).unwrap());
        let gb = to_f64(grads.get(&var(&student, &format!("{p}.bias"))).unwrap());
        // f32 sums over every token: within 1e-4 of the tensor's largest element.
        for (name, got, want) in [("weight", &gw, &grad_w[i]), ("bias", &gb, &grad_b[i])] {
            let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
            assert!(scale > 0.0);
            for (j, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                assert!((g - w).abs() <= 1e-4 * scale, "{p}.{name}[{j}]: {g} vs {w}");
            }
        }
    }
}

#[test]
fn projections_are_drawn_from_the_run_seed() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let draw = |seed: u64| {
        let student = tiny_student(&dir.path().join(format!("m{seed}")));
        let losses = vec![LossSpec::EmbeddingMse(LayerLoss {
            projection: Some(ProjectionKind::Linear),
            ..LayerLoss::default()
        })];
        resolve(&losses, TINY, TEACHER, student.varmap(), seed, &dev).unwrap();
        to_f64(var(&student, "distill.loss0.embedding_mse.layer0.weight").as_tensor())
    };
    let (a, b, c) = (draw(1), draw(1), draw(2));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let std = (a.iter().map(|x| x * x).sum::<f64>() / a.len() as f64).sqrt();
    assert!((std - 0.02).abs() < 0.003, "init std {std}");
}
