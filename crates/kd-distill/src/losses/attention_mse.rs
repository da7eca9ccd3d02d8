//! TinyBERT's attention loss on pre-softmax attention scores.

use candle_core::Tensor;

use crate::check;
use crate::error::{Error, Result};

const LOSS: &str = "attention_mse";

/// Scores at or below this value (the additive padding mask, `-10000`) are set to 0 on both
/// sides before the MSE, as the TinyBERT reference does.
pub const ATTENTION_SCORE_FLOOR: f64 = -100.0;

/// `L = mean((ŝ − t̂)²)` over the whole `[B, H, L, L]` tensor (padding included), where
/// `x̂ = 0 if x <= -100 else x`, applied to the student scores `s` and the teacher scores `t`
/// independently.
///
/// Follows the TinyBERT reference (huawei-noah `task_distill.py` / `general_distill.py`):
/// `torch.where(x <= -1e2, zeros, x)` on both attention-score tensors (`QKᵀ/√d + mask`), then
/// `MSELoss`; sum the result over mapped layers. Student and teacher must have the same number
/// of heads (an error names both otherwise). No gradient flows to student scores that were
/// zeroed. The teacher is a constant (detached).
pub fn attention_mse(student_scores: &Tensor, teacher_scores: &Tensor) -> Result<Tensor> {
    let s = check::dims(student_scores, 4, LOSS, "student scores", "[B, H, L, L]")?;
    let t = check::dims(teacher_scores, 4, LOSS, "teacher scores", "[B, H, L, L]")?;
    if s[1] != t[1] {
        return Err(Error::shape(
            LOSS,
            format!(
                "the student has {} attention heads and the teacher {} (shapes {s:?} vs {t:?}); \
                 the attention loss needs equal head counts",
                s[1], t[1]
            ),
        ));
    }
    check::same_shape(
        student_scores,
        teacher_scores,
        LOSS,
        "student scores",
        "teacher scores",
    )?;
    let dtype = check::work_dtype(student_scores.dtype(), LOSS, "student scores")?;
    if student_scores.elem_count() == 0 {
        return check::zero_loss(student_scores, dtype);
    }
    let floor = |x: &Tensor| -> Result<Tensor> {
        Ok(x.le(ATTENTION_SCORE_FLOOR)?
            .where_cond(&x.zeros_like()?, x)?)
    };
    let s = floor(&student_scores.to_dtype(dtype)?)?;
    let t = floor(&check::teacher(
        teacher_scores,
        student_scores,
        dtype,
        LOSS,
        "teacher scores",
    )?)?;
    Ok(s.sub(&t)?.sqr()?.mean_all()?)
}
