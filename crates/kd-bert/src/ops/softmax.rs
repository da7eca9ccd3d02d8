//! Softmax over the last dimension with a fused forward and backward.

use super::{f32_input, fused_ok};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Softmax over the last dimension; differentiable on every device.
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if fused_ok(xs) {
        xs.contiguous()?.apply_op1(SoftmaxLastDim)
    } else {
        candle_nn::ops::softmax(xs, D::Minus1)
    }
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "kd-softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_input(storage, layout, self.name())?;
        let n = layout.dims().last().copied().unwrap_or(1).max(1);
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(n)
            .zip(src.par_chunks(n))
            .for_each(|(d, s)| {
                let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for (o, &x) in d.iter_mut().zip(s) {
                    *o = (x - max).exp();
                    sum += *o;
                }
                let inv = 1.0 / sum;
                d.iter_mut().for_each(|o| *o *= inv);
            });
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = res
            .contiguous()?
            .apply_op2_no_bwd(&grad_res.contiguous()?, &SoftmaxGrad)?;
        Ok(Some(g))
    }
}

/// dx = y * (g - sum(g * y)) row by row.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "kd-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32_input(s1, l1, self.name())?;
        let g = f32_input(s2, l2, self.name())?;
        let n = l1.dims().last().copied().unwrap_or(1).max(1);
        let mut dst = vec![0f32; y.len()];
        dst.par_chunks_mut(n)
            .zip(y.par_chunks(n).zip(g.par_chunks(n)))
            .for_each(|(d, (y, g))| {
                let dot: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
                for ((o, &y), &g) in d.iter_mut().zip(y).zip(g) {
                    *o = y * (g - dot);
                }
            });
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}
