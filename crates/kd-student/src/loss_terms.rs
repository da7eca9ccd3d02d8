//! The terms of a loss list for one micro-batch: each entry of the list, resolved against the
//! student and the cache ([`ResolvedLoss`]), turns the student's outputs and the batch's cached
//! teacher records into one scalar per entry, by the kd-distill functions.

use crate::layer_map::LayerMatch;
use crate::loss_spec::{LossSpec, ProjectionKind, SoftCe, SoftTargetSource};
use crate::student::{StudentOutputs, Wants};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use kd_cache::{LayerSpec, Manifest, Precision, Record, TargetSpec, TopKPositions, TopKSpec};
use kd_distill::{
    cosine_embedding, hidden_mse, logit_mse, mlm_cross_entropy, prediction_soft_ce,
    soft_target_sampled, soft_target_topk, Projection, SampledTargets, SoftCeReduction,
    SoftTargetConfig, TailMode, TopKTargets,
};

/// Sizes of the two models a loss list is resolved against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShapes {
    /// Encoder layers.
    pub layers: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
}

impl ModelShapes {
    /// The teacher's sizes as the cache's manifest records them.
    pub fn teacher_of(manifest: &Manifest) -> Self {
        let get = |k: &str| {
            manifest
                .teacher
                .config
                .get(k)
                .and_then(|v| v.as_u64())
                .unwrap_or(0) as usize
        };
        Self {
            layers: get("num_hidden_layers"),
            hidden: get("hidden_size"),
            heads: get("num_attention_heads"),
        }
    }
}

/// One loss entry with its layer pairs and projections fixed.
pub struct ResolvedLoss {
    /// The entry as configured.
    pub spec: LossSpec,
    /// `(student, teacher)` layer pairs, for the layer losses.
    pub pairs: Vec<(usize, usize)>,
    /// One projection per pair, when the entry asks for one.
    pub projections: Vec<Projection>,
    /// The teacher's sizes (the width and heads that turn cached query/key projections back
    /// into attention scores).
    pub teacher: ModelShapes,
    /// The cache's query/key weights of its `attention_input` layers on the device, as
    /// `(layer, W_q^T, b_q, W_k^T, b_k)`: loaded from the first batch's records, once per run.
    pub input_weights: std::sync::OnceLock<Vec<(u32, [Tensor; 4])>>,
}

/// The cache's top-k layout, for soft targets.
#[derive(Debug, Clone, Default)]
pub struct TopKLayout {
    /// Ids per position.
    pub k: usize,
    /// Temperatures whose log-partitions are stored.
    pub temperatures: Vec<f32>,
    /// Whether the records have a row per masked position or per token.
    pub positions: TopKPositions,
}

/// Replaces each record's top-k rows for every token by the rows of its masked positions
/// (for consumers of masked-position targets reading a cache with a row per token).
pub fn topk_at_masked_positions(records: &mut [Record]) -> Result<()> {
    for r in records {
        if let Some(t) = &r.mlm_topk {
            r.mlm_topk = Some(t.select_rows(&r.mlm_positions)?);
        }
    }
    Ok(())
}

/// Resolves `losses` against the student and teacher sizes: layer maps checked against both
/// layer counts, widths against projections, head counts for attention; projections created
/// in `varmap` from `seed`.
pub fn resolve(
    losses: &[LossSpec],
    student: ModelShapes,
    teacher: ModelShapes,
    varmap: &VarMap,
    seed: u64,
    device: &Device,
) -> Result<Vec<ResolvedLoss>> {
    let mut out = Vec::with_capacity(losses.len());
    for (i, spec) in losses.iter().enumerate() {
        // An entry at weight 0 is switched off: it computes nothing and needs no target.
        if spec.weight() == 0.0 {
            continue;
        }
        let what = format!("loss entry {} ({})", i + 1, spec.kind());
        if let LossSpec::SoftCe(s) = spec {
            if s.source == SoftTargetSource::Sampled && !s.positions.is_masked() {
                return Err(Error::Config(format!(
                    "{what}: sampled soft targets exist at masked positions only; use \
                     source = \"topk\" for positions = \"all\""
                )));
            }
        }
        let (pairs, layer) = match spec {
            LossSpec::HiddenCos(l) | LossSpec::HiddenMse(l) => (
                l.layers().pairs(student.layers, teacher.layers, 0, &what)?,
                Some(l),
            ),
            LossSpec::EmbeddingMse(l) => {
                let m = LayerMatch {
                    teacher_layer: Some(crate::layer_map::LayerRef::Number(0)),
                    student_layer: Some(crate::layer_map::LayerRef::Number(0)),
                    map: None,
                };
                if l.map.is_some() || l.teacher_layer.is_some() || l.student_layer.is_some() {
                    return Err(Error::Config(format!(
                        "{what}: the embedding loss always pairs layer 0 with layer 0; use \
                         hidden_mse for other layers"
                    )));
                }
                (m.pairs(student.layers, teacher.layers, 0, &what)?, Some(l))
            }
            LossSpec::AttentionMse(l) => {
                if student.heads != teacher.heads {
                    return Err(Error::Config(format!(
                        "{what}: the student has {} attention heads and the teacher {}; the \
                         attention loss compares head by head",
                        student.heads, teacher.heads
                    )));
                }
                if l.projection.is_some() {
                    return Err(Error::Config(format!(
                        "{what}: attention scores take no projection"
                    )));
                }
                (
                    l.layers().pairs(student.layers, teacher.layers, 1, &what)?,
                    None,
                )
            }
            _ => (Vec::new(), None),
        };
        let mut projections = Vec::new();
        if let Some(l) = layer {
            match l.projection {
                Some(ProjectionKind::Linear) => {
                    for &(s, _) in &pairs {
                        let name = crate::projections::name(i, spec.kind(), s);
                        projections.push(crate::projections::create(
                            varmap,
                            &name,
                            student.hidden,
                            teacher.hidden,
                            seed,
                            device,
                        )?);
                    }
                }
                None if student.hidden != teacher.hidden => {
                    return Err(Error::Config(format!(
                        "{what}: the student's hidden size {} does not fit the teacher's {} \
                         without a projection: add projection = \"linear\" to the entry, or \
                         use a student of width {}",
                        student.hidden, teacher.hidden, teacher.hidden
                    )))
                }
                None => {}
            }
        }
        out.push(ResolvedLoss {
            spec: spec.clone(),
            pairs,
            projections,
            teacher,
            input_weights: std::sync::OnceLock::new(),
        });
    }
    Ok(out)
}

/// What the student's forward pass must return for `losses`.
pub fn wants(losses: &[ResolvedLoss]) -> Wants {
    let mut w = Wants::default();
    for l in losses {
        match &l.spec {
            LossSpec::SoftCe(s) if !s.positions.is_masked() => w.mlm_logits_all = true,
            LossSpec::SoftCe(_) | LossSpec::MlmCe(_) => w.mlm_logits = true,
            LossSpec::HardCe(_) | LossSpec::LogitMse(_) | LossSpec::ClassSoftCe(_) => {
                w.class_logits = true
            }
            LossSpec::AttentionMse(_) => w.attention.extend(l.pairs.iter().map(|p| p.0)),
            LossSpec::HiddenCos(_) | LossSpec::HiddenMse(_) | LossSpec::EmbeddingMse(_) => {
                w.hidden.extend(l.pairs.iter().map(|p| p.0))
            }
        }
    }
    w
}

/// The cache targets `losses` need, for the manifest check (the smallest spec that
/// satisfies them: any k, the temperatures the rest bucket needs, the mapped layers).
pub fn needed_targets(losses: &[ResolvedLoss]) -> TargetSpec {
    let mut spec = TargetSpec::default();
    let mut hidden = std::collections::BTreeSet::new();
    let mut attention = std::collections::BTreeSet::new();
    for l in losses {
        match &l.spec {
            LossSpec::SoftCe(s) if s.source == SoftTargetSource::Topk => {
                spec.mlm_topk = Some(TopKSpec {
                    k: 1,
                    temperatures: if s.tail == TailMode::Renormalize {
                        Vec::new()
                    } else {
                        vec![s.temperature]
                    },
                    logit_precision: Precision::F16,
                    positions: s.positions,
                })
            }
            LossSpec::SoftCe(s) => {
                spec.mlm_sampled = Some(kd_cache::targets::SampledSpec {
                    k: 1,
                    temperature: s.temperature,
                })
            }
            LossSpec::LogitMse(_) | LossSpec::ClassSoftCe(_) => spec.logits = true,
            LossSpec::HiddenCos(_) | LossSpec::HiddenMse(_) | LossSpec::EmbeddingMse(_) => {
                hidden.extend(l.pairs.iter().map(|p| p.1 as u32))
            }
            LossSpec::AttentionMse(_) => attention.extend(l.pairs.iter().map(|p| p.1 as u32)),
            LossSpec::MlmCe(_) | LossSpec::HardCe(_) => {}
        }
    }
    if !hidden.is_empty() {
        spec.hidden = Some(LayerSpec {
            layers: hidden.into_iter().collect(),
            precision: Precision::F16,
        });
    }
    if !attention.is_empty() {
        spec.attention = Some(LayerSpec {
            layers: attention.into_iter().collect(),
            precision: Precision::F16,
        });
    }
    spec
}

/// Everything a term needs besides the student's outputs.
pub struct TermInputs<'a> {
    /// The teacher records of the micro-batch, in batch order.
    pub records: &'a [Record],
    /// The padded batch the student saw.
    pub batch: &'a kd_data::Batch,
    /// The cache's top-k layout.
    pub topk: &'a TopKLayout,
    /// Where tensors go.
    pub device: &'a Device,
}

/// The unweighted value of `loss` on one micro-batch (a sum over its layer pairs).
pub fn term(loss: &ResolvedLoss, out: &StudentOutputs, inp: &TermInputs) -> Result<Tensor> {
    let dev = inp.device;
    match &loss.spec {
        LossSpec::SoftCe(s) if !s.positions.is_masked() => {
            let logits = out.mlm_logits_all.as_ref().ok_or_else(|| {
                Error::Config("the student returned no logits at every token".into())
            })?;
            soft_ce(s, logits, inp)
        }
        LossSpec::SoftCe(s) => soft_ce(s, mlm_logits(out)?, inp),
        LossSpec::MlmCe(_) => {
            let labels = &inp.batch.mlm_labels;
            let labels = Tensor::from_slice(labels, labels.len(), dev)?;
            Ok(mlm_cross_entropy(mlm_logits(out)?, &labels)?)
        }
        LossSpec::HardCe(_) => {
            let labels: Vec<u32> = inp
                .records
                .iter()
                .map(|r| match r.label {
                    Some(kd_cache::Label::Class(c)) => Ok(c),
                    _ => Err(Error::Config(format!(
                        "hard_ce: record {} has no class label",
                        r.seq_id
                    ))),
                })
                .collect::<Result<_>>()?;
            let labels = Tensor::from_vec(labels, inp.records.len(), dev)?;
            Ok(mlm_cross_entropy(class_logits(out)?, &labels)?)
        }
        LossSpec::LogitMse(_) => {
            let s = class_logits(out)?;
            let t = teacher_logits(s, "logit_mse", inp)?;
            Ok(logit_mse(s, &t)?)
        }
        LossSpec::ClassSoftCe(c) => {
            let s = class_logits(out)?;
            let t = teacher_logits(s, "class_soft_ce", inp)?;
            let temperature = c.temperature as f64;
            let ce = prediction_soft_ce(s, &t, temperature, SoftCeReduction::BatchMean)?;
            Ok(if c.t2_scaling {
                ce.affine(temperature * temperature, 0.0)?
            } else {
                ce
            })
        }
        LossSpec::HiddenCos(_) | LossSpec::HiddenMse(_) | LossSpec::EmbeddingMse(_) => {
            layer_terms(loss, out, inp)
        }
        LossSpec::AttentionMse(_) => crate::loss_terms_attention::attention_terms(loss, out, inp),
    }
}

fn mlm_logits(out: &StudentOutputs) -> Result<&Tensor> {
    out.mlm_logits
        .as_ref()
        .ok_or_else(|| Error::Config("the batch has no masked position".into()))
}

/// The records' teacher logits `[B, C]` beside the student's `s`, refused (naming `loss` and
/// the record) when a record has none or another number of classes.
fn teacher_logits(s: &Tensor, loss: &str, inp: &TermInputs) -> Result<Tensor> {
    let c = s.dim(1)?;
    let mut t = Vec::with_capacity(inp.records.len() * c);
    for r in inp.records {
        let l = r.logits.as_ref().filter(|l| l.len() == c).ok_or_else(|| {
            Error::Config(format!(
                "{loss}: record {} has no {c} teacher logits",
                r.seq_id
            ))
        })?;
        t.extend_from_slice(l);
    }
    Ok(Tensor::from_vec(t, (inp.records.len(), c), inp.device)?.to_dtype(s.dtype())?)
}

fn class_logits(out: &StudentOutputs) -> Result<&Tensor> {
    out.class_logits
        .as_ref()
        .ok_or_else(|| Error::Config("the student returned no class logits".into()))
}

fn soft_ce(s: &SoftCe, logits: &Tensor, inp: &TermInputs) -> Result<Tensor> {
    let dev = inp.device;
    let cfg = SoftTargetConfig {
        temperature: f64::from(s.temperature),
        t2_scaling: s.t2_scaling,
    };
    if s.source == SoftTargetSource::Sampled {
        let (mut offsets, mut ids, mut counts) = (vec![0u32], Vec::new(), Vec::new());
        for rec in inp.records {
            let smp = rec.mlm_sampled.as_ref().ok_or_else(|| {
                Error::Config(format!("record {} has no sampled targets", rec.seq_id))
            })?;
            let base = ids.len() as u32;
            offsets.extend(smp.offsets[1..].iter().map(|o| o + base));
            ids.extend_from_slice(&smp.ids);
            counts.extend_from_slice(&smp.counts);
        }
        let t = SampledTargets::from_slices(&offsets, &ids, &counts, dev)?;
        return Ok(soft_target_sampled(logits, &t, &cfg)?);
    }
    let (mut ids, mut values, mut logz) = (Vec::new(), Vec::new(), Vec::new());
    // A cache with a row per token serves the masked positions' rows to a masked loss.
    let select = s.positions.is_masked() && !inp.topk.positions.is_masked();
    for rec in inp.records {
        let t = rec
            .mlm_topk
            .as_ref()
            .ok_or_else(|| Error::Config(format!("record {} has no top-k targets", rec.seq_id)))?;
        let picked;
        let t = if select {
            picked = t.select_rows(&rec.mlm_positions)?;
            &picked
        } else {
            t
        };
        ids.extend_from_slice(&t.ids);
        values.extend(t.logits.decode());
        logz.extend_from_slice(&t.log_partition);
    }
    let targets = TopKTargets::from_cache_layout(
        &ids,
        &values,
        &logz,
        &inp.topk.temperatures,
        s.temperature,
        inp.topk.k,
        dev,
    )?;
    Ok(soft_target_topk(logits, &targets, s.tail, &cfg)?)
}

/// The teacher's hidden layer `layer` of every record, zero-padded to `[B, L, H]`.
fn teacher_hidden(inp: &TermInputs, layer: usize, h: usize) -> Result<Tensor> {
    let (b, l) = (inp.batch.batch_size, inp.batch.seq_len);
    let mut teacher = vec![0f32; b * l * h];
    for (r, rec) in inp.records.iter().enumerate() {
        let values = rec.hidden_layer(layer as u32).ok_or_else(|| {
            Error::Config(format!("record {} has no hidden state {layer}", rec.seq_id))
        })?;
        let v = values.decode();
        teacher[r * l * h..r * l * h + v.len()].copy_from_slice(&v);
    }
    Ok(Tensor::from_vec(teacher, (b, l, h), inp.device)?)
}

/// A hidden-state loss (`hidden_cos`, `hidden_mse`, `embedding_mse`) summed over its pairs.
fn layer_terms(loss: &ResolvedLoss, out: &StudentOutputs, inp: &TermInputs) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (i, &(s, t)) in loss.pairs.iter().enumerate() {
        let student = out
            .hidden
            .get(&s)
            .ok_or_else(|| Error::Config(format!("the student returned no hidden state {s}")))?;
        let student = match loss.projections.get(i) {
            Some(p) => p.project(student)?,
            None => student.clone(),
        };
        let h = student.dim(2)?;
        let teacher = teacher_hidden(inp, t, h)?.to_dtype(student.dtype())?;
        let value = match &loss.spec {
            LossSpec::HiddenCos(_) => {
                let (b, len) = (inp.batch.batch_size, inp.batch.seq_len);
                let mask = Tensor::from_slice(&inp.batch.attention_mask, (b, len), inp.device)?;
                cosine_embedding(&student, &teacher, &mask)?
            }
            // Over real tokens only: the cache holds no teacher state for padding, and the
            // mean must not depend on how much padding a batch has.
            _ => {
                let real = real_rows(inp)?;
                let pick = |x: &Tensor| -> Result<Tensor> {
                    let (b, l, h) = x.dims3()?;
                    Ok(x.reshape((b * l, h))?.index_select(&real, 0)?)
                };
                hidden_mse(&pick(&student)?, &pick(&teacher)?)?
            }
        };
        total = Some(match total {
            Some(acc) => (acc + value)?,
            None => value,
        });
    }
    total.ok_or_else(|| Error::Config("a layer loss without layer pairs".into()))
}

/// Flat indices `row * L + position` of the batch's real tokens.
fn real_rows(inp: &TermInputs) -> Result<Tensor> {
    let idx = inp.batch.real_positions();
    let n = idx.len();
    Ok(Tensor::from_vec(idx, n, inp.device)?)
}
