//! Turning kd-data batches into the tensors the model takes.

use candle_core::{Device, Result, Tensor};
use kd_bert::BertInput;
use kd_data::Batch;

/// Input ids, token types and attention mask of `batch` as `[B, L]` u32 tensors.
pub fn bert_input(batch: &Batch, device: &Device) -> Result<BertInput> {
    let shape = (batch.batch_size, batch.seq_len);
    Ok(BertInput {
        input_ids: Tensor::from_slice(&batch.input_ids, shape, device)?,
        token_type_ids: Some(Tensor::from_slice(&batch.token_type_ids, shape, device)?),
        attention_mask: Some(Tensor::from_slice(&batch.attention_mask, shape, device)?),
    })
}

/// Flat masked positions `[N]` and their original ids `[N]` (u32).
pub fn mlm_targets(batch: &Batch, device: &Device) -> Result<(Tensor, Tensor)> {
    let n = batch.mlm_positions.len();
    Ok((
        Tensor::from_slice(&batch.mlm_positions, n, device)?,
        Tensor::from_slice(&batch.mlm_labels, n, device)?,
    ))
}
