//! `kd eval` against values known in closed form. The student is the tiny fixture model with
//! two LayerNorms zeroed: the last encoder layer's output LayerNorm (scale 0, shift `h`), so
//! every last hidden state is exactly `h`, and the MLM transform's (scale 0, shift 0), so the
//! logits at every position are exactly the output bias `b`. With `b = ln 101` at id 10 and 0
//! elsewhere the student's distribution is `q_10 = 101/199`, `q_v = 1/199` otherwise, and its
//! top-1 is 10 everywhere. The cache records are written here, with the teacher's top-3
//! probabilities, labels and hidden states chosen per position and token.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use kd_cache::quant::Quantized;
use kd_cache::{
    Backend, CacheWriter, LayerSpec, LayerValues, Manifest, Precision, Record, TargetSpec, TopK,
    TopKSpec, WriterOptions,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const V: usize = 99;
const H: usize = 32;
/// The student's top-1 and only favoured id.
const TOP: u32 = 10;

/// The student's probability of id `v`: `e^b_v / Σ e^b = (101 or 1) / (101 + 98)`.
fn q(v: u32) -> f64 {
    let z = 101.0 + (V - 1) as f64;
    if v == TOP {
        101.0 / z
    } else {
        1.0 / z
    }
}

/// The student's last hidden state at every token.
fn h() -> Vec<f32> {
    let mut h = vec![0f32; H];
    (h[0], h[1]) = (1.0, 2.0);
    h
}

fn student(dir: &Path) -> PathBuf {
    let src = repo().join("tests/fixtures/tiny_mlm");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let mut t: HashMap<String, Tensor> =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let zeros = Tensor::zeros(H, DType::F32, &Device::Cpu).unwrap();
    let mut b = vec![0f32; V];
    b[TOP as usize] = 101f32.ln();
    for (name, value) in [
        (
            "bert.encoder.layer.1.output.LayerNorm.weight",
            zeros.clone(),
        ),
        (
            "bert.encoder.layer.1.output.LayerNorm.bias",
            Tensor::new(h(), &Device::Cpu).unwrap(),
        ),
        ("cls.predictions.transform.LayerNorm.weight", zeros.clone()),
        ("cls.predictions.transform.LayerNorm.bias", zeros),
        (
            "cls.predictions.bias",
            Tensor::new(b, &Device::Cpu).unwrap(),
        ),
    ] {
        assert!(t.insert(name.to_string(), value).is_some(), "{name}");
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vocab.extend((vocab.len()..V).map(|i| format!("w{i}")));
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    dir.to_path_buf()
}

/// A masked position: label, the teacher's top-3 ids and their probabilities at T = 1.
struct Pos {
    label: u32,
    ids: [u32; 3],
    p: [f64; 3],
}

/// A teacher hidden row by its cosine with `h`: 1, -1, 0 or 1/√2.
#[derive(Clone, Copy)]
enum Row {
    Same,
    Opposite,
    Orthogonal,
    Diagonal,
}

impl Row {
    fn values(self) -> Vec<f32> {
        let h = h();
        let norm = h.iter().map(|x| x * x).sum::<f32>().sqrt();
        let mut e2 = vec![0f32; H];
        e2[2] = 1.0;
        match self {
            Row::Same => h,
            Row::Opposite => h.iter().map(|x| -2.0 * x).collect(),
            Row::Orthogonal => e2,
            Row::Diagonal => h.iter().zip(&e2).map(|(x, e)| x / norm + e).collect(),
        }
    }

    fn cosine(self) -> f64 {
        match self {
            Row::Same => 1.0,
            Row::Opposite => -1.0,
            Row::Orthogonal => 0.0,
            Row::Diagonal => std::f64::consts::FRAC_1_SQRT_2,
        }
    }
}

fn record(i: u64, positions: &[(u32, Pos)], rows: &[Row]) -> Record {
    let n = rows.len();
    let mut ids: Vec<u32> = (0..n as u32).map(|t| 5 + (t * 7 + i as u32) % 90).collect();
    for (p, _) in positions {
        ids[*p as usize] = 4;
    }
    let logits: Vec<f32> = positions
        .iter()
        .flat_map(|(_, x)| x.p.map(|p| p.ln() as f32))
        .collect();
    let hidden: Vec<f32> = rows.iter().flat_map(|r| r.values()).collect();
    Record {
        seq_id: i,
        epoch: 0,
        input_ids: ids,
        mlm_positions: positions.iter().map(|(p, _)| *p).collect(),
        mlm_labels: positions.iter().map(|(_, x)| x.label).collect(),
        mlm_topk: Some(TopK {
            ids: positions.iter().flat_map(|(_, x)| x.ids).collect(),
            logits: Quantized::encode(&logits, 3, Precision::F32).unwrap(),
            // p = exp(z - log Z) with z = ln p: log Z = 0.
            log_partition: vec![0.0; positions.len()],
        }),
        hidden: vec![LayerValues {
            layer: 2,
            values: Quantized::encode(&hidden, H, Precision::F32).unwrap(),
        }],
        ..Record::default()
    }
}

/// KL(p || q) over the three ids plus the rest bucket.
fn kl(x: &Pos) -> f64 {
    let p_rest = (1.0 - x.p.iter().sum::<f64>()).max(0.0);
    let q_rest = 1.0 - x.ids.iter().map(|&i| q(i)).sum::<f64>();
    let mut kl: f64 = x
        .ids
        .iter()
        .zip(x.p)
        .map(|(&i, p)| p * (p / q(i)).ln())
        .sum();
    if p_rest > 0.0 {
        kl += p_rest * (p_rest / q_rest).ln();
    }
    kl
}

#[test]
fn eval_reports_closed_form_values() {
    let tmp = tempfile::tempdir().unwrap();
    let model = student(&tmp.path().join("student"));
    let pos = |label, ids, p| Pos { label, ids, p };
    // Teacher right, student right, agreeing; rest 1/8.
    let a = pos(10, [10, 11, 12], [0.5, 0.25, 0.125]);
    // Both wrong, disagreeing; no rest mass.
    let b = pos(13, [11, 10, 13], [0.6, 0.3, 0.1]);
    // Teacher right, student wrong; rest 1/4.
    let c = pos(12, [12, 14, 15], [0.25, 0.25, 0.25]);
    // Both wrong, agreeing (both say 10); rest 0.04.
    let d = pos(20, [10, 20, 30], [0.9, 0.05, 0.01]);
    let want_kl = (kl(&a) + kl(&b) + kl(&c) + kl(&d)) / 4.0;
    use Row::*;
    let rows: [Vec<Row>; 3] = [
        vec![Same, Same, Opposite, Orthogonal, Diagonal, Same, Same],
        vec![Diagonal, Diagonal, Orthogonal, Opposite],
        vec![
            Same, Orthogonal, Orthogonal, Diagonal, Opposite, Same, Same, Same, Diagonal, Same,
        ],
    ];
    let all: Vec<Row> = rows.iter().flatten().copied().collect();
    let want_cos = all.iter().map(|r| r.cosine()).sum::<f64>() / all.len() as f64;
    let records = [
        record(0, &[(2, a), (5, b)], &rows[0]),
        record(1, &[(1, c)], &rows[1]),
        record(2, &[(8, d)], &rows[2]),
    ];

    let spec = TargetSpec {
        mlm_topk: Some(TopKSpec {
            k: 3,
            temperatures: vec![1.0],
            logit_precision: Precision::F32,
            positions: Default::default(),
        }),
        hidden: Some(LayerSpec {
            layers: vec![2],
            precision: Precision::F32,
        }),
        ..TargetSpec::default()
    };
    let mut m = Manifest::new(spec, Backend::Mmap);
    m.teacher.config =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    m.tokenizer_sha256 = kd_core::fs::sha256_file(&model.join("vocab.txt")).unwrap();
    let cache = tmp.path().join("cache");
    let mut w = CacheWriter::create(&cache, m, WriterOptions::default()).unwrap();
    for r in &records {
        w.write(r).unwrap();
    }
    w.finish().unwrap();

    let out = ok(kd(
        "eval --student {} --cache {} --batch-size 2 --json",
        &[&model, &cache],
    )
    .output()
    .unwrap());
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let get = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {r}"));
    assert_eq!(r["records"], 3);
    assert_eq!(r["masked_positions"], 4);
    assert_eq!(r["tokens"], all.len());
    assert_eq!(r["topk"], 3);
    assert_eq!(get("student_top1"), 0.25);
    assert_eq!(get("teacher_top1"), 0.5);
    assert_eq!(get("agreement"), 0.5);
    assert_eq!(get("retained"), 0.5);
    let close = |k: &str, want: f64| {
        let got = get(k);
        assert!(
            (got - want).abs() < 1e-6,
            "{k}: kd eval says {got}, closed form {want}"
        );
    };
    close("kl", want_kl);
    close("hidden_cosine", want_cos);
    // The closed forms are not degenerate: every KL term and cosine kind counts.
    assert!(
        want_kl > 0.5 && want_cos > 0.3 && want_cos < 0.7,
        "{want_kl} {want_cos}"
    );
}
