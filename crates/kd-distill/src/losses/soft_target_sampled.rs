//! Soft-target loss from tokens sampled from the teacher (an unbiased sparse estimator).

use candle_core::Tensor;

use super::SoftTargetConfig;
use crate::check;
use crate::error::{Error, Result};
use crate::fused;
use crate::ops::shifted_log_partition;
use crate::targets::SampledTargets;

const LOSS: &str = "soft_target_sampled";

/// The sampled soft-target loss (Anshumann et al. 2025, "Sparse Logit Sampling"), averaged
/// over positions, times `T²` when `cfg.t2_scaling`:
///
/// `L = T² / N · Σ_m −(1/K_m) Σ_j c_mj log q_T(id_mj)`, `q_T = softmax(s / T)`.
///
/// With the draws taken from the teacher's `p_T`, its expectation is the cross-entropy
/// `T² · mean_m H(p_T, q_T) = T² · mean_m (KL(p_T ‖ q_T) + H(p_T))`: the teacher entropy is a
/// constant for the student, so the gradient is an unbiased estimate of the full soft-target
/// gradient of [`soft_target_full`](super::soft_target_full::soft_target_full), unlike top-k
/// (the value itself is larger than the KL by the entropy term). `student_logits` is `[N, V]`
/// at the same positions, in the same order, as `targets`; `cfg.temperature` must be the
/// temperature the tokens were drawn at.
pub fn soft_target_sampled(
    student_logits: &Tensor,
    targets: &SampledTargets,
    cfg: &SoftTargetConfig,
) -> Result<Tensor> {
    let d = check::dims(student_logits, 2, LOSS, "student logits", "[N, V]")?;
    let (n, v) = (d[0], d[1]);
    if n != targets.positions() {
        return Err(Error::shape(
            LOSS,
            format!(
                "student logits shape {:?} do not match sampled targets at {} positions ([N, J] = {:?})",
                student_logits.dims(),
                targets.positions(),
                targets.ids.dims()
            ),
        ));
    }
    if let Some(max) = targets.max_id.filter(|&m| m as usize >= v) {
        return Err(Error::invalid(
            LOSS,
            format!("sampled id {max} is outside the student vocabulary of {v}"),
        ));
    }
    check::temperature(cfg.temperature, LOSS)?;
    let dtype = check::work_dtype(student_logits.dtype(), LOSS, "student logits")?;
    if n == 0 {
        return check::zero_loss(student_logits, dtype);
    }
    let x = student_logits.to_dtype(dtype)?;
    let inv_t = 1.0 / cfg.temperature;
    let ce = if kd_kernels::cpu::fast_path(&x) {
        fused::sparse_soft_ce_rows(&x, inv_t, targets.host.clone())?.sum_all()?
    } else {
        let device = x.device();
        let (shifted, log_total) = shifted_log_partition(&x.affine(inv_t, 0.0)?)?;
        let log_q = shifted
            .gather(&targets.ids.to_device(device)?, 1)?
            .broadcast_sub(&log_total)?;
        let w = targets.weights.to_dtype(dtype)?.to_device(device)?;
        log_q.mul(&w)?.sum_all()?.neg()?
    };
    Ok(ce.affine(cfg.scale() / n as f64, 0.0)?)
}
