//! Soft targets at every real token (DistilBERT's reference default) as a loss-list entry:
//! the `soft_ce` term with `positions = "all"` on one padded micro-batch against an
//! independent f64 computation of the rest-bucket KL from the student run one record at a
//! time; and a cache with a row per token serves a masked-position loss the same rows a
//! masked-position cache holds.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use kd_bert::{BertInput, ForwardCtx};
use kd_cache::{Precision, Record, TopK, TopKPositions};
use kd_student::cache_task::collate_records;
use kd_student::loss_spec::{LossSpec, SoftCe};
use kd_student::loss_terms::{resolve, term, wants, TermInputs, TopKLayout};
use kd_student::student::Student;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const K: usize = 6;
const T: f32 = 2.0;

/// Three records of 5, 8 and 6 tokens with teacher logits ~ 3 N(0, 1) at every token, and
/// their top-k rows at every token (f32, temperatures 1 and 2).
fn records(rng: &mut ChaCha8Rng) -> (Vec<Record>, Vec<Vec<f32>>) {
    let mut logits = Vec::new();
    let recs = [5usize, 8, 6]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let mut ids: Vec<u32> = (0..n).map(|_| rng.random_range(5..VOCAB as u32)).collect();
            (ids[0], ids[n - 1]) = (2, 3);
            let z: Vec<f32> = (0..n * VOCAB)
                .map(|_| 3.0 * rng.random_range(-1.0f32..1.0))
                .collect();
            let topk = TopK::from_vocab_logits(&z, VOCAB, K, &[1.0, T], Precision::F32).unwrap();
            logits.push(z);
            Record {
                seq_id: i as u64,
                mlm_positions: vec![1, (n - 2) as u32],
                mlm_labels: vec![ids[1], ids[n - 2]],
                input_ids: ids,
                mlm_topk: Some(topk),
                ..Record::default()
            }
        })
        .collect();
    (recs, logits)
}

fn log_softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z = x.iter().map(|v| (v - m).exp()).sum::<f64>().ln() + m;
    x.iter().map(|v| v - z).collect()
}

#[test]
fn soft_targets_at_every_token_match_an_unpadded_f64_computation() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let student = tiny_student(&dir.path().join("m"));
    let losses = vec![LossSpec::SoftCe(SoftCe {
        temperature: T,
        positions: TopKPositions::All,
        ..SoftCe::default()
    })];
    let resolved = resolve(&losses, TINY, TINY, student.varmap(), 1, &dev).unwrap();
    let w = wants(&resolved);
    assert!(w.mlm_logits_all && !w.mlm_logits);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (recs, teacher) = records(&mut rng);
    let batch = collate_records(&recs, 0).unwrap();
    let out = student
        .forward(&batch, &w, &mut ForwardCtx::eval())
        .unwrap();
    let layout = TopKLayout {
        k: K,
        temperatures: vec![1.0, T],
        positions: TopKPositions::All,
    };
    let inputs = TermInputs {
        records: &recs,
        batch: &batch,
        topk: &layout,
        device: &dev,
    };
    let got: f64 = term(&resolved[0], &out, &inputs)
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_scalar()
        .unwrap();

    // Reference: teacher top-k at T from the full logits, the rest bucket from the rest of
    // the vocabulary, the student alone on each record; mean over every token, times T^2.
    let bert = student.loaded.inference_model().unwrap();
    let t = f64::from(T);
    let (mut sum, mut tokens) = (0f64, 0usize);
    for (r, z) in recs.iter().zip(&teacher) {
        let n = r.len();
        let input = BertInput {
            input_ids: Tensor::from_slice(&r.input_ids, (1, n), &dev).unwrap(),
            token_type_ids: None,
            attention_mask: None,
        };
        let enc = bert.encode(&input, &[], &mut ForwardCtx::eval()).unwrap();
        let h = enc.last_hidden_state().squeeze(0).unwrap();
        let s: Vec<Vec<f32>> = bert.mlm_logits(&h).unwrap().to_vec2().unwrap();
        for (pos, s_row) in s.iter().enumerate() {
            let zt: Vec<f64> = z[pos * VOCAB..(pos + 1) * VOCAB]
                .iter()
                .map(|&v| f64::from(v) / t)
                .collect();
            let zs: Vec<f64> = s_row.iter().map(|&v| f64::from(v) / t).collect();
            let (lp, lq) = (log_softmax(&zt), log_softmax(&zs));
            let mut order: Vec<usize> = (0..VOCAB).collect();
            order.sort_by(|&a, &b| zt[b].total_cmp(&zt[a]).then(a.cmp(&b)));
            let top = &order[..K];
            let mut kl = 0f64;
            let (mut p_top, mut q_top) = (0f64, 0f64);
            for &i in top {
                kl += lp[i].exp() * (lp[i] - lq[i]);
                p_top += lp[i].exp();
                q_top += lq[i].exp();
            }
            let (p_rest, q_rest) = ((1.0 - p_top).max(0.0), 1.0 - q_top);
            if p_rest > 0.0 {
                kl += p_rest * (p_rest / q_rest).ln();
            }
            sum += kl;
            tokens += 1;
        }
    }
    let want = sum / tokens as f64 * t * t;
    assert_eq!(tokens, 19);
    assert!(
        (got - want).abs() <= 1e-5 * want.abs(),
        "soft_ce at every token: kd {got} vs reference {want}"
    );
}

#[test]
fn a_row_per_token_cache_serves_masked_losses_the_masked_rows() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let student = tiny_student(&dir.path().join("m"));
    let losses = vec![LossSpec::SoftCe(SoftCe {
        temperature: T,
        ..SoftCe::default()
    })];
    let resolved = resolve(&losses, TINY, TINY, student.varmap(), 1, &dev).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (all, teacher) = records(&mut rng);
    // The same records with rows at their masked positions only, from the same logits.
    let masked: Vec<Record> = all
        .iter()
        .zip(&teacher)
        .map(|(r, z)| {
            let rows: Vec<f32> = r
                .mlm_positions
                .iter()
                .flat_map(|&p| z[p as usize * VOCAB..(p as usize + 1) * VOCAB].to_vec())
                .collect();
            Record {
                mlm_topk: Some(
                    TopK::from_vocab_logits(&rows, VOCAB, K, &[1.0, T], Precision::F32).unwrap(),
                ),
                ..r.clone()
            }
        })
        .collect();
    let batch = collate_records(&all, 0).unwrap();
    let out = student
        .forward(&batch, &wants(&resolved), &mut ForwardCtx::eval())
        .unwrap();
    let value = |recs: &[Record], positions| -> f64 {
        let layout = TopKLayout {
            k: K,
            temperatures: vec![1.0, T],
            positions,
        };
        let inputs = TermInputs {
            records: recs,
            batch: &batch,
            topk: &layout,
            device: &dev,
        };
        term(&resolved[0], &out, &inputs)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .into()
    };
    let from_all = value(&all, TopKPositions::All);
    let from_masked = value(&masked, TopKPositions::Masked);
    assert!(from_all > 0.0);
    assert_eq!(from_all, from_masked);
}
