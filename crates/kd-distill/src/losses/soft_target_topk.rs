//! Soft-target loss from a teacher distribution stored as top-k (an offline teacher cache).

use candle_core::{DType, Device, Tensor, D};

use super::SoftTargetConfig;
use crate::check;
use crate::error::{Error, Result};
use crate::ops::{kl_pointwise, log_softmax_last_dim, shifted_log_partition};

const LOSS: &str = "soft_target_topk";

/// What the loss does with the teacher's probability mass outside its top-k ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TailMode {
    /// `k + 1` buckets: the k ids, plus one "rest" bucket holding the teacher's tail mass
    /// `1 − Σ_topk p` and the student's mass outside those k ids. Needs the teacher's
    /// log-partition; with `k = V` the rest bucket is empty and the loss is the full KL.
    #[default]
    RestBucket,
    /// The teacher renormalised over its top-k, the student's softmax restricted to the same
    /// k ids; the tail is ignored (and the log-partition unused).
    Renormalize,
}

/// The teacher's top-k at `N` positions: ids, their logits, and the log-partition over the
/// full vocabulary at the loss temperature.
///
/// Logits may be in any per-position frame (`z − c_n`, e.g. relative to the row maximum as the
/// cache stores them) as long as the log-partition `log Σ_v exp(z_v / T)` uses the same frame.
/// Teacher probabilities are `p_i = exp(z_i / T − log_partition)`.
#[derive(Debug, Clone)]
pub struct TopKTargets {
    ids: Tensor,
    logits: Tensor,
    log_partition: Tensor,
    temperature: f64,
    max_id: Option<u32>,
}

impl TopKTargets {
    /// Checks and wraps tensors: `ids` `[N, k]` (integer; distinct within a row), `logits`
    /// `[N, k]` (float), `log_partition` `[N]` (float, at `temperature`). The ids and values
    /// are read once to the host to check them.
    pub fn new(
        ids: &Tensor,
        logits: &Tensor,
        log_partition: &Tensor,
        temperature: f64,
    ) -> Result<Self> {
        let d = check::dims(ids, 2, LOSS, "teacher top-k ids", "[N, k]")?;
        let (n, k) = (d[0], d[1]);
        check::dims(logits, 2, LOSS, "teacher top-k logits", "[N, k]")?;
        check::same_shape(ids, logits, LOSS, "teacher top-k ids", "teacher top-k logits")?;
        let lz = check::dims(log_partition, 1, LOSS, "teacher log-partition", "[N]")?;
        if lz[0] != n {
            return Err(Error::shape(
                LOSS,
                format!(
                    "teacher log-partition shape {:?} does not match {n} positions of ids {:?}",
                    log_partition.dims(),
                    ids.dims()
                ),
            ));
        }
        check::temperature(temperature, LOSS)?;
        let raw = check::int_values(ids, LOSS, "teacher top-k ids")?;
        let mut max_id = None;
        let mut row = Vec::with_capacity(k);
        for (r, chunk) in raw.chunks(k.max(1)).enumerate() {
            row.clear();
            for &id in chunk {
                let id = u32::try_from(id).map_err(|_| {
                    Error::invalid(LOSS, format!("position {r}: teacher id {id} is not a u32"))
                })?;
                row.push(id);
                max_id = max_id.max(Some(id));
            }
            row.sort_unstable();
            if let Some(w) = row.windows(2).find(|w| w[0] == w[1]) {
                return Err(Error::invalid(
                    LOSS,
                    format!("position {r}: teacher id {} appears twice in the top-k", w[0]),
                ));
            }
        }
        let finite = |t: &Tensor, what: &str| -> Result<()> {
            let values = check::float_values(t, LOSS, what)?;
            match values.iter().find(|v| !v.is_finite()) {
                Some(v) => Err(Error::invalid(LOSS, format!("non-finite {what} {v}"))),
                None => Ok(()),
            }
        };
        finite(logits, "teacher top-k logit")?;
        finite(log_partition, "teacher log-partition")?;
        Ok(TopKTargets {
            ids: ids.to_dtype(DType::U32)?,
            logits: logits.detach(),
            log_partition: log_partition.detach(),
            temperature,
            max_id,
        })
    }

    /// From row-major host slices: `ids` and `logits` `[N, k]`, `log_partition` `[N]` at
    /// `temperature`.
    pub fn from_slices(
        ids: &[u32],
        logits: &[f32],
        log_partition: &[f32],
        k: usize,
        temperature: f64,
        device: &Device,
    ) -> Result<Self> {
        if k == 0 || ids.len() % k != 0 || logits.len() != ids.len() {
            return Err(Error::shape(
                LOSS,
                format!(
                    "{} ids and {} logits do not form [N, {k}] rows",
                    ids.len(),
                    logits.len()
                ),
            ));
        }
        let n = ids.len() / k;
        Self::new(
            &Tensor::from_slice(ids, (n, k), device)?,
            &Tensor::from_slice(logits, (n, k), device)?,
            &Tensor::from_slice(log_partition, log_partition.len(), device)?,
            temperature,
        )
    }

    /// From the layout of cache records (`schemas/cache-v1.md`): `ids` and `logits` `[N, k]`
    /// and `log_partitions` `[N, n_temps]` holding one column per entry of `temperatures`;
    /// picks the column of `temperature` (which must be stored exactly). Records of a batch
    /// can be concatenated row-wise before the call.
    pub fn from_cache_layout(
        ids: &[u32],
        logits: &[f32],
        log_partitions: &[f32],
        temperatures: &[f32],
        temperature: f32,
        k: usize,
        device: &Device,
    ) -> Result<Self> {
        let col = temperatures
            .iter()
            .position(|&t| t == temperature)
            .ok_or_else(|| {
                Error::invalid(
                    LOSS,
                    format!("temperature {temperature} is not stored (stored: {temperatures:?})"),
                )
            })?;
        let width = temperatures.len();
        if log_partitions.len() % width != 0 {
            return Err(Error::shape(
                LOSS,
                format!(
                    "{} log-partitions do not form [N, {width}] rows",
                    log_partitions.len()
                ),
            ));
        }
        let column: Vec<f32> = log_partitions
            .chunks_exact(width)
            .map(|r| r[col])
            .collect();
        Self::from_slices(ids, logits, &column, k, f64::from(temperature), device)
    }

    /// Number of positions `N`.
    pub fn positions(&self) -> usize {
        self.ids.dims()[0]
    }

    /// Number of ids per position `k`.
    pub fn k(&self) -> usize {
        self.ids.dims()[1]
    }

    /// The temperature the log-partition belongs to.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// Ids, `[N, k]` `u32`.
    pub fn ids(&self) -> &Tensor {
        &self.ids
    }

    /// Logits of the ids, `[N, k]`.
    pub fn logits(&self) -> &Tensor {
        &self.logits
    }

    /// Log-partition per position, `[N]`.
    pub fn log_partition(&self) -> &Tensor {
        &self.log_partition
    }
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
    let device = student_logits.device();
    let x = student_logits.to_dtype(dtype)?.affine(1.0 / t, 0.0)?;
    let ids = teacher.ids.to_device(device)?;
    // Teacher side in f64: the tail mass 1 − Σ p is a difference of nearly equal numbers.
    let z = check::teacher(&teacher.logits, student_logits, DType::F64, LOSS, "teacher logits")?
        .affine(1.0 / t, 0.0)?;
    let kl = match tail {
        TailMode::Renormalize => {
            let log_p = log_softmax_last_dim(&z)?;
            let p = log_p.exp()?;
            let log_q = log_softmax_last_dim(&x.gather(&ids, 1)?)?;
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
            let (shifted, log_total) = shifted_log_partition(&x)?;
            let log_q = shifted.gather(&ids, 1)?.broadcast_sub(&log_total)?;
            let top = kl_pointwise(&p.to_dtype(dtype)?, &log_p.to_dtype(dtype)?, &log_q)?;
            let mut kl = top.sum_all()?;
            if k < v {
                let p_rest = p.sum_keepdim(D::Minus1)?.affine(-1.0, 1.0)?.relu()?;
                let log_p_rest = p_rest.maximum(f64::MIN_POSITIVE)?.log()?.to_dtype(dtype)?;
                let in_top = Tensor::zeros((n, v), dtype, device)?.scatter_add(
                    &ids,
                    &Tensor::ones((n, k), dtype, device)?,
                    1,
                )?;
                let rest = shifted.exp()?.mul(&in_top.affine(-1.0, 1.0)?)?;
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
