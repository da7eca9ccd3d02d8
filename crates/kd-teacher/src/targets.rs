//! From one teacher forward pass over a padded batch to one cache record per sequence: MLM
//! distributions at the masked positions, hidden states, attention scores and attention
//! query/key projections or input hidden states of the chosen layers over real tokens only,
//! classifier logits; and the teacher's query/key weights the input form needs.

use crate::Result;
use candle_core::{DType, IndexOp, Tensor};
use kd_bert::model::gather_positions;
use kd_bert::{Architecture, Bert, ForwardCtx, LoadOptions};
use kd_cache::{LayerValues, Quantized, Record, Sampled, TargetSpec, TopK};
use kd_core::rng::SeedHash;
use kd_data::Batch;
use rand_chacha::ChaCha8Rng;

/// The RNG of the sampled MLM targets of one sequence: a pure function of (seed, epoch,
/// sequence id), so any worker reproduces the same draws.
pub fn sample_rng(seed: u64, epoch: u32, seq_id: u64) -> ChaCha8Rng {
    SeedHash::tagged(b"kd-precompute/sampled/v1\0")
        .u64(seed)
        .u64(u64::from(epoch))
        .u64(seq_id)
        .rng()
}

/// The load options of a teacher that produces `spec`: the heads it needs (classifier for
/// logits, MLM head for MLM targets, none otherwise: hidden-state and attention targets never
/// use the pooler, which a masked-LM checkpoint does not have).
pub fn teacher_load_options(spec: &TargetSpec, device: &candle_core::Device) -> LoadOptions {
    let arch = if spec.logits {
        Architecture::SequenceClassification
    } else if spec.mlm_topk.is_some() || spec.mlm_sampled.is_some() {
        Architecture::MaskedLm
    } else {
        Architecture::Base
    };
    LoadOptions {
        architecture: Some(arch),
        fresh_heads: arch == Architecture::Base,
        device: device.clone(),
        ..LoadOptions::default()
    }
}

/// Runs `teacher` on `batch` and returns its records, in batch row order.
pub fn extract_batch(
    teacher: &Bert,
    batch: &Batch,
    epoch: u32,
    spec: &TargetSpec,
    sample_seed: u64,
) -> Result<Vec<Record>> {
    let device = teacher.embeddings.word_embeddings.device().clone();
    let input = kd_bert::BertInput::from_batch(batch, &device)?;
    let attention_layers: Vec<usize> = spec
        .attention
        .as_ref()
        .map(|a| a.layers.iter().map(|&l| l as usize).collect())
        .unwrap_or_default();
    let out = teacher.encode(&input, &attention_layers, &mut ForwardCtx::eval())?;
    let (b, l) = (batch.batch_size, batch.seq_len);
    let qk = query_keys(teacher, &out, spec)?;
    let weights = attention_weights(teacher, spec)?.map(std::sync::Arc::new);
    let inputs = kd_cache::attention_input::stored_layers(spec);
    let lengths: Vec<usize> = (0..b)
        .map(|r| {
            batch.attention_mask[r * l..(r + 1) * l]
                .iter()
                .filter(|&&m| m == 1)
                .count()
        })
        .collect();

    // Logits at the masked positions serve sampled targets and top-k rows at masked positions.
    let needs_mlm = spec.mlm_sampled.is_some()
        || spec
            .mlm_topk
            .as_ref()
            .is_some_and(|t| t.positions.is_masked());
    let vocab = teacher.config.vocab_size;
    let mlm_rows: Vec<f32> = if needs_mlm && !batch.mlm_positions.is_empty() {
        let (pos, _) = crate::tensors::mlm_targets(batch, &device)?;
        let logits = teacher.mlm_logits(&gather_positions(out.last_hidden_state(), &pos)?)?;
        logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?
    } else {
        Vec::new()
    };
    let class_logits: Option<Vec<Vec<f32>>> = if spec.logits {
        let logits = teacher.classify(&out, &mut ForwardCtx::eval())?;
        Some(logits.to_dtype(DType::F32)?.to_vec2()?)
    } else {
        None
    };

    let mut records = Vec::with_capacity(b);
    let mut mask_cursor = 0usize;
    for (r, &n) in lengths.iter().enumerate() {
        let row = r * l..r * l + n;
        let flat: Vec<u32> = batch
            .mlm_positions
            .iter()
            .copied()
            .filter(|&p| (p as usize) >= r * l && (p as usize) < (r + 1) * l)
            .collect();
        let m = flat.len();
        let labels = batch.mlm_labels[mask_cursor..mask_cursor + m].to_vec();
        let rows = &mlm_rows[(mask_cursor * vocab).min(mlm_rows.len())
            ..((mask_cursor + m) * vocab).min(mlm_rows.len())];
        mask_cursor += m;
        let seq_id = batch.ids[r];
        let mut rec = Record {
            seq_id,
            epoch,
            input_ids: batch.input_ids[row.clone()].to_vec(),
            token_type_ids: batch.token_type_ids[row.clone()]
                .iter()
                .any(|&t| t != 0)
                .then(|| batch.token_type_ids[row.clone()].to_vec()),
            mlm_positions: flat.iter().map(|&p| p - (r * l) as u32).collect(),
            mlm_labels: labels,
            label: batch.labels.get(r).map(|lab| match *lab {
                kd_data::Label::Class(c) => kd_cache::Label::Class(c),
                kd_data::Label::Value(v) => kd_cache::Label::Value(v),
            }),
            ..Record::default()
        };
        if let Some(t) = &spec.mlm_topk {
            // A row per token takes the head over the whole sequence (one record at a time,
            // so the [n, vocab] logits stay small).
            let every: Vec<f32>;
            let rows = if t.positions.is_masked() {
                rows
            } else {
                let h = out.last_hidden_state().i((r, 0..n))?;
                every = teacher
                    .mlm_logits(&h)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1()?;
                &every
            };
            rec.mlm_topk = Some(TopK::from_vocab_logits(
                rows,
                vocab,
                t.k as usize,
                &t.temperatures,
                t.logit_precision,
            )?);
        }
        if let Some(s) = &spec.mlm_sampled {
            let mut rng = sample_rng(sample_seed, epoch, seq_id);
            let k = u16::try_from(s.k).map_err(|_| {
                crate::Error::Config(format!("mlm-sampled k = {} exceeds 65535", s.k))
            })?;
            rec.mlm_sampled = Some(Sampled::draw(rows, vocab, k, s.temperature, &mut rng)?);
        }
        if let Some(h) = &spec.hidden {
            for &layer in &h.layers {
                let hs = out.hidden_states.get(layer as usize).ok_or_else(|| {
                    crate::Error::Config(format!("the teacher has no hidden state {layer}"))
                })?;
                let values: Vec<f32> = hs
                    .i((r, 0..n))?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1()?;
                let cols = hs.dim(2)?;
                rec.hidden.push(LayerValues {
                    layer,
                    values: Quantized::encode(&values, cols, h.precision)?,
                });
            }
        }
        if let Some(a) = &spec.attention {
            for &layer in &a.layers {
                let maps = out.attention(layer as usize).ok_or_else(|| {
                    crate::Error::Config(format!("the teacher has no attention layer {layer}"))
                })?;
                let values: Vec<f32> = maps
                    .scores
                    .i((r, .., 0..n, 0..n))?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1()?;
                rec.attention.push(LayerValues {
                    layer,
                    values: Quantized::encode(&values, n, a.precision)?,
                });
            }
        }
        if let Some(a) = &spec.attention_qk {
            for (layer, attention, q, k) in &qk {
                let row = |t: &Tensor| -> Result<Vec<f32>> {
                    Ok(t.i((r, 0..n))?.flatten_all()?.to_vec1()?)
                };
                let hidden = q.dim(2)?;
                rec.attention_qk.push(LayerValues {
                    layer: *layer,
                    values: kd_cache::qk::encode(
                        &row(q)?,
                        &row(k)?,
                        n,
                        hidden,
                        *attention,
                        a.precision,
                    )?,
                });
            }
        }
        if let Some(a) = &spec.attention_input {
            for &layer in &inputs {
                let hs = out
                    .hidden_states
                    .get((layer as usize).saturating_sub(1))
                    .ok_or_else(|| {
                        crate::Error::Config(format!("the teacher has no attention layer {layer}"))
                    })?;
                let values: Vec<f32> = hs
                    .i((r, 0..n))?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1()?;
                rec.attention_input.push(LayerValues {
                    layer,
                    values: kd_cache::attention_input::encode(
                        &values,
                        n,
                        teacher.config.hidden_size,
                        teacher.config.num_attention_heads,
                        a.precision,
                    )?,
                });
            }
            rec.attention_weights = weights.clone();
        }
        if let Some(c) = &class_logits {
            rec.logits = Some(c[r].clone());
        }
        records.push(rec);
    }
    Ok(records)
}

/// The query and key projections `[B, L, H]` (f32) of each `attention_qk` layer of `spec`,
/// with the layer's head count: encoder layer `l` reads hidden state `l - 1`.
fn query_keys(
    teacher: &Bert,
    out: &kd_bert::EncoderOutput,
    spec: &TargetSpec,
) -> Result<Vec<(u32, usize, Tensor, Tensor)>> {
    let Some(a) = &spec.attention_qk else {
        return Ok(Vec::new());
    };
    let mut qk = Vec::with_capacity(a.layers.len());
    for &layer in &a.layers {
        let missing =
            || crate::Error::Config(format!("the teacher has no attention layer {layer}"));
        let l = (layer as usize).checked_sub(1).ok_or_else(missing)?;
        let attention = teacher
            .encoder
            .layers
            .get(l)
            .ok_or_else(missing)?
            .attention();
        let input = out.hidden_states.get(l).ok_or_else(missing)?;
        let (q, k) = attention.query_key(input)?;
        qk.push((
            layer,
            attention.heads(),
            q.to_dtype(DType::F32)?,
            k.to_dtype(DType::F32)?,
        ));
    }
    Ok(qk)
}

/// The teacher's query/key weights and biases (f32) of the `attention_input` layers of
/// `spec`, as a cache stores them once; `None` when `spec` has no such target.
pub fn attention_weights(
    teacher: &Bert,
    spec: &TargetSpec,
) -> Result<Option<kd_cache::AttentionWeights>> {
    let Some(a) = &spec.attention_input else {
        return Ok(None);
    };
    let flat =
        |t: &Tensor| -> Result<Vec<f32>> { Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?) };
    let mut layers = Vec::with_capacity(a.layers.len());
    for &layer in &a.layers {
        let missing =
            || crate::Error::Config(format!("the teacher has no attention layer {layer}"));
        let l = (layer as usize).checked_sub(1).ok_or_else(missing)?;
        let attention = teacher
            .encoder
            .layers
            .get(l)
            .ok_or_else(missing)?
            .attention();
        let (wq, bq, wk, bk) = attention.query_key_weights();
        layers.push((
            layer,
            kd_cache::LayerWeights {
                query_weight: flat(wq)?,
                query_bias: flat(bq)?,
                key_weight: flat(wk)?,
                key_bias: flat(bk)?,
            },
        ));
    }
    Ok(Some(kd_cache::AttentionWeights::new(
        teacher.config.hidden_size,
        layers,
    )?))
}

/// Shape-check helper used by tests: the scores tensor of a record's attention layer as
/// `[heads, n, n]`.
pub fn attention_tensor(values: &Quantized, heads: usize) -> Result<Tensor> {
    let n = values.cols();
    Ok(Tensor::from_vec(
        values.decode(),
        (heads, n, n),
        &candle_core::Device::Cpu,
    )?)
}

#[cfg(test)]
mod tests {
    use super::sample_rng;
    use rand::{RngCore, SeedableRng};
    use sha2::{Digest, Sha256};

    /// The seed of the sampled targets as caches were written with it: SHA-256 of the tag,
    /// seed, epoch and sequence id, each little-endian.
    fn reference(seed: u64, epoch: u32, seq_id: u64) -> rand_chacha::ChaCha8Rng {
        let mut h = Sha256::new();
        h.update(b"kd-precompute/sampled/v1\0");
        h.update(seed.to_le_bytes());
        h.update(u64::from(epoch).to_le_bytes());
        h.update(seq_id.to_le_bytes());
        rand_chacha::ChaCha8Rng::from_seed(h.finalize().into())
    }

    #[test]
    fn sample_rng_keeps_the_cached_seed() {
        for (seed, epoch, id) in [(0, 0, 0), (17, 3, 12345), (u64::MAX, u32::MAX, u64::MAX)] {
            let (mut a, mut b) = (sample_rng(seed, epoch, id), reference(seed, epoch, id));
            assert_eq!(a.get_seed(), b.get_seed());
            for _ in 0..8 {
                assert_eq!(a.next_u64(), b.next_u64());
            }
        }
    }
}
