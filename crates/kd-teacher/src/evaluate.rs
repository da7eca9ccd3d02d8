//! Evaluation of teachers (and, later, students): masked-token accuracy and classification
//! accuracy, in eval mode over fixed masks.

use crate::tensors::mlm_targets;
use crate::Result;
use candle_core::{DType, Device, Tensor, D};
use kd_bert::model::gather_positions;
use kd_bert::{Bert, BertInput, ForwardCtx};
use kd_data::{collate, BatchItem, EncodedExample, Label, MaskedSequence};
use serde::Serialize;

/// Masked-token prediction quality.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MlmEval {
    /// Share of masked positions whose top-1 prediction is the original token.
    pub top1: f64,
    /// Mean cross-entropy at the masked positions.
    pub loss: f64,
    /// Masked positions evaluated.
    pub positions: usize,
}

/// Top-1 accuracy and loss of `model`'s MLM head over already-masked sequences.
pub fn mlm_accuracy(
    model: &Bert,
    masked: &[(u64, MaskedSequence)],
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<MlmEval> {
    let mut order: Vec<usize> = (0..masked.len()).collect();
    order.sort_by_key(|&i| masked[i].1.input_ids.len());
    let (mut correct, mut total, mut loss_sum) = (0usize, 0usize, 0f64);
    for chunk in order.chunks(batch_size.max(1)) {
        let items: Vec<BatchItem> = chunk
            .iter()
            .map(|&i| BatchItem::masked(masked[i].0, &masked[i].1))
            .collect();
        let batch = collate(&items, pad_id)?;
        if batch.mlm_positions.is_empty() {
            continue;
        }
        let out = model.encode(
            &BertInput::from_batch(&batch, device)?,
            &[],
            &mut ForwardCtx::eval(),
        )?;
        let (pos, labels) = mlm_targets(&batch, device)?;
        let logits = model.mlm_logits(&gather_positions(out.last_hidden_state(), &pos)?)?;
        let n = batch.mlm_positions.len();
        let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        correct += pred
            .iter()
            .zip(&batch.mlm_labels)
            .filter(|(p, l)| p == l)
            .count();
        let ce = candle_nn::loss::cross_entropy(&logits.to_dtype(DType::F32)?, &labels)?;
        loss_sum += ce.to_scalar::<f32>()? as f64 * n as f64;
        total += n;
    }
    Ok(MlmEval {
        top1: correct as f64 / total.max(1) as f64,
        loss: loss_sum / total.max(1) as f64,
        positions: total,
    })
}

/// Sequence-classification quality.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassifyEval {
    /// Accuracy (classification) — for regression, the share of examples whose predicted sign
    /// matches the target's.
    pub accuracy: f64,
    /// Mean loss (cross-entropy, or MSE for regression).
    pub loss: f64,
    /// Examples evaluated.
    pub examples: usize,
}

/// Logits `[B, num_labels]` of `examples[idx]` in eval mode.
fn logits_of(
    model: &Bert,
    examples: &[EncodedExample],
    idx: &[usize],
    pad_id: u32,
    device: &Device,
) -> Result<(Tensor, Vec<Label>)> {
    let items: Vec<BatchItem> = idx
        .iter()
        .map(|&i| BatchItem::task(i as u64, &examples[i]))
        .collect();
    let batch = collate(&items, pad_id)?;
    let mut ctx = ForwardCtx::eval();
    let out = model.encode(&BertInput::from_batch(&batch, device)?, &[], &mut ctx)?;
    Ok((model.classify(&out, &mut ctx)?, batch.labels))
}

/// Accuracy and loss of a classifier on encoded examples.
pub fn classification_accuracy(
    model: &Bert,
    examples: &[EncodedExample],
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<ClassifyEval> {
    let (mut correct, mut loss_sum) = (0usize, 0f64);
    // Length-sorted batches: little padding, and the sums do not depend on the order.
    let mut idx: Vec<usize> = (0..examples.len()).collect();
    idx.sort_by_key(|&i| examples[i].input_ids.len());
    for chunk in idx.chunks(batch_size.max(1)) {
        let (logits, labels) = logits_of(model, examples, chunk, pad_id, device)?;
        let (loss, hits) = classification_loss(&logits, &labels)?;
        loss_sum += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        correct += hits;
    }
    let n = examples.len().max(1) as f64;
    Ok(ClassifyEval {
        accuracy: correct as f64 / n,
        loss: loss_sum / n,
        examples: examples.len(),
    })
}

/// Mean loss of `logits` against `labels` (cross-entropy for classes, MSE for values) and the
/// number of correct predictions.
pub fn classification_loss(logits: &Tensor, labels: &[Label]) -> Result<(Tensor, usize)> {
    let device = logits.device();
    let logits = logits.to_dtype(DType::F32)?;
    match labels.first() {
        Some(Label::Value(_)) => {
            let target: Vec<f32> = labels.iter().map(|l| l.as_f32()).collect();
            let target = Tensor::from_vec(target.clone(), labels.len(), device)?;
            let pred = logits.flatten_all()?;
            let loss = pred.sub(&target)?.sqr()?.mean_all()?;
            let p = pred.to_vec1::<f32>()?;
            let t = target.to_vec1::<f32>()?;
            let hits = p
                .iter()
                .zip(&t)
                .filter(|(a, b)| (**a > 0.0) == (**b > 0.0))
                .count();
            Ok((loss, hits))
        }
        _ => {
            let ids: Vec<u32> = labels.iter().map(|l| l.class().unwrap_or(0)).collect();
            let target = Tensor::from_vec(ids.clone(), labels.len(), device)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &target)?;
            let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            let hits = pred.iter().zip(&ids).filter(|(a, b)| a == b).count();
            Ok((loss, hits))
        }
    }
}
