//! The MLM targets of a kd-data batch as tensors (its model input is
//! [`kd_bert::BertInput::from_batch`]).

use candle_core::{Device, Result, Tensor};
use kd_data::Batch;

/// Flat masked positions `[N]` and their original ids `[N]` (u32).
pub fn mlm_targets(batch: &Batch, device: &Device) -> Result<(Tensor, Tensor)> {
    let n = batch.mlm_positions.len();
    Ok((
        Tensor::from_slice(&batch.mlm_positions, n, device)?,
        Tensor::from_slice(&batch.mlm_labels, n, device)?,
    ))
}
