//! Splitting hidden states into attention heads and merging them back, one node each.
//!
//! Composed, a split is reshape + transpose + contiguous copy (+ a scale for queries, + a
//! transpose for keys): three to five graph nodes, each with its own zeroed gradient buffer in
//! candle's backward. The fused op is one strided copy forward and its inverse backward.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use kd_kernels::cpu::{f32_input, fast_path};
use rayon::prelude::*;

/// `[B, L, H]` -> `[B, heads, L, H / heads]`, times `scale`.
pub fn split_heads(xs: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    let (b, l, h) = xs.dims3()?;
    let d = h / heads.max(1);
    if fast_path(xs) {
        let op = Permute4::new([b, l, heads, d], [0, 2, 1, 3], scale as f32);
        return xs.contiguous()?.apply_op1(op);
    }
    let split = xs
        .reshape((b, l, heads, d))?
        .transpose(1, 2)?
        .contiguous()?;
    if scale == 1.0 {
        Ok(split)
    } else {
        split * scale
    }
}

/// `[B, L, H]` -> `[B, heads, H / heads, L]`: keys laid out for `Q K^T` without a transpose.
pub fn split_heads_transposed(xs: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, l, h) = xs.dims3()?;
    let d = h / heads.max(1);
    if fast_path(xs) {
        let op = Permute4::new([b, l, heads, d], [0, 2, 3, 1], 1.0);
        return xs.contiguous()?.apply_op1(op);
    }
    xs.reshape((b, l, heads, d))?
        .permute((0, 2, 3, 1))?
        .contiguous()
}

/// `[B, heads, L, d]` -> `[B, L, heads * d]`.
pub fn merge_heads(xs: &Tensor) -> Result<Tensor> {
    let (b, heads, l, d) = xs.dims4()?;
    if fast_path(xs) {
        let op = Permute4::new([b, heads, l, d], [0, 2, 1, 3], 1.0);
        return xs.contiguous()?.apply_op1(op)?.reshape((b, l, heads * d));
    }
    xs.transpose(1, 2)?.contiguous()?.reshape((b, l, heads * d))
}

/// `y = scale * x.reshape(dims).permute(perm)`, contiguous; the input may have any shape with
/// `dims`' element count.
#[derive(Debug, Clone, Copy)]
struct Permute4 {
    dims: [usize; 4],
    perm: [usize; 4],
    scale: f32,
}

impl Permute4 {
    fn new(dims: [usize; 4], perm: [usize; 4], scale: f32) -> Self {
        Self { dims, perm, scale }
    }

    fn out_dims(&self) -> [usize; 4] {
        self.perm.map(|p| self.dims[p])
    }

    /// The op that undoes this one (for the backward pass).
    fn inverse(&self) -> Self {
        let mut inv = [0; 4];
        for (i, &p) in self.perm.iter().enumerate() {
            inv[p] = i;
        }
        Self::new(self.out_dims(), inv, self.scale)
    }
}

/// Strided copy of `src` (contiguous `dims`) into the permuted, contiguous `dst`.
fn permute_copy(dst: &mut [f32], src: &[f32], op: &Permute4) {
    let d = op.dims;
    let in_stride = [d[1] * d[2] * d[3], d[2] * d[3], d[3], 1];
    let o = op.out_dims();
    let st = op.perm.map(|p| in_stride[p]);
    let plane = o[2] * o[3];
    if plane == 0 {
        return;
    }
    dst.par_chunks_mut(plane).enumerate().for_each(|(ab, out)| {
        let base = (ab / o[1]) * st[0] + (ab % o[1]) * st[1];
        for (c, row) in out.chunks_mut(o[3]).enumerate() {
            let base = base + c * st[2];
            if st[3] == 1 {
                let s = &src[base..base + o[3]];
                row.iter_mut().zip(s).for_each(|(y, &x)| *y = x * op.scale);
            } else {
                for (e, y) in row.iter_mut().enumerate() {
                    *y = src[base + e * st[3]] * op.scale;
                }
            }
        }
    });
}

impl CustomOp1 for Permute4 {
    fn name(&self) -> &'static str {
        "kd-permute-heads"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_input(storage, layout, self.name())?;
        if src.len() != self.dims.iter().product::<usize>() {
            candle_core::bail!(
                "kd-permute-heads: {} elements do not fill {:?}",
                src.len(),
                self.dims
            );
        }
        let mut dst = vec![0f32; src.len()];
        permute_copy(&mut dst, src, self);
        Ok((CpuStorage::F32(dst), Shape::from(self.out_dims().to_vec())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = grad_res.contiguous()?.apply_op1_no_bwd(&self.inverse())?;
        Ok(Some(g.reshape(arg.shape())?))
    }
}
