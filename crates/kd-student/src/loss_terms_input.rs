//! Teacher attention scores from cached input hidden states (`attention-input` caches): the
//! padded batch's inputs projected by the cache's query/key weights on the device, then the
//! scores exactly as from cached query/key projections.

use crate::loss_terms::{ResolvedLoss, TermInputs};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use kd_cache::AttentionWeights;

/// `(layer, W_q^T, b_q, W_k^T, b_k)` of every layer of `w` on `device`.
fn upload(w: &AttentionWeights, device: &Device) -> Result<Vec<(u32, [Tensor; 4])>> {
    let h = w.hidden();
    let mut out = Vec::new();
    for layer in w.layers() {
        let Some(lw) = w.layer(layer) else { continue };
        let m = |v: &[f32]| -> Result<Tensor> {
            Ok(Tensor::from_slice(v, (h, h), device)?.t()?.contiguous()?)
        };
        let v = |v: &[f32]| -> Result<Tensor> { Ok(Tensor::from_slice(v, h, device)?) };
        out.push((
            layer,
            [
                m(&lw.query_weight)?,
                v(&lw.query_bias)?,
                m(&lw.key_weight)?,
                v(&lw.key_bias)?,
            ],
        ));
    }
    Ok(out)
}

/// The teacher's scores of `layer`, `[B, heads, L, L]`, from each record's input hidden state
/// (hidden `layer - 1`): `q = x W_q^T + b_q`, `k = x W_k^T + b_k` for the padded batch as one
/// matmul each, then `(q_h / sqrt(d)) k_h^T` with `-10000` wherever the query or the key is
/// padding, as for cached query/key projections. The weights go to the device once per run.
pub(crate) fn teacher_scores_from_input(
    loss: &ResolvedLoss,
    inp: &TermInputs,
    layer: usize,
    heads: usize,
) -> Result<Tensor> {
    let hidden = loss.teacher.hidden;
    let (b, l) = (inp.batch.batch_size, inp.batch.seq_len);
    let d = kd_cache::qk::head_dim(hidden, heads)?;
    let mut x = vec![0f32; b * l * hidden];
    let mut real = vec![0u8; b * l * l];
    for (r, rec) in inp.records.iter().enumerate() {
        let n = rec.len();
        let bad = |m: String| {
            Error::Config(format!(
                "record {}: attention_input layer {layer}: {m}",
                rec.seq_id
            ))
        };
        let values = rec.attention_input_layer(layer as u32).ok_or_else(|| {
            Error::Config(format!(
                "record {} has no attention layer {layer} (neither its map, its query/key \
                 projections nor its input)",
                rec.seq_id
            ))
        })?;
        let w = kd_cache::attention_input::width(values, n).map_err(bad)?;
        if n > 0 && w != hidden {
            return Err(bad(format!(
                "the input holds {w} values per token, expected hidden_size {hidden}"
            )));
        }
        let v = values.decode();
        x[r * l * hidden..][..v.len()].copy_from_slice(&v);
        for i in 0..n {
            real[(r * l + i) * l..][..n].fill(1);
        }
    }
    let weights = match loss.input_weights.get() {
        Some(w) => w,
        None => {
            let w = inp
                .records
                .iter()
                .find_map(|r| r.attention_weights.as_deref())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "attention layer {layer}: the records carry no query/key weights"
                    ))
                })?;
            if w.hidden() != hidden {
                return Err(Error::Config(format!(
                    "the cache's attention weights have width {}, the teacher's hidden_size is \
                     {hidden}",
                    w.hidden()
                )));
            }
            let up = upload(w, inp.device)?;
            loss.input_weights.get_or_init(|| up)
        }
    };
    let [wq, bq, wk, bk] = &weights
        .iter()
        .find(|(l, _)| *l == layer as u32)
        .ok_or_else(|| {
            Error::Config(format!(
                "the cache's attention weights hold no layer {layer}"
            ))
        })?
        .1;
    let x = Tensor::from_vec(x, (b * l, hidden), inp.device)?;
    let q = x
        .matmul(wq)?
        .broadcast_add(bq)?
        .reshape((b, l, 1, heads, d))?;
    let k = x
        .matmul(wk)?
        .broadcast_add(bk)?
        .reshape((b, l, 1, heads, d))?;
    let qk = Tensor::cat(&[&q, &k], 2)?;
    crate::loss_terms_attention::scores_of_qk(&qk, real, inp.device)
}
