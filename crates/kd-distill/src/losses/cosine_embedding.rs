//! DistilBERT's cosine loss between student and teacher hidden states.

use candle_core::{Tensor, D};

use crate::check;
use crate::error::{Error, Result};

const LOSS: &str = "cosine_embedding";

/// torch's `CosineEmbeddingLoss` epsilon added to each squared norm.
const EPS: f64 = 1e-12;

/// `L = 1/R Σ_r (1 − cos(s_r, t_r))` over the `R` real tokens (`attention_mask` non-zero) of
/// `student` and `teacher` hidden states `[B, L, H]`, with
/// `cos(a, b) = a·b / √((|a|² + 1e-12)(|b|² + 1e-12))`.
///
/// Follows DistilBERT (Sanh et al. 2019): the last hidden states' rows are selected by the
/// attention mask (`masked_select`), then `nn.CosineEmbeddingLoss` with target 1 and mean
/// reduction. Student and teacher need the same hidden size: project the student first
/// otherwise (an error says so). `attention_mask` is `[B, L]`, any dtype; it is read to the
/// host. No real token gives a zero loss. The teacher is a constant (detached).
pub fn cosine_embedding(
    student: &Tensor,
    teacher: &Tensor,
    attention_mask: &Tensor,
) -> Result<Tensor> {
    let s = check::dims(student, 3, LOSS, "student hidden states", "[B, L, H]")?;
    let t = check::dims(teacher, 3, LOSS, "teacher hidden states", "[B, L, H]")?;
    if s[2] != t[2] {
        return Err(Error::shape(
            LOSS,
            format!(
                "student hidden size {} differs from teacher hidden size {} (shapes {s:?} vs \
                 {t:?}); a projection of the student states is needed",
                s[2], t[2]
            ),
        ));
    }
    check::same_shape(
        student,
        teacher,
        LOSS,
        "student hidden states",
        "teacher hidden states",
    )?;
    let (b, l, h) = (s[0], s[1], s[2]);
    let m = check::dims(attention_mask, 2, LOSS, "attention mask", "[B, L]")?;
    if m != [b, l] {
        return Err(Error::shape(
            LOSS,
            format!("attention mask shape {m:?} does not match hidden states shape {s:?}"),
        ));
    }
    let dtype = check::work_dtype(student.dtype(), LOSS, "student hidden states")?;
    let keep: Vec<u32> = check::float_values(
        &attention_mask.to_dtype(candle_core::DType::F32)?,
        LOSS,
        "attention mask",
    )?
    .iter()
    .enumerate()
    .filter(|(_, &v)| v != 0.0)
    .map(|(i, _)| i as u32)
    .collect();
    if keep.is_empty() || h == 0 {
        return check::zero_loss(student, dtype);
    }
    let rows = keep.len();
    let keep = Tensor::from_vec(keep, rows, student.device())?;
    let s = student
        .to_dtype(dtype)?
        .reshape((b * l, h))?
        .index_select(&keep, 0)?;
    let t = check::teacher(teacher, student, dtype, LOSS, "teacher hidden states")?
        .reshape((b * l, h))?
        .index_select(&keep, 0)?;
    let dot = s.mul(&t)?.sum(D::Minus1)?;
    let s2 = s.sqr()?.sum(D::Minus1)?.affine(1.0, EPS)?;
    let t2 = t.sqr()?.sum(D::Minus1)?.affine(1.0, EPS)?;
    let cos = dot.div(&s2.mul(&t2)?.sqrt()?)?;
    Ok(cos.affine(-1.0, 1.0)?.mean_all()?)
}
