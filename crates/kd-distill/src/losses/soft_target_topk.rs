//! Soft-target loss from a teacher distribution stored as top-k (an offline teacher cache).

use std::sync::Arc;

use candle_core::{DType, Tensor, D};

use super::SoftTargetConfig;
use crate::check;
use crate::error::{Error, Result};
use crate::fused;
use crate::ops::{kl_pointwise, log_softmax_last_dim, shifted_exp_log_partition};
use crate::targets::TopKTargets;

const LOSS: &str = "soft_target_topk";

/// What the loss does with the teacher's probability mass outside its top-k ids (in settings:
/// `rest_bucket` or `renormalize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TailMode {
    /// `k + 1` buckets: the k ids, plus one "rest" bucket holding the teacher's tail mass
    /// `1 − Σ_topk p` and the student's mass outside those k ids. Needs the teacher's
    /// log-partition; with `k = V` the rest bucket is empty and the loss is the full KL.
    #[default]
    RestBucket,
    /// The teacher renormalised over its top-k, the student's softmax restricted to the same
    /// k ids; the tail is ignored (and the log-partition unused).
    #[serde(alias = "renormalise")]
    Renormalize,
}

/// KL between the teacher's top-k distribution and the student's at temperature `T`, averaged
/// over positions (KLDiv `batchmean`), times `T²` when `cfg.t2_scaling` (Hinton et al.,
/// DistilBERT). With `x = s / T`, `q = softmax(x)`, `S` the teacher's ids at a position and
/// `p_i = exp(z_i / T − log Z_T)`:
///
/// - [`TailMode::RestBucket`]: `Σ_{i∈S} p_i log(p_i / q_i) + p_r log(p_r / q_r)` with
///   `p_r = max(0, 1 − Σ_S p_i)` and `q_r = Σ_{v∉S} q_v` (DistillKit's "rest" bucket). With
///   `k = V` there is no rest bucket and this is exactly DistilBERT's
///   `KLDivLoss(batchmean)(log_softmax(s/T), softmax(t/T)) * T**2`.
/// - [`TailMode::Renormalize`]: `Σ_{i∈S} p̃_i log(p̃_i / q̃_i)` with `p̃ = softmax(z_S / T)`
///   and `q̃ = softmax(x_S)` (DistillKit's renormalised top-k).
///
/// Both are biased estimates of the full-distribution gradient for `k < V` (Anshumann et al.
/// 2025); `student_logits` is `[N, V]` at the same positions, in the same order, as `teacher`.
/// In RestBucket mode `cfg.temperature` must equal the temperature of the log-partition.
pub fn soft_target_topk(
    student_logits: &Tensor,
    teacher: &TopKTargets,
    tail: TailMode,
    cfg: &SoftTargetConfig,
) -> Result<Tensor> {
    let d = check::dims(student_logits, 2, LOSS, "student logits", "[N, V]")?;
    let (n, v) = (d[0], d[1]);
    let k = teacher.k();
    if n != teacher.positions() || k > v {
        return Err(Error::shape(
            LOSS,
            format!(
                "student logits shape {:?} do not fit teacher top-k ids {:?} (N must match, k <= V)",
                student_logits.dims(),
                teacher.ids.dims()
            ),
        ));
    }
    if let Some(max) = teacher.max_id.filter(|&m| m as usize >= v) {
        return Err(Error::invalid(
            LOSS,
            format!("teacher id {max} is outside the student vocabulary of {v}"),
        ));
    }
    check::temperature(cfg.temperature, LOSS)?;
    let t = cfg.temperature;
    if tail == TailMode::RestBucket && (t - teacher.temperature).abs() > 1e-6 * t {
        return Err(Error::invalid(
            LOSS,
            format!(
                "the loss temperature {t} differs from the temperature {} of the teacher's log-partition",
                teacher.temperature
            ),
        ));
    }
    let dtype = check::work_dtype(student_logits.dtype(), LOSS, "student logits")?;
    if n == 0 || k == 0 {
        return check::zero_loss(student_logits, dtype);
    }
    let x = student_logits.to_dtype(dtype)?;
    if tail == TailMode::RestBucket && kd_kernels::cpu::fast_path(&x) {
        let targets = teacher.rest_bucket_targets(k < v);
        let kl = fused::sparse_soft_ce_rows(&x, 1.0 / t, Arc::new(targets))?.sum_all()?;
        return Ok(kl.affine(cfg.scale() / n as f64, 0.0)?);
    }
    let device = x.device();
    let ids = teacher.ids.to_device(device)?;
    // Teacher side in f64: the tail mass 1 − Σ p is a difference of nearly equal numbers.
    let z = check::teacher(
        &teacher.logits,
        student_logits,
        DType::F64,
        LOSS,
        "teacher logits",
    )?
    .affine(1.0 / t, 0.0)?;
    let kl = match tail {
        TailMode::Renormalize => {
            let log_p = log_softmax_last_dim(&z)?;
            let p = log_p.exp()?;
            // Gather first: only the k columns are scaled and normalised.
            let log_q = log_softmax_last_dim(&x.gather(&ids, 1)?.affine(1.0 / t, 0.0)?)?;
            kl_pointwise(&p.to_dtype(dtype)?, &log_p.to_dtype(dtype)?, &log_q)?.sum_all()?
        }
        TailMode::RestBucket => {
            let log_z = check::teacher(
                &teacher.log_partition,
                student_logits,
                DType::F64,
                LOSS,
                "teacher log-partition",
            )?;
            let log_p = z.broadcast_sub(&log_z.unsqueeze(1)?)?;
            let p = log_p.exp()?;
            let (shifted, exp, log_total) = shifted_exp_log_partition(&x.affine(1.0 / t, 0.0)?)?;
            let log_q = shifted.gather(&ids, 1)?.broadcast_sub(&log_total)?;
            let top = kl_pointwise(&p.to_dtype(dtype)?, &log_p.to_dtype(dtype)?, &log_q)?;
            let mut kl = top.sum_all()?;
            if k < v {
                let p_rest = p.sum_keepdim(D::Minus1)?.affine(-1.0, 1.0)?.relu()?;
                let log_p_rest = p_rest.maximum(f64::MIN_POSITIVE)?.log()?.to_dtype(dtype)?;
                // 1 outside the top-k ids, 0 on them.
                let outside = Tensor::ones((n, v), dtype, device)?.scatter(
                    &ids,
                    &Tensor::zeros((n, k), dtype, device)?,
                    1,
                )?;
                let rest = exp.mul(&outside)?;
                let floor = if dtype == DType::F64 {
                    f64::MIN_POSITIVE
                } else {
                    f64::from(f32::MIN_POSITIVE)
                };
                let log_q_rest = rest
                    .sum_keepdim(D::Minus1)?
                    .maximum(floor)?
                    .log()?
                    .sub(&log_total)?;
                let tail = kl_pointwise(&p_rest.to_dtype(dtype)?, &log_p_rest, &log_q_rest)?;
                kl = (kl + tail.sum_all()?)?;
            }
            kl
        }
    };
    Ok(kl.affine(cfg.scale() / n as f64, 0.0)?)
}
