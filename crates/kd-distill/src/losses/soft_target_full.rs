//! Soft-target loss with the full teacher distribution (DistilBERT's `L_ce`, the online
//! reference for the cached variants).

use candle_core::Tensor;

use super::SoftTargetConfig;
use crate::check;
use crate::error::{Error, Result};
use crate::fused;
use crate::ops::{kl_pointwise, log_softmax_last_dim};

const LOSS: &str = "soft_target_full";

/// `KL(softmax(t/T) ‖ softmax(s/T))` averaged over positions, times `T²` when
/// `cfg.t2_scaling`:
///
/// `L = T² / N · Σ_n Σ_v p_nv (log p_nv − log q_nv)`, `p = softmax(t/T)`, `q = softmax(s/T)`.
///
/// Follows DistilBERT (Sanh et al. 2019; transformers `research_projects/distillation`):
/// `KLDivLoss(reduction="batchmean")(log_softmax(s/T), softmax(t/T)) * T**2`, with
/// `0 · log 0 = 0` as torch's `KLDivLoss`. `student_logits` and `teacher_logits` are `[N, V]`
/// rows at the distilled positions (masked positions, or every real token as the reference's
/// default). Zero rows give a zero loss. The teacher is a constant (detached).
pub fn soft_target_full(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
    cfg: &SoftTargetConfig,
) -> Result<Tensor> {
    let (n, v) = dims2(student_logits, "student logits")?;
    dims2(teacher_logits, "teacher logits")?;
    check::same_shape(
        student_logits,
        teacher_logits,
        LOSS,
        "student logits",
        "teacher logits",
    )?;
    check::temperature(cfg.temperature, LOSS)?;
    let dtype = check::work_dtype(student_logits.dtype(), LOSS, "student logits")?;
    if n == 0 {
        return check::zero_loss(student_logits, dtype);
    }
    if v == 0 {
        return Err(Error::shape(
            LOSS,
            format!(
                "student logits shape {:?} has an empty vocabulary",
                student_logits.dims()
            ),
        ));
    }
    let inv_t = 1.0 / cfg.temperature;
    let x = student_logits.to_dtype(dtype)?;
    let t = check::teacher(
        teacher_logits,
        student_logits,
        dtype,
        LOSS,
        "teacher logits",
    )?;
    let kl = if kd_kernels::cpu::fast_path(&x) {
        fused::dense_kl_rows(&x, &t, inv_t)?.sum_all()?
    } else {
        let log_q = log_softmax_last_dim(&x.affine(inv_t, 0.0)?)?;
        let log_p = log_softmax_last_dim(&t.affine(inv_t, 0.0)?)?;
        kl_pointwise(&log_p.exp()?, &log_p, &log_q)?.sum_all()?
    };
    Ok(kl.affine(cfg.scale() / n as f64, 0.0)?)
}

fn dims2(t: &Tensor, what: &str) -> Result<(usize, usize)> {
    let d = check::dims(t, 2, LOSS, what, "[N, V]")?;
    Ok((d[0], d[1]))
}
