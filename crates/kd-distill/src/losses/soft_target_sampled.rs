//! Soft-target loss from tokens sampled from the teacher (an unbiased sparse estimator).

use candle_core::{Device, Tensor};

use super::SoftTargetConfig;
use crate::check;
use crate::error::{Error, Result};
use crate::ops::shifted_log_partition;

const LOSS: &str = "soft_target_sampled";

/// Tokens drawn with replacement from the teacher's softmax at temperature `T`, at `N`
/// positions: position `m` owns `ids[offsets[m]..offsets[m + 1]]` (usually distinct) and the
/// matching `counts`, which sum to that position's number of draws `K_m` (the cache's
/// `Sampled` layout).
///
/// Stored as `[N, J]` tensors (`J` the most ids at one position) of ids and weights
/// `c_j / K_m`, padded with id 0 and weight 0.
#[derive(Debug, Clone)]
pub struct SampledTargets {
    ids: Tensor,
    weights: Tensor,
    max_id: Option<u32>,
}

impl SampledTargets {
    /// Checks and packs the flattened draws: `offsets` has `N + 1` non-decreasing entries
    /// starting at 0 and ending at `ids.len() == counts.len()`; every position needs at least
    /// one draw. Counts can be any unsigned type (`u16` in the cache).
    pub fn from_slices<C: Copy + Into<u32>>(
        offsets: &[u32],
        ids: &[u32],
        counts: &[C],
        device: &Device,
    ) -> Result<Self> {
        let bad = |msg: String| Err(Error::shape(LOSS, msg));
        if offsets.first() != Some(&0) || offsets.windows(2).any(|w| w[0] > w[1]) {
            return bad(format!(
                "offsets must start at 0 and not decrease, got {offsets:?}"
            ));
        }
        let end = *offsets.last().unwrap_or(&0) as usize;
        if end != ids.len() || ids.len() != counts.len() {
            return bad(format!(
                "offsets end at {end} but there are {} ids and {} counts",
                ids.len(),
                counts.len()
            ));
        }
        let n = offsets.len() - 1;
        let width = offsets
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0);
        let mut packed_ids = vec![0u32; n * width];
        let mut weights = vec![0f32; n * width];
        for (m, w) in offsets.windows(2).enumerate() {
            let (a, b) = (w[0] as usize, w[1] as usize);
            let total: u64 = counts[a..b].iter().map(|&c| u64::from(c.into())).sum();
            if total == 0 {
                return Err(Error::invalid(
                    LOSS,
                    format!("position {m} has no sampled tokens"),
                ));
            }
            for (j, i) in (a..b).enumerate() {
                packed_ids[m * width + j] = ids[i];
                weights[m * width + j] = (f64::from(counts[i].into()) / total as f64) as f32;
            }
        }
        Ok(SampledTargets {
            ids: Tensor::from_vec(packed_ids, (n, width), device)?,
            weights: Tensor::from_vec(weights, (n, width), device)?,
            max_id: ids.iter().copied().max(),
        })
    }

    /// Number of positions `N`.
    pub fn positions(&self) -> usize {
        self.ids.dims()[0]
    }

    /// Padded ids, `[N, J]` `u32`.
    pub fn ids(&self) -> &Tensor {
        &self.ids
    }

    /// Weights `c_j / K_m`, `[N, J]` `f32`, 0 on padding.
    pub fn weights(&self) -> &Tensor {
        &self.weights
    }
}

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
    let device = student_logits.device();
    let x = student_logits
        .to_dtype(dtype)?
        .affine(1.0 / cfg.temperature, 0.0)?;
    let (shifted, log_total) = shifted_log_partition(&x)?;
    let log_q = shifted
        .gather(&targets.ids.to_device(device)?, 1)?
        .broadcast_sub(&log_total)?;
    let w = targets.weights.to_dtype(dtype)?.to_device(device)?;
    let ce = log_q.mul(&w)?.sum_all()?;
    Ok(ce.affine(-cfg.scale() / n as f64, 0.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn packs_ragged_rows() {
        let t = SampledTargets::from_slices(&[0, 2, 3], &[4, 7, 1], &[3u16, 1, 4], &Device::Cpu)
            .unwrap();
        assert_eq!(t.ids().to_vec2::<u32>().unwrap(), [[4, 7], [1, 0]]);
        let w = t.weights().to_dtype(DType::F64).unwrap();
        assert_eq!(w.to_vec2::<f64>().unwrap(), [[0.75, 0.25], [1.0, 0.0]]);
    }
}
