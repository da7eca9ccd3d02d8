//! Mean squared error between student and teacher logits.

use candle_core::Tensor;

use crate::check;
use crate::error::Result;

const LOSS: &str = "logit_mse";

/// `L = mean((s − t)²)` over every element of the logits (any shape, the two shapes equal).
///
/// Follows Tang et al. 2019 (BERT to a BiLSTM: `MSELoss` between student and teacher logits,
/// not probabilities) and TinyBERT's regression prediction loss (`MSELoss`). The teacher is a
/// constant (detached).
pub fn logit_mse(student_logits: &Tensor, teacher_logits: &Tensor) -> Result<Tensor> {
    mse(
        student_logits,
        teacher_logits,
        LOSS,
        "student logits",
        "teacher logits",
    )
}

/// `mean((s − t)²)` after the shape check, shared with the other MSE losses.
pub(crate) fn mse(
    student: &Tensor,
    teacher: &Tensor,
    loss: &'static str,
    s_name: &str,
    t_name: &str,
) -> Result<Tensor> {
    check::same_shape(student, teacher, loss, s_name, t_name)?;
    let dtype = check::work_dtype(student.dtype(), loss, s_name)?;
    if student.elem_count() == 0 {
        return check::zero_loss(student, dtype);
    }
    let t = check::teacher(teacher, student, dtype, loss, t_name)?;
    Ok(student.to_dtype(dtype)?.sub(&t)?.sqr()?.mean_all()?)
}
