//! Softmax over the last dimension with a fused forward and backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use kd_kernels::cpu::{f32_input, f32_inputs, fast_path};
use rayon::prelude::*;

/// Softmax over the last dimension; differentiable on every device.
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if fast_path(xs) {
        xs.contiguous()?.apply_op1(SoftmaxLastDim)
    } else {
        candle_nn::ops::softmax(xs, D::Minus1)
    }
}

/// `softmax(scores + mask)` over the last dimension for attention: `scores` `[B, H, Lq, Lk]`,
/// `mask` `[B, 1, 1, Lk]` additive. The mask add is fused into the kernel on CPU; the gradient
/// flows to `scores` only (the mask is an input, not a parameter).
pub fn masked_softmax(scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, _, _, lk) = scores.dims4()?;
    if fast_path(scores) && fast_path(mask) && mask.dims() == [b, 1, 1, lk] {
        scores
            .contiguous()?
            .apply_op2(&mask.contiguous()?, MaskedSoftmax)
    } else {
        softmax_last_dim(&scores.broadcast_add(mask)?)
    }
}

/// Softmax of `row + mask` (the mask, when given, added first) in place.
pub(super) fn softmax_in_place(row: &mut [f32], mask: Option<&[f32]>) {
    if let Some(m) = mask {
        row.iter_mut().zip(m).for_each(|(x, &mv)| *x += mv);
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

/// The softmax backward of one row in place: `g` becomes `y * (g - sum(g * y))`.
pub(super) fn softmax_grad_in_place(g: &mut [f32], y: &[f32]) {
    let dot: f32 = y.iter().zip(g.iter()).map(|(a, b)| a * b).sum();
    g.iter_mut().zip(y).for_each(|(g, &y)| *g = y * (*g - dot));
}

/// Row-wise softmax of `src + mask`, where row `r` uses mask row `r / rows_per_mask`.
fn softmax_rows(dst: &mut [f32], src: &[f32], n: usize, mask: Option<(&[f32], usize)>) {
    dst.par_chunks_mut(n)
        .zip(src.par_chunks(n))
        .enumerate()
        .for_each(|(r, (d, s))| {
            d.copy_from_slice(s);
            let m = mask.map(|(m, per)| &m[(r / per) * n..(r / per + 1) * n]);
            softmax_in_place(d, m);
        });
}

struct MaskedSoftmax;

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "kd-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [src, mask] = f32_inputs([(s1, l1), (s2, l2)], self.name())?;
        let dims = l1.dims();
        let n = dims[dims.len() - 1].max(1);
        let per = dims[1] * dims[2];
        let mut dst = vec![0f32; src.len()];
        softmax_rows(&mut dst, src, n, Some((mask, per.max(1))));
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _mask: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = res
            .contiguous()?
            .apply_op2_no_bwd(&grad_res.contiguous()?, &SoftmaxGrad)?;
        Ok((Some(g), None))
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
        softmax_rows(&mut dst, src, n, None);
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
        let [y, g] = f32_inputs([(s1, l1), (s2, l2)], self.name())?;
        let n = l1.dims().last().copied().unwrap_or(1).max(1);
        let mut dst = g.to_vec();
        dst.par_chunks_mut(n)
            .zip(y.par_chunks(n))
            .for_each(|(d, y)| softmax_grad_in_place(d, y));
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}
