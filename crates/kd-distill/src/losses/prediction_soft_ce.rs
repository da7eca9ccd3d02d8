//! TinyBERT's prediction-layer loss: soft cross-entropy against the teacher's logits.

use candle_core::{Tensor, D};

use crate::check;
use crate::error::Result;
use crate::ops::log_softmax_last_dim;

const LOSS: &str = "prediction_soft_ce";

/// How [`prediction_soft_ce`] reduces the `[N, C]` terms `−p log q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SoftCeReduction {
    /// Sum over classes, mean over the `N` rows: the cross-entropy of the paper.
    #[default]
    BatchMean,
    /// Mean over all `N × C` elements, as the TinyBERT reference code's
    /// `(-targets_prob * student_likelihood).mean()` (the batch mean divided by `C`).
    ElementMean,
}

/// `L = 1/N Σ_n −Σ_c softmax(t_n/T)_c log softmax(s_n/T)_c` (with
/// [`SoftCeReduction::BatchMean`]; `ElementMean` divides by `C` too), no `T²` factor.
///
/// Follows TinyBERT (Jiao et al. 2020): `soft_cross_entropy(student_logits / T,
/// teacher_logits / T)`, reference `T = 1`. `student_logits` and `teacher_logits` are
/// `[N, C]`. The teacher is a constant (detached).
pub fn prediction_soft_ce(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
    temperature: f64,
    reduction: SoftCeReduction,
) -> Result<Tensor> {
    check::dims(student_logits, 2, LOSS, "student logits", "[N, C]")?;
    check::same_shape(
        student_logits,
        teacher_logits,
        LOSS,
        "student logits",
        "teacher logits",
    )?;
    check::temperature(temperature, LOSS)?;
    let dtype = check::work_dtype(student_logits.dtype(), LOSS, "student logits")?;
    if student_logits.elem_count() == 0 {
        return check::zero_loss(student_logits, dtype);
    }
    let inv_t = 1.0 / temperature;
    let log_q = log_softmax_last_dim(&student_logits.to_dtype(dtype)?.affine(inv_t, 0.0)?)?;
    let t = check::teacher(
        teacher_logits,
        student_logits,
        dtype,
        LOSS,
        "teacher logits",
    )?;
    let p = log_softmax_last_dim(&t.affine(inv_t, 0.0)?)?.exp()?;
    let per_row = p.mul(&log_q)?.sum(D::Minus1)?.neg()?;
    let ce = per_row.mean_all()?;
    Ok(match reduction {
        SoftCeReduction::BatchMean => ce,
        SoftCeReduction::ElementMean => {
            ce.affine(1.0 / student_logits.dim(D::Minus1)? as f64, 0.0)?
        }
    })
}
