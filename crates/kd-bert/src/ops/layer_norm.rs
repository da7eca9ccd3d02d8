//! LayerNorm over the last dimension with a fused forward and backward.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use kd_kernels::cpu::{f32_inputs, fast_path};
use rayon::prelude::*;

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension; differentiable in
/// all three arguments on every device.
pub fn layer_norm(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if fast_path(xs) && fast_path(weight) && fast_path(bias) {
        xs.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            LayerNorm { eps: eps as f32 },
        )
    } else {
        composed(xs, weight, bias, eps)
    }
}

fn composed(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = xs.mean_keepdim(D::Minus1)?;
    let centered = xs.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(weight)?.broadcast_add(bias)
}

/// Row statistics: (mean, 1/std).
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "kd-layer-norm"
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
        let [x, w, b] = f32_inputs([(s1, l1), (s2, l2), (s3, l3)], self.name())?;
        let n = w.len();
        if n == 0 || x.len() % n != 0 || b.len() != n {
            candle_core::bail!(
                "{}: weight/bias do not match the last dimension",
                self.name()
            )
        }
        let mut dst = vec![0f32; x.len()];
        dst.par_chunks_mut(n)
            .zip(x.par_chunks(n))
            .for_each(|(d, x)| {
                let (mean, rstd) = row_stats(x, self.eps);
                for i in 0..n {
                    d[i] = (x[i] - mean) * rstd * w[i] + b[i];
                }
            });
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = w.elem_count();
        let rows = x.elem_count() / n;
        // One fused pass returns [rows + 2, n]: dx rows, then dweight, then dbias.
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &w.contiguous()?,
            &grad.contiguous()?,
            &LayerNormGrad { eps: self.eps },
        )?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = packed.narrow(0, rows, 1)?.reshape(w.shape())?;
        let db = packed.narrow(0, rows + 1, 1)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

struct LayerNormGrad {
    eps: f32,
}

/// Rows per parallel block when reducing the weight and bias gradients.
const BLOCK_ROWS: usize = 64;

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "kd-layer-norm-grad"
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
        let [x, w, g] = f32_inputs([(s1, l1), (s2, l2), (s3, l3)], self.name())?;
        let n = w.len();
        let rows = x.len() / n;
        let mut out = vec![0f32; (rows + 2) * n];
        let (dx, tail) = out.split_at_mut(rows * n);
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(BLOCK_ROWS * n)
            .zip(
                x.par_chunks(BLOCK_ROWS * n)
                    .zip(g.par_chunks(BLOCK_ROWS * n)),
            )
            .map(|(dx, (x, g))| {
                let mut acc = vec![0f32; 2 * n];
                for ((dx, x), g) in dx.chunks_mut(n).zip(x.chunks(n)).zip(g.chunks(n)) {
                    let (mean, rstd) = row_stats(x, self.eps);
                    let mut mean_gw = 0f32;
                    let mut mean_gwx = 0f32;
                    for i in 0..n {
                        let xhat = (x[i] - mean) * rstd;
                        let gw = g[i] * w[i];
                        mean_gw += gw;
                        mean_gwx += gw * xhat;
                        acc[i] += g[i] * xhat;
                        acc[n + i] += g[i];
                    }
                    mean_gw /= n as f32;
                    mean_gwx /= n as f32;
                    for i in 0..n {
                        let xhat = (x[i] - mean) * rstd;
                        dx[i] = rstd * (g[i] * w[i] - mean_gw - xhat * mean_gwx);
                    }
                }
                acc
            })
            .collect();
        for p in partials {
            for (t, v) in tail.iter_mut().zip(p) {
                *t += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, n))))
    }
}
