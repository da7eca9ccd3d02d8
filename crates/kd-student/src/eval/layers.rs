//! Layer-by-layer evaluation of a student against a held-out cache (TinyBERT's view): for each
//! mapped (student, teacher) pair, over real tokens, the hidden-state MSE and cosine (through
//! the learned projection when the widths differ), and over the real (query, key) entries the
//! attention-score MSE and the attention-distribution KL(teacher || student), in f64 on the
//! host.

use crate::cache_task::collate_records;
use crate::layer_map::LayerMatch;
use crate::student::{BertStudent, Student, Wants};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use kd_bert::{ForwardCtx, LoadOptions};
use kd_cache::{CacheReader, Record};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The metrics of one mapped pair; `None` where the cache lacks the teacher's layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerMetrics {
    /// Student layer (0 = embeddings).
    pub student_layer: usize,
    /// Teacher layer.
    pub teacher_layer: usize,
    /// Mean squared error of (projected) hidden states over real tokens and dimensions.
    pub hidden_mse: Option<f64>,
    /// Mean cosine of (projected) hidden states over real tokens.
    pub hidden_cosine: Option<f64>,
    /// Mean squared error of pre-softmax attention scores over real entries.
    pub attention_mse: Option<f64>,
    /// Mean KL(teacher || student) of the attention distributions over real query rows, nats.
    pub attention_kl: Option<f64>,
}

#[derive(Default)]
struct Sums {
    sq: f64,
    values: usize,
    cos: f64,
    tokens: usize,
    att_sq: f64,
    entries: usize,
    kl: f64,
    rows: usize,
}

/// A learned projection read back from `projections.safetensors`.
struct Proj {
    weight: Vec<f32>,
    bias: Vec<f32>,
    out: usize,
}

/// The projection of student layer `s` in `file` (the `hidden_mse` or, for layer 0,
/// `embedding_mse` entry's), if any.
fn projection(file: &BTreeMap<String, Tensor>, s: usize) -> Result<Option<Proj>> {
    let kind = if s == 0 {
        "embedding_mse"
    } else {
        "hidden_mse"
    };
    let suffix = format!(".{kind}.layer{s}.weight");
    let Some((name, w)) = file.iter().find(|(n, _)| n.ends_with(&suffix)) else {
        return Ok(None);
    };
    let bias_name = format!("{}.bias", name.trim_end_matches(".weight"));
    let b = file
        .get(&bias_name)
        .ok_or_else(|| Error::Config(format!("projections: {name} has no {bias_name}")))?;
    let out = w.dim(0)?;
    Ok(Some(Proj {
        weight: w.flatten_all()?.to_vec1()?,
        bias: b.to_vec1()?,
        out,
    }))
}

fn project(p: Option<&Proj>, x: &[f32]) -> Vec<f64> {
    match p {
        None => x.iter().map(|&v| f64::from(v)).collect(),
        Some(p) => (0..p.out)
            .map(|o| {
                let row = &p.weight[o * x.len()..(o + 1) * x.len()];
                f64::from(p.bias[o])
                    + row
                        .iter()
                        .zip(x)
                        .map(|(&w, &v)| f64::from(w) * f64::from(v))
                        .sum::<f64>()
            })
            .collect(),
    }
}

fn log_softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z = x.iter().map(|v| (v - m).exp()).sum::<f64>().ln() + m;
    x.iter().map(|v| v - z).collect()
}

/// Evaluates `student_dir` layer by layer on `cache_dir` under `layers` (pairs checked against
/// both models), with the projections of `projections` (a `projections.safetensors`) where
/// the widths differ; at most `max_records` records, `batch_size` per forward pass.
pub fn evaluate_layers(
    student_dir: &Path,
    cache_dir: &Path,
    layers: &LayerMatch,
    projections: Option<&Path>,
    batch_size: usize,
    max_records: Option<usize>,
    device: &Device,
) -> Result<Vec<LayerMetrics>> {
    let reader = CacheReader::open(cache_dir)?;
    let teacher = crate::loss_terms::ModelShapes::teacher_of(reader.manifest());
    let loaded = kd_bert::load_model(
        student_dir,
        &LoadOptions {
            device: device.clone(),
            ..LoadOptions::default()
        },
    )?;
    let student = BertStudent::new(loaded, student_dir.to_path_buf(), device);
    let pairs = layers.pairs(student.num_layers(), teacher.layers, 0, "layer eval")?;
    let proj_file: BTreeMap<String, Tensor> = match projections {
        Some(p) => candle_core::safetensors::load(p, &Device::Cpu)
            .map_err(|e| Error::Config(format!("{}: {e}", p.display())))?
            .into_iter()
            .collect(),
        None => BTreeMap::new(),
    };
    let mut projs = Vec::new();
    for &(s, t) in &pairs {
        let p = projection(&proj_file, s)?;
        if p.is_none() && student.hidden_size() != teacher.hidden {
            return Err(Error::Config(format!(
                "student layer {s} (width {}) against teacher layer {t} (width {}) needs the \
                 run's projections.safetensors",
                student.hidden_size(),
                teacher.hidden
            )));
        }
        projs.push(p);
    }
    let targets = &reader.manifest().targets;
    let has = |l: &Option<kd_cache::LayerSpec>, t: usize| {
        l.as_ref().is_some_and(|s| s.layers.contains(&(t as u32)))
    };
    let mut wants = Wants::default();
    for &(s, t) in &pairs {
        if has(&targets.hidden, t) {
            wants.hidden.insert(s);
        }
        if s > 0
            && (has(&targets.attention, t)
                || has(&targets.attention_qk, t)
                || has(&targets.attention_input, t))
        {
            wants.attention.insert(s);
        }
    }
    let pad = student.loaded.model.config.pad_token_id;
    let mut sums: Vec<Sums> = pairs.iter().map(|_| Sums::default()).collect();
    let mut records = reader.iter().take(max_records.unwrap_or(usize::MAX));
    loop {
        let chunk: Vec<Record> = records
            .by_ref()
            .take(batch_size.max(1))
            .collect::<std::result::Result<_, _>>()?;
        if chunk.is_empty() {
            break;
        }
        let batch = collate_records(&chunk, pad)?;
        let out = student.forward(&batch, &wants, &mut ForwardCtx::eval())?;
        let l = batch.seq_len;
        for (i, &(s, t)) in pairs.iter().enumerate() {
            let acc = &mut sums[i];
            if let Some(h) = out.hidden.get(&s) {
                let h: Vec<Vec<Vec<f32>>> = h.to_dtype(DType::F32)?.to_vec3()?;
                for (r, rec) in chunk.iter().enumerate() {
                    let tv = rec.hidden_layer(t as u32).ok_or_else(|| {
                        Error::Config(format!("record {} has no hidden state {t}", rec.seq_id))
                    })?;
                    let (cols, tv) = (tv.cols(), tv.decode());
                    for tok in 0..rec.len() {
                        let sv = project(projs[i].as_ref(), &h[r][tok]);
                        let tr: Vec<f64> = tv[tok * cols..(tok + 1) * cols]
                            .iter()
                            .map(|&v| f64::from(v))
                            .collect();
                        let (mut dot, mut ns, mut nt) = (0f64, 0f64, 0f64);
                        for (a, b) in sv.iter().zip(&tr) {
                            acc.sq += (a - b) * (a - b);
                            (dot, ns, nt) = (dot + a * b, ns + a * a, nt + b * b);
                        }
                        acc.values += cols;
                        acc.cos += dot / ((ns + 1e-12) * (nt + 1e-12)).sqrt();
                        acc.tokens += 1;
                    }
                }
            }
            if let Some(a) = out.attention_scores.get(&s) {
                let a: Vec<f32> = a.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                let heads = a.len() / (chunk.len() * l * l).max(1);
                for (r, rec) in chunk.iter().enumerate() {
                    // The stored map, or the scores recomputed from query/key projections.
                    let tv = rec
                        .attention_scores(t as u32, teacher.hidden, teacher.heads)?
                        .ok_or_else(|| {
                            Error::Config(format!(
                                "record {} has no attention layer {t}",
                                rec.seq_id
                            ))
                        })?;
                    let n = rec.len();
                    if tv.len() != heads * n * n {
                        return Err(Error::Config(format!(
                            "record {}: teacher attention layer {t} holds {} scores, the \
                             student's {heads} heads need {heads} x {n} x {n}",
                            rec.seq_id,
                            tv.len()
                        )));
                    }
                    for hd in 0..heads {
                        for q in 0..n {
                            let srow: Vec<f64> = (0..n)
                                .map(|k| f64::from(a[((r * heads + hd) * l + q) * l + k]))
                                .collect();
                            let trow: Vec<f64> = tv[(hd * n + q) * n..(hd * n + q) * n + n]
                                .iter()
                                .map(|&v| f64::from(v))
                                .collect();
                            for (x, y) in srow.iter().zip(&trow) {
                                acc.att_sq += (x - y) * (x - y);
                            }
                            acc.entries += n;
                            let (ls, lt) = (log_softmax(&srow), log_softmax(&trow));
                            acc.kl += lt
                                .iter()
                                .zip(&ls)
                                .map(|(p, q)| p.exp() * (p - q))
                                .sum::<f64>();
                            acc.rows += 1;
                        }
                    }
                }
            }
        }
    }
    let ratio = |x: f64, n: usize| (n > 0).then(|| x / n as f64);
    Ok(pairs
        .iter()
        .zip(sums)
        .map(|(&(s, t), a)| LayerMetrics {
            student_layer: s,
            teacher_layer: t,
            hidden_mse: ratio(a.sq, a.values),
            hidden_cosine: ratio(a.cos, a.tokens),
            attention_mse: ratio(a.att_sq, a.entries),
            attention_kl: ratio(a.kl, a.rows),
        })
        .collect())
}
