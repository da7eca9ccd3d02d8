//! The loss `kd train` reports for its first micro-batch, checked term by term against an
//! independent computation in f64: the student run one record at a time (no padding), and
//! each term written out from its definition over the records as stored in the cache.
//! Covers top-k soft targets with the rest bucket and renormalised, and sampled soft targets
//! (each record's offsets start at 0, so a batch must rebase them); the cosine term reads the
//! teacher's last layer from records that also hold layer 0.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use kd_bert::{BertInput, ForwardCtx};
use kd_cache::Record;
use kd_distill::TailMode;
use kd_student::distil::{train_student, DistilConfig, DistilLoss, SoftTargetSource, StudentSpec};
use kd_student::init::student_from_teacher;
use kd_train::LoopConfig;
use std::path::Path;

const SEED: u64 = 3;
const T: f64 = 2.0;
const WEIGHTS: (f64, f64, f64) = (5.0, 2.0, 1.0);

/// Student outputs for one record, computed alone: MLM logits at its masked positions and its
/// last hidden state, one row per token.
struct Outputs {
    logits: Vec<Vec<f64>>,
    hidden: Vec<Vec<f64>>,
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    let v: Vec<Vec<f32>> = t.to_vec2().unwrap();
    v.into_iter()
        .map(|r| r.into_iter().map(f64::from).collect())
        .collect()
}

fn student_outputs(model: &Path, records: &[Record]) -> Vec<Outputs> {
    let student = student_from_teacher(model, &[0, 1], SEED, &Device::Cpu).unwrap();
    let bert = student.inference_model().unwrap();
    records
        .iter()
        .map(|r| {
            let n = r.input_ids.len();
            let types = r.token_type_ids.clone().unwrap_or_else(|| vec![0; n]);
            let input = BertInput {
                input_ids: Tensor::from_slice(&r.input_ids, (1, n), &Device::Cpu).unwrap(),
                token_type_ids: Some(Tensor::from_vec(types, (1, n), &Device::Cpu).unwrap()),
                attention_mask: None,
            };
            let out = bert.encode(&input, &[], &mut ForwardCtx::eval()).unwrap();
            let h = out.last_hidden_state().squeeze(0).unwrap();
            let all = rows(&bert.mlm_logits(&h).unwrap());
            Outputs {
                logits: r
                    .mlm_positions
                    .iter()
                    .map(|&p| all[p as usize].clone())
                    .collect(),
                hidden: rows(&h),
            }
        })
        .collect()
}

fn log_softmax(x: &[f64]) -> Vec<f64> {
    let max = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    x.iter().map(|v| v - lse).collect()
}

/// `Σ p ln(p / q)` over the entries with `p > 0`.
fn kl(p: &[f64], log_q: &[f64]) -> f64 {
    p.iter()
        .zip(log_q)
        .filter(|(&p, _)| p > 0.0)
        .map(|(&p, &lq)| p * (p.ln() - lq))
        .sum()
}

/// The soft-target term: mean over masked positions, times T².
fn soft_term(records: &[Record], outs: &[Outputs], loss: &DistilLoss, temps: &[f32]) -> f64 {
    let (mut sum, mut n) = (0f64, 0usize);
    for (r, o) in records.iter().zip(outs) {
        for (m, s) in o.logits.iter().enumerate() {
            let x: Vec<f64> = s.iter().map(|v| v / T).collect();
            let log_q = log_softmax(&x);
            sum += match loss.soft_targets {
                SoftTargetSource::Sampled => {
                    let (ids, counts) = r.mlm_sampled.as_ref().unwrap().position(m).unwrap();
                    let k: f64 = counts.iter().map(|&c| f64::from(c)).sum();
                    ids.iter()
                        .zip(counts)
                        .map(|(&id, &c)| -f64::from(c) / k * log_q[id as usize])
                        .sum::<f64>()
                }
                SoftTargetSource::Topk => {
                    let t = r.mlm_topk.as_ref().unwrap();
                    let k = t.logits.cols();
                    let z: Vec<f64> = t.logits.decode()[m * k..(m + 1) * k]
                        .iter()
                        .map(|&v| f64::from(v) / T)
                        .collect();
                    let ids = &t.ids[m * k..(m + 1) * k];
                    match loss.tail {
                        TailMode::RestBucket => {
                            let col = temps.iter().position(|&x| f64::from(x) == T).unwrap();
                            let log_z = f64::from(t.log_partition[m * temps.len() + col]);
                            let mut p: Vec<f64> = z.iter().map(|v| (v - log_z).exp()).collect();
                            let mut lq: Vec<f64> = ids.iter().map(|&i| log_q[i as usize]).collect();
                            let q_top: f64 = lq.iter().map(|v| v.exp()).sum();
                            p.push((1.0 - p.iter().sum::<f64>()).max(0.0));
                            lq.push((1.0 - q_top).ln());
                            kl(&p, &lq)
                        }
                        TailMode::Renormalize => {
                            let p: Vec<f64> = log_softmax(&z).iter().map(|v| v.exp()).collect();
                            let xs: Vec<f64> = ids.iter().map(|&i| x[i as usize]).collect();
                            kl(&p, &log_softmax(&xs))
                        }
                    }
                }
            };
            n += 1;
        }
    }
    assert!(n > 10, "the batch has {n} masked positions");
    T * T * sum / n as f64
}

fn mlm_term(records: &[Record], outs: &[Outputs]) -> f64 {
    let (mut sum, mut n) = (0f64, 0usize);
    for (r, o) in records.iter().zip(outs) {
        for (s, &y) in o.logits.iter().zip(&r.mlm_labels) {
            sum -= log_softmax(s)[y as usize];
            n += 1;
        }
    }
    sum / n as f64
}

/// `1 − cos` over every real token, against the teacher's last layer (layer 2 of 2).
fn cos_term(records: &[Record], outs: &[Outputs]) -> f64 {
    let (mut sum, mut n) = (0f64, 0usize);
    for (r, o) in records.iter().zip(outs) {
        let t = r.hidden_layer(LAYERS).unwrap();
        for (s, t) in o.hidden.iter().zip(t.decode().chunks_exact(HIDDEN)) {
            let dot: f64 = s.iter().zip(t).map(|(a, &b)| a * f64::from(b)).sum();
            let ss: f64 = s.iter().map(|a| a * a).sum();
            let tt: f64 = t.iter().map(|&b| f64::from(b) * f64::from(b)).sum();
            sum += 1.0 - dot / ((ss + 1e-12) * (tt + 1e-12)).sqrt();
            n += 1;
        }
    }
    sum / n as f64
}

fn close(what: &str, got: f64, want: f64) {
    let tol = 2e-5 * want.abs().max(1.0);
    assert!(
        (got - want).abs() <= tol,
        "{what}: kd reports {got}, the independent sum is {want} (diff {:.3e})",
        got - want
    );
}

/// Trains one step on a 12-record cache (one micro-batch holds all of it) and checks each
/// reported term and the total.
fn check(synth: Synth, tail: TailMode, soft: SoftTargetSource) {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let records = write_cache(&tmp.path().join("cache"), &model, &synth);
    let loss = DistilLoss {
        temperature: T as f32,
        ce: WEIGHTS.0,
        mlm: WEIGHTS.1,
        cos: WEIGHTS.2,
        t2_scaling: true,
        tail,
        soft_targets: soft,
    };
    let cfg = DistilConfig {
        cache: tmp.path().join("cache"),
        student: StudentSpec {
            init: Some(model.clone()),
            layers: vec![0, 1],
            ..StudentSpec::default()
        },
        out: tmp.path().join("run"),
        batch_size: 64,
        loss: loss.clone().into(),
        train: LoopConfig {
            seed: SEED,
            max_steps: Some(1),
            log_every: 1,
            ..LoopConfig::default()
        },
        ..DistilConfig::default()
    };
    train_student(&cfg, &Device::Cpu).unwrap();
    let lines = step_lines(&cfg.out);
    let line = &lines[0];
    assert_eq!(line["step"], 1);
    let outs = student_outputs(&model, &records);
    let temps = synth.topk.map(|(_, t)| t).unwrap_or_default();
    let ce = soft_term(&records, &outs, &loss, &temps);
    let mlm = mlm_term(&records, &outs);
    let cos = cos_term(&records, &outs);
    close("ce", line["ce"].as_f64().unwrap(), ce);
    close("mlm", line["mlm"].as_f64().unwrap(), mlm);
    close("cos", line["cos"].as_f64().unwrap(), cos);
    let total = WEIGHTS.0 * ce + WEIGHTS.1 * mlm + WEIGHTS.2 * cos;
    close("loss", line["loss"].as_f64().unwrap(), total);
}

#[test]
fn topk_with_rest_bucket_matches_independent_sum() {
    let synth = Synth {
        hidden: vec![0, LAYERS],
        ..Synth::default()
    };
    check(synth, TailMode::RestBucket, SoftTargetSource::Topk);
}

#[test]
fn topk_renormalised_matches_independent_sum() {
    let synth = Synth {
        hidden: vec![0, LAYERS],
        topk: Some((4, vec![2.0])),
        seed: 2,
        ..Synth::default()
    };
    check(synth, TailMode::Renormalize, SoftTargetSource::Topk);
}

#[test]
fn sampled_matches_independent_sum() {
    let synth = Synth {
        hidden: vec![0, LAYERS],
        topk: None,
        sampled: Some((12, 2.0)),
        seed: 4,
        ..Synth::default()
    };
    check(synth, TailMode::RestBucket, SoftTargetSource::Sampled);
}
