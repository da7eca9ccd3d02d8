//! Fused CPU kernels, forward and backward, for the vocabulary-wide losses on `f32`.
//!
//! Composed from candle ops, a soft-target loss runs some twenty `[N, V]` tensor ops forward
//! and more backward; for BERT's `V = 30522` that dominates a CPU training step. These kernels
//! compute each row's loss in two passes over the row (one exponential per element) and its
//! gradient in as many, accumulating in `f64`, in parallel over rows. Other devices and dtypes
//! use the compositions (see each loss).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use kd_kernels::cpu::{f32_input, f32_inputs, row_len};

/// Fills `e` with `exp(x·inv_t − m)` and returns `(m, Σ e, Σ_{v∉S} e)` (the last only when
/// `outside` marks the complement `S`), with `m = max(x)·inv_t`.
fn exp_row(x: &[f32], inv_t: f32, e: &mut [f32], outside: Option<&[bool]>) -> (f32, f64, f64) {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) * inv_t;
    let (mut total, mut rest) = (0f64, 0f64);
    for (i, (o, &v)) in e.iter_mut().zip(x).enumerate() {
        *o = (v * inv_t - m).exp();
        total += f64::from(*o);
        if outside.is_some_and(|f| f[i]) {
            rest += f64::from(*o);
        }
    }
    (m, total, rest)
}

/// Sparse soft targets per row: `width` (id, weight) pairs, and optionally a weight on the
/// rest bucket, the complement of the row's ids (rows with a rest weight have no padding).
#[derive(Debug)]
pub(crate) struct SparseTargets {
    /// Pairs per row.
    pub width: usize,
    /// Ids, `[N, width]`.
    pub ids: Vec<u32>,
    /// Weights, `[N, width]`.
    pub weights: Vec<f32>,
    /// Rest-bucket weight per row, `[N]`.
    pub rest: Option<Vec<f32>>,
    /// A constant added to each row's value in `f64` before rounding, `[N]` (the teacher's
    /// `Σ p log p`, turning the cross-entropy into the KL without cancellation in `f32`).
    pub row_offset: Option<Vec<f64>>,
}

impl SparseTargets {
    fn row(&self, r: usize) -> (&[u32], &[f32], f32) {
        let span = r * self.width..(r + 1) * self.width;
        let rest = self.rest.as_ref().map_or(0.0, |w| w[r]);
        (&self.ids[span.clone()], &self.weights[span], rest)
    }
}

/// Sets `flags` at `ids` to `value`. The flags are `true` outside the row's ids (the rest
/// bucket) while a row is processed and all `true` between rows.
fn mark(flags: &mut [bool], ids: &[u32], value: bool) {
    for &i in ids {
        flags[i as usize] = value;
    }
}

/// Per-row `c − Σ_j w_j log q(id_j) − w_r log q(rest)` with `q = softmax(x·inv_t)` and `c`
/// the row's offset (0 without): `[N]`. Ids must be `< V` (checked by the callers).
pub(crate) fn sparse_soft_ce_rows(
    x: &Tensor,
    inv_t: f64,
    targets: Arc<SparseTargets>,
) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SparseCe {
        targets,
        inv_t: inv_t as f32,
    })
}

struct SparseCe {
    targets: Arc<SparseTargets>,
    inv_t: f32,
}

const FLOOR: f64 = f32::MIN_POSITIVE as f64;

impl CustomOp1 for SparseCe {
    fn name(&self) -> &'static str {
        "kd-sparse-soft-ce"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_input(s, l, self.name())?;
        let v = row_len(l);
        let n = x.len() / v;
        let it = self.inv_t;
        let out: Vec<f32> = x
            .par_chunks(v)
            .enumerate()
            .map_init(
                || (vec![0f32; v], vec![true; v]),
                |(e, flags), (r, row)| {
                    let (ids, ws, w_rest) = self.targets.row(r);
                    let outside = (w_rest > 0.0).then(|| {
                        mark(flags, ids, false);
                        &flags[..]
                    });
                    let (m, total, rest) = exp_row(row, it, e, outside);
                    let lse = f64::from(m) + total.ln();
                    let mut ce = 0f64;
                    for (&id, &w) in ids.iter().zip(ws).filter(|(_, &w)| w != 0.0) {
                        ce -= f64::from(w) * (f64::from(row[id as usize] * it) - lse);
                    }
                    if w_rest > 0.0 {
                        mark(flags, ids, true);
                        let log_q_rest = rest.max(FLOOR).ln() + f64::from(m) - lse;
                        ce -= f64::from(w_rest) * log_q_rest;
                    }
                    let offset = self.targets.row_offset.as_ref().map_or(0.0, |o| o[r]);
                    (ce + offset) as f32
                },
            )
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = arg.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &SparseCeGrad {
                targets: self.targets.clone(),
                inv_t: self.inv_t,
            },
        )?;
        Ok(Some(grad))
    }
}

/// `dx_v = g·inv_t·((Σw + w_r) q_v − Σ_{j: id_j = v} w_j − w_r [v∉S] e_v / R)`.
struct SparseCeGrad {
    targets: Arc<SparseTargets>,
    inv_t: f32,
}

impl CustomOp2 for SparseCeGrad {
    fn name(&self) -> &'static str {
        "kd-sparse-soft-ce-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [x, g] = f32_inputs([(s1, l1), (s2, l2)], self.name())?;
        let v = row_len(l1);
        let it = self.inv_t;
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(v)
            .zip(x.par_chunks(v))
            .enumerate()
            .for_each_init(
                || vec![true; v],
                |flags, (r, (d, row))| {
                    let (ids, ws, w_rest) = self.targets.row(r);
                    let outside = (w_rest > 0.0).then(|| {
                        mark(flags, ids, false);
                        &flags[..]
                    });
                    let (_, total, rest) = exp_row(row, it, d, outside);
                    let scale = f64::from(g[r]) * f64::from(it);
                    let w_sum: f64 =
                        ws.iter().map(|&w| f64::from(w)).sum::<f64>() + f64::from(w_rest);
                    let a = (scale * w_sum / total) as f32;
                    let b = if w_rest > 0.0 && rest >= FLOOR {
                        (scale * f64::from(w_rest) / rest) as f32
                    } else {
                        0.0
                    };
                    for (i, o) in d.iter_mut().enumerate() {
                        let e = *o;
                        *o = a * e - if flags[i] { b * e } else { 0.0 };
                    }
                    if w_rest > 0.0 {
                        mark(flags, ids, true);
                    }
                    for (&id, &w) in ids.iter().zip(ws) {
                        d[id as usize] -= (scale * f64::from(w)) as f32;
                    }
                },
            );
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Per-row `KL(softmax(t·inv_t) ‖ softmax(x·inv_t))` of `[N, V]` student `x` and teacher `t`
/// (the teacher gets no gradient): `[N]`. Terms with `p = 0` count 0.
pub(crate) fn dense_kl_rows(x: &Tensor, teacher: &Tensor, inv_t: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op2(
        &teacher.contiguous()?,
        DenseKl {
            inv_t: inv_t as f32,
        },
    )
}

struct DenseKl {
    inv_t: f32,
}

impl CustomOp2 for DenseKl {
    fn name(&self) -> &'static str {
        "kd-dense-kl"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [x, t] = f32_inputs([(s1, l1), (s2, l2)], self.name())?;
        let v = row_len(l1);
        let it = self.inv_t;
        let out: Vec<f32> = x
            .par_chunks(v)
            .zip(t.par_chunks(v))
            .map_init(
                || vec![0f32; v],
                |e, (xr, tr)| {
                    // Student log-partition (e is scratch), then the teacher's exps in e.
                    let (ms, total_s, _) = exp_row(xr, it, e, None);
                    let lse_s = f64::from(ms) + total_s.ln();
                    let (mt, total_t, _) = exp_row(tr, it, e, None);
                    let lse_t = f64::from(mt) + total_t.ln();
                    let mut kl = 0f64;
                    for ((&ev, &xv), &tv) in e.iter().zip(xr).zip(tr) {
                        if ev > 0.0 {
                            let p = f64::from(ev) / total_t;
                            let log_p = f64::from(tv * it) - lse_t;
                            let log_q = f64::from(xv * it) - lse_s;
                            kl += p * (log_p - log_q);
                        }
                    }
                    kl as f32
                },
            )
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(x.len() / v)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        t: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = x.apply_op3_no_bwd(
            t,
            &grad_res.contiguous()?,
            &DenseKlGrad { inv_t: self.inv_t },
        )?;
        Ok((Some(grad), None))
    }
}

/// `dx_v = g·inv_t·(q_v − p_v)`.
struct DenseKlGrad {
    inv_t: f32,
}

impl CustomOp3 for DenseKlGrad {
    fn name(&self) -> &'static str {
        "kd-dense-kl-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [x, t, g] = f32_inputs([(s1, l1), (s2, l2), (s3, l3)], self.name())?;
        let v = row_len(l1);
        let it = self.inv_t;
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(v)
            .zip(x.par_chunks(v).zip(t.par_chunks(v)))
            .enumerate()
            .for_each_init(
                || vec![0f32; v],
                |e, (r, (d, (xr, tr)))| {
                    let (_, total_s, _) = exp_row(xr, it, d, None);
                    let (_, total_t, _) = exp_row(tr, it, e, None);
                    let scale = f64::from(g[r]) * f64::from(it);
                    let (a, b) = ((scale / total_s) as f32, (scale / total_t) as f32);
                    for (o, &ev) in d.iter_mut().zip(e.iter()) {
                        *o = a * *o - b * ev;
                    }
                },
            );
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}
