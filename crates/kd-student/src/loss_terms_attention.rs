//! TinyBERT's attention term: the teacher's scores of a mapped layer rebuilt for the padded
//! batch from what the cache stored (a map, query/key projections, or the layer's input via
//! `loss_terms_input`), and the MSE against the student's scores over the real entries.

use crate::loss_terms::{ResolvedLoss, TermInputs};
use crate::student::StudentOutputs;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use kd_distill::attention_mse;

/// The teacher's attention scores of `layer`, `[B, heads, L, L]`: each record's real block
/// where it was stored (as a map, or recomputed from its query/key projections or its input
/// hidden state for a teacher of width `hidden`), `-10000` (the additive padding mask)
/// everywhere else.
fn teacher_scores(
    loss: &ResolvedLoss,
    inp: &TermInputs,
    layer: usize,
    heads: usize,
) -> Result<Tensor> {
    let hidden = loss.teacher.hidden;
    let first = inp.records.first();
    let no_map = first.is_some_and(|r| r.attention_layer(layer as u32).is_none());
    if no_map && first.is_some_and(|r| r.attention_qk_layer(layer as u32).is_some()) {
        return teacher_scores_from_qk(inp, layer, heads, hidden);
    }
    if no_map && first.is_some_and(|r| r.attention_input_layer(layer as u32).is_some()) {
        return crate::loss_terms_input::teacher_scores_from_input(loss, inp, layer, heads);
    }
    let (b, l) = (inp.batch.batch_size, inp.batch.seq_len);
    let mut t = vec![-10000f32; b * heads * l * l];
    for (r, rec) in inp.records.iter().enumerate() {
        let v = rec
            .attention_scores(layer as u32, hidden, heads)?
            .ok_or_else(|| {
                Error::Config(format!(
                    "record {} has no attention layer {layer} (neither its map nor its \
                     query/key projections)",
                    rec.seq_id
                ))
            })?;
        let n = rec.len();
        if v.len() != heads * n * n {
            return Err(Error::Config(format!(
                "record {}: attention layer {layer} holds {} values, expected {heads} x {n} x {n}",
                rec.seq_id,
                v.len()
            )));
        }
        for hd in 0..heads {
            for i in 0..n {
                let src = &v[(hd * n + i) * n..(hd * n + i) * n + n];
                let dst = ((r * heads + hd) * l + i) * l;
                t[dst..dst + n].copy_from_slice(src);
            }
        }
    }
    Ok(Tensor::from_vec(t, (b, heads, l, l), inp.device)?)
}

/// [`teacher_scores`] from cached query/key projections: `(q_h / sqrt(d)) k_h^T` of the padded
/// batch as one matmul on the device (the formula of `kd_cache::qk::scores`), then `-10000`
/// wherever the query or the key is padding, as for stored maps.
fn teacher_scores_from_qk(
    inp: &TermInputs,
    layer: usize,
    heads: usize,
    hidden: usize,
) -> Result<Tensor> {
    let (b, l) = (inp.batch.batch_size, inp.batch.seq_len);
    let d = kd_cache::qk::head_dim(hidden, heads)?;
    let mut qk = vec![0f32; b * l * 2 * hidden];
    let mut real = vec![0u8; b * l * l];
    for (r, rec) in inp.records.iter().enumerate() {
        let n = rec.len();
        let values = rec.attention_qk_layer(layer as u32).ok_or_else(|| {
            Error::Config(format!(
                "record {} has no attention layer {layer} (neither its map nor its query/key \
                 projections)",
                rec.seq_id
            ))
        })?;
        let bad = |m: String| {
            Error::Config(format!(
                "record {}: attention_qk layer {layer}: {m}",
                rec.seq_id
            ))
        };
        let w = kd_cache::qk::width(values, n).map_err(bad)?;
        if n > 0 && w != 2 * hidden {
            return Err(bad(format!(
                "Q/K holds {w} values per token, expected 2 x hidden = {} (hidden_size {hidden})",
                2 * hidden
            )));
        }
        let v = values.decode();
        qk[r * l * 2 * hidden..][..v.len()].copy_from_slice(&v);
        for i in 0..n {
            real[(r * l + i) * l..][..n].fill(1);
        }
    }
    let qk = Tensor::from_vec(qk, (b, l, 2, heads, d), inp.device)?;
    scores_of_qk(&qk, real, inp.device)
}

/// `(q_h / sqrt(d)) k_h^T` of a padded batch's query/key projections `qk` `[B, L, 2, heads,
/// d]`, `-10000` wherever `real` (`[B, L, L]`, row-major) is 0.
pub(crate) fn scores_of_qk(qk: &Tensor, real: Vec<u8>, device: &Device) -> Result<Tensor> {
    let (b, l, _, heads, d) = qk.dims5()?;
    let scale = 1.0 / (d as f64).sqrt();
    let q = (qk
        .narrow(2, 0, 1)?
        .squeeze(2)?
        .transpose(1, 2)?
        .contiguous()?
        * scale)?;
    let k_t = qk
        .narrow(2, 1, 1)?
        .squeeze(2)?
        .permute((0, 2, 3, 1))?
        .contiguous()?;
    let scores = q.matmul(&k_t)?;
    let real = Tensor::from_vec(real, (b, 1, l, l), device)?.broadcast_as((b, heads, l, l))?;
    let pad = Tensor::full(-10000f32, (b, heads, l, l), device)?;
    Ok(real.where_cond(&scores, &pad)?)
}

pub(crate) fn attention_terms(
    loss: &ResolvedLoss,
    out: &StudentOutputs,
    inp: &TermInputs,
) -> Result<Tensor> {
    let (b, l) = (inp.batch.batch_size, inp.batch.seq_len);
    // Padded query rows hold no teacher value: mask them like padded keys on the student's
    // side, so both sides read 0 there after the floor of attention_mse.
    let query_pad: Vec<f32> = inp
        .batch
        .attention_mask
        .iter()
        .map(|&m| if m == 0 { -10000.0 } else { 0.0 })
        .collect();
    let query_pad = Tensor::from_vec(query_pad, (b, 1, l, 1), inp.device)?;
    let mut total: Option<Tensor> = None;
    for &(s, t) in &loss.pairs {
        let student = out
            .attention_scores
            .get(&s)
            .ok_or_else(|| Error::Config(format!("the student returned no attention layer {s}")))?;
        let heads = student.dim(1)?;
        let student = student.broadcast_add(&query_pad.to_dtype(student.dtype())?)?;
        let teacher = teacher_scores(loss, inp, t, heads)?;
        let teacher = teacher.to_dtype(student.dtype())?;
        // attention_mse averages over the padded [B, heads, L, L]; padded entries are 0 on
        // both sides, so rescaling to the real entries' count gives their mean.
        let real: usize = inp.records.iter().map(|r| heads * r.len() * r.len()).sum();
        let scale = (b * heads * l * l) as f64 / real.max(1) as f64;
        let value = (attention_mse(&student, &teacher)? * scale)?;
        total = Some(match total {
            Some(acc) => (acc + value)?,
            None => value,
        });
    }
    total.ok_or_else(|| Error::Config("an attention loss without layer pairs".into()))
}
