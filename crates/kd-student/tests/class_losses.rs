//! Task-distillation losses on class logits as loss-list entries: `class_soft_ce` (soft
//! cross-entropy against the cached teacher logits at T, with or without T²), `hard_ce` and
//! `logit_mse`, checked against an f64 computation from the same numbers, with the weights
//! of a DistilBERT-style task list `alpha * hard + (1 - alpha) * soft`.

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use kd_cache::{Label, Record};
use kd_data::batch::{collate, BatchItem};
use kd_student::loss_spec::{LossList, LossSpec};
use kd_student::loss_terms::{
    needed_targets, resolve, term, wants, ModelShapes, TermInputs, TopKLayout,
};
use kd_student::student::StudentOutputs;
use std::collections::BTreeMap;

const STUDENT: [[f32; 3]; 4] = [
    [0.3, -1.2, 2.0],
    [1.5, 0.1, -0.4],
    [-0.7, 0.9, 0.2],
    [2.2, -2.0, 0.0],
];
const TEACHER: [[f32; 3]; 4] = [
    [1.0, -0.5, 3.1],
    [2.4, 0.3, -1.9],
    [-1.1, 2.6, 0.8],
    [0.4, -0.2, 0.1],
];
const LABELS: [u32; 4] = [2, 0, 1, 0];

fn log_softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::MIN, f64::max);
    let lse = m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    x.iter().map(|v| v - lse).collect()
}

/// `mean_n −Σ_c softmax(t/T) log softmax(s/T)`, in f64.
fn soft_ce(t: f64) -> f64 {
    let mut total = 0.0;
    for (s, te) in STUDENT.iter().zip(&TEACHER) {
        let q = log_softmax(&s.iter().map(|&v| v as f64 / t).collect::<Vec<_>>());
        let p = log_softmax(&te.iter().map(|&v| v as f64 / t).collect::<Vec<_>>());
        total -= p.iter().zip(&q).map(|(p, q)| p.exp() * q).sum::<f64>();
    }
    total / 4.0
}

fn hard_ce() -> f64 {
    let mut total = 0.0;
    for (s, &y) in STUDENT.iter().zip(&LABELS) {
        total -= log_softmax(&s.iter().map(|&v| v as f64).collect::<Vec<_>>())[y as usize];
    }
    total / 4.0
}

fn records() -> Vec<Record> {
    (0..4)
        .map(|i| Record {
            seq_id: i as u64,
            input_ids: vec![2, 7 + i as u32, 3],
            logits: Some(TEACHER[i].to_vec()),
            label: Some(Label::Class(LABELS[i])),
            ..Record::default()
        })
        .collect()
}

fn value(list: &str) -> Vec<f64> {
    let list: LossList = serde_json::from_str(list).unwrap();
    list.validate().unwrap();
    let dev = Device::Cpu;
    let shapes = ModelShapes {
        layers: 1,
        hidden: 8,
        heads: 2,
    };
    let losses = resolve(&list.0, shapes, shapes, &VarMap::new(), 0, &dev).unwrap();
    let w = wants(&losses);
    assert!(w.class_logits && !w.mlm_logits);
    assert!(needed_targets(&losses).logits);
    let recs = records();
    let items: Vec<BatchItem> = recs
        .iter()
        .map(|r| BatchItem {
            id: r.seq_id,
            input_ids: &r.input_ids,
            token_type_ids: None,
            mlm_positions: &[],
            mlm_labels: &[],
            label: None,
        })
        .collect();
    let batch = collate(&items, 0).unwrap();
    let out = StudentOutputs {
        mlm_logits: None,
        mlm_logits_all: None,
        class_logits: Some(Tensor::new(&STUDENT, &dev).unwrap()),
        hidden: BTreeMap::new(),
        attention_scores: BTreeMap::new(),
    };
    let inp = TermInputs {
        records: &recs,
        batch: &batch,
        topk: &TopKLayout::default(),
        device: &dev,
    };
    losses
        .iter()
        .map(|l| term(l, &out, &inp).unwrap().to_scalar::<f32>().unwrap() as f64)
        .collect()
}

fn close(got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
        "{got} vs {want}"
    );
}

#[test]
fn class_soft_ce_is_the_soft_cross_entropy_at_t_with_or_without_t_squared() {
    let v = value(
        r#"[{"kind": "class_soft_ce", "temperature": 2.0},
            {"kind": "class_soft_ce", "temperature": 2.0, "t2_scaling": false},
            {"kind": "class_soft_ce"}]"#,
    );
    close(v[0], 4.0 * soft_ce(2.0));
    close(v[1], soft_ce(2.0));
    close(v[2], soft_ce(1.0));
    assert!(soft_ce(2.0) > 0.5, "a non-trivial case");
}

#[test]
fn a_distilbert_task_list_is_hard_ce_soft_ce_and_logit_mse_from_the_records() {
    let v = value(
        r#"[{"kind": "hard_ce", "weight": 0.5},
            {"kind": "class_soft_ce", "weight": 0.5, "temperature": 3.0},
            {"kind": "logit_mse"}]"#,
    );
    close(v[0], hard_ce());
    close(v[1], 9.0 * soft_ce(3.0));
    let mse = STUDENT
        .iter()
        .flatten()
        .zip(TEACHER.iter().flatten())
        .map(|(s, t)| ((s - t) as f64).powi(2))
        .sum::<f64>()
        / 12.0;
    close(v[2], mse);
}

#[test]
fn bad_class_soft_ce_settings_are_refused_by_name() {
    for (text, needle) in [
        (
            r#"[{"kind": "class_soft_ce", "temperature": 0.0}]"#,
            "class_soft_ce",
        ),
        (r#"[{"kind": "class_soft_ce", "weight": -1.0}]"#, "weight"),
    ] {
        let list: LossList = serde_json::from_str(text).unwrap();
        let err = list.validate().unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
    let err = serde_json::from_str::<LossList>(r#"[{"kind": "class_soft_ce", "alpha": 1}]"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("alpha"), "{err}");
    assert!(matches!(
        serde_json::from_str::<LossList>(r#"[{"kind": "class_soft_ce"}]"#)
            .unwrap()
            .0[0],
        LossSpec::ClassSoftCe(_)
    ));
}
