//! Masked-language-model cross-entropy at masked positions.

use std::sync::Arc;

use candle_core::Tensor;

use crate::check;
use crate::error::{Error, Result};
use crate::fused::{self, SparseTargets};
use crate::ops::shifted_log_partition;

const LOSS: &str = "mlm_cross_entropy";

/// `L = −1/N Σ_n log softmax(s_n)[y_n]`: cross-entropy of the student's MLM logits at the `N`
/// masked positions (`student_logits` `[N, V]`) against the original tokens (`labels` `[N]`,
/// any integer dtype), averaged over positions.
///
/// DistilBERT's `L_mlm` (`nn.CrossEntropyLoss` with the non-masked positions ignored): select
/// the masked rows first, so there is no ignore index here (a negative label such as -100 is
/// an error). Zero positions give a zero loss.
pub fn mlm_cross_entropy(student_logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let d = check::dims(student_logits, 2, LOSS, "student logits", "[N, V]")?;
    let (n, v) = (d[0], d[1]);
    let l = check::dims(labels, 1, LOSS, "labels", "[N]")?;
    if l[0] != n {
        return Err(Error::shape(
            LOSS,
            format!(
                "labels shape {:?} do not match student logits shape {:?}",
                labels.dims(),
                student_logits.dims()
            ),
        ));
    }
    let dtype = check::work_dtype(student_logits.dtype(), LOSS, "student logits")?;
    let ids = check::int_values(labels, LOSS, "labels")?
        .into_iter()
        .enumerate()
        .map(|(i, y)| match u32::try_from(y) {
            Ok(y) if (y as usize) < v => Ok(y),
            _ => Err(Error::invalid(
                LOSS,
                format!("label {y} at position {i} is outside the vocabulary of {v}"),
            )),
        })
        .collect::<Result<Vec<u32>>>()?;
    if n == 0 {
        return check::zero_loss(student_logits, dtype);
    }
    let x = student_logits.to_dtype(dtype)?;
    if kd_kernels::cpu::fast_path(&x) {
        let targets = SparseTargets {
            width: 1,
            weights: vec![1.0; n],
            ids,
            rest: None,
            row_offset: None,
        };
        let rows = fused::sparse_soft_ce_rows(&x, 1.0, Arc::new(targets))?;
        return Ok(rows.sum_all()?.affine(1.0 / n as f64, 0.0)?);
    }
    let ids = Tensor::from_vec(ids, (n, 1), x.device())?;
    let (shifted, log_total) = shifted_log_partition(&x)?;
    let log_q = shifted.gather(&ids, 1)?.sub(&log_total)?;
    Ok(log_q.sum_all()?.affine(-1.0 / n as f64, 0.0)?)
}
