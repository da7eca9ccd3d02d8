//! Teacher targets read from a cache, checked once and packed for the soft-target losses:
//! [`TopKTargets`] for [`soft_target_topk`](crate::soft_target_topk) and [`SampledTargets`]
//! for [`soft_target_sampled`](crate::soft_target_sampled).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::check;
use crate::error::{Error, Result};
use crate::fused::SparseTargets;

const TOPK: &str = "TopKTargets";
const SAMPLED: &str = "SampledTargets";

/// The teacher's top-k at `N` positions: ids, their logits, and the log-partition over the
/// full vocabulary at the loss temperature.
///
/// Logits may be in any per-position frame (`z − c_n`, e.g. relative to the row maximum as the
/// cache stores them) as long as the log-partition `log Σ_v exp(z_v / T)` uses the same frame.
/// Teacher probabilities are `p_i = exp(z_i / T − log_partition)`.
#[derive(Debug, Clone)]
pub struct TopKTargets {
    pub(crate) ids: Tensor,
    pub(crate) logits: Tensor,
    pub(crate) log_partition: Tensor,
    pub(crate) temperature: f64,
    pub(crate) max_id: Option<u32>,
    host: Host,
}

/// Host copies of the targets for the fused CPU kernel.
#[derive(Debug, Clone)]
struct Host {
    ids: Vec<u32>,
    logits: Vec<f64>,
    log_partition: Vec<f64>,
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
        let d = check::dims(ids, 2, TOPK, "teacher top-k ids", "[N, k]")?;
        let (n, k) = (d[0], d[1]);
        check::dims(logits, 2, TOPK, "teacher top-k logits", "[N, k]")?;
        check::same_shape(
            ids,
            logits,
            TOPK,
            "teacher top-k ids",
            "teacher top-k logits",
        )?;
        let lz = check::dims(log_partition, 1, TOPK, "teacher log-partition", "[N]")?;
        if lz[0] != n {
            return Err(Error::shape(
                TOPK,
                format!(
                    "teacher log-partition shape {:?} does not match {n} positions of ids {:?}",
                    log_partition.dims(),
                    ids.dims()
                ),
            ));
        }
        check::temperature(temperature, TOPK)?;
        let raw = check::int_values(ids, TOPK, "teacher top-k ids")?;
        let mut max_id = None;
        let mut host_ids = Vec::with_capacity(raw.len());
        let mut row = Vec::with_capacity(k);
        for (r, chunk) in raw.chunks(k.max(1)).enumerate() {
            row.clear();
            for &id in chunk {
                let id = u32::try_from(id).map_err(|_| {
                    Error::invalid(TOPK, format!("position {r}: teacher id {id} is not a u32"))
                })?;
                row.push(id);
                host_ids.push(id);
                max_id = max_id.max(Some(id));
            }
            row.sort_unstable();
            if let Some(w) = row.windows(2).find(|w| w[0] == w[1]) {
                return Err(Error::invalid(
                    TOPK,
                    format!(
                        "position {r}: teacher id {} appears twice in the top-k",
                        w[0]
                    ),
                ));
            }
        }
        let finite = |t: &Tensor, what: &str| -> Result<Vec<f64>> {
            let values = check::float_values(t, TOPK, what)?;
            match values.iter().find(|v| !v.is_finite()) {
                Some(v) => Err(Error::invalid(TOPK, format!("non-finite {what} {v}"))),
                None => Ok(values),
            }
        };
        let host = Host {
            ids: host_ids,
            logits: finite(logits, "teacher top-k logit")?,
            log_partition: finite(log_partition, "teacher log-partition")?,
        };
        Ok(TopKTargets {
            ids: ids.to_dtype(DType::U32)?,
            logits: logits.detach(),
            log_partition: log_partition.detach(),
            temperature,
            max_id,
            host,
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
        if k == 0 || !ids.len().is_multiple_of(k) || logits.len() != ids.len() {
            return Err(Error::shape(
                TOPK,
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
                    TOPK,
                    format!("temperature {temperature} is not stored (stored: {temperatures:?})"),
                )
            })?;
        let width = temperatures.len();
        if !log_partitions.len().is_multiple_of(width) {
            return Err(Error::shape(
                TOPK,
                format!(
                    "{} log-partitions do not form [N, {width}] rows",
                    log_partitions.len()
                ),
            ));
        }
        let column: Vec<f32> = log_partitions.chunks_exact(width).map(|r| r[col]).collect();
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

    /// The fused kernel's targets for the rest-bucket KL: the teacher's top-k probabilities, its
    /// tail mass, and per row `Σ_i p log p + p_r log p_r` so that the kernel returns the KL.
    pub(crate) fn rest_bucket_targets(&self, with_rest: bool) -> SparseTargets {
        let (host, k, t) = (&self.host, self.k(), self.temperature);
        let xlogx = |p: f32| {
            let p = f64::from(p);
            if p > 0.0 {
                p * p.ln()
            } else {
                0.0
            }
        };
        let n = host.log_partition.len();
        let (mut weights, mut rest, mut offsets) = (
            Vec::with_capacity(n * k),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (z, &log_z) in host.logits.chunks(k).zip(&host.log_partition) {
            // Offsets use the f32 weights the kernel sees: the KL of one distribution.
            let (mut sum, mut offset) = (0.0, 0.0);
            for &zi in z {
                let p = (zi / t - log_z).exp();
                sum += p;
                weights.push(p as f32);
                offset += xlogx(p as f32);
            }
            let p_rest = if with_rest {
                (1.0 - sum).max(0.0) as f32
            } else {
                0.0
            };
            rest.push(p_rest);
            offsets.push(offset + xlogx(p_rest));
        }
        SparseTargets {
            width: k,
            ids: host.ids.clone(),
            weights,
            rest: with_rest.then_some(rest),
            row_offset: Some(offsets),
        }
    }
}

/// Tokens drawn with replacement from the teacher's softmax at temperature `T`, at `N`
/// positions: position `m` owns `ids[offsets[m]..offsets[m + 1]]` (usually distinct) and the
/// matching `counts`, which sum to that position's number of draws `K_m` (the cache's
/// `Sampled` layout).
///
/// Stored as `[N, J]` tensors (`J` the most ids at one position) of ids and weights
/// `c_j / K_m`, padded with id 0 and weight 0.
#[derive(Debug, Clone)]
pub struct SampledTargets {
    pub(crate) ids: Tensor,
    pub(crate) weights: Tensor,
    pub(crate) max_id: Option<u32>,
    pub(crate) host: Arc<SparseTargets>,
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
        let bad = |msg: String| Err(Error::shape(SAMPLED, msg));
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
                    SAMPLED,
                    format!("position {m} has no sampled tokens"),
                ));
            }
            for (j, i) in (a..b).enumerate() {
                packed_ids[m * width + j] = ids[i];
                weights[m * width + j] = (f64::from(counts[i].into()) / total as f64) as f32;
            }
        }
        Ok(SampledTargets {
            ids: Tensor::from_slice(&packed_ids, (n, width), device)?,
            weights: Tensor::from_slice(&weights, (n, width), device)?,
            max_id: ids.iter().copied().max(),
            host: Arc::new(SparseTargets {
                width,
                ids: packed_ids,
                weights,
                rest: None,
                row_offset: None,
            }),
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
