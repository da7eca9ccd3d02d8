//! Scaled dot-product attention over heads as one graph node.
//!
//! Composed, attention records the scores, the probabilities, the dropped-out probabilities and
//! two batched matmuls, three of them `[B, heads, L, L]`, and candle's backward zeroes and adds
//! a gradient buffer of that size for each. The fused node runs, per (sequence, head), a GEMM
//! for the scores, the masked softmax and dropout in place, and a GEMM for the context, keeping
//! only the probabilities for the backward pass, which is five GEMMs per head. When the scores
//! are wanted as an output of their own (TinyBERT's attention loss), the same work is split
//! into two nodes instead ([`super::attention_scores`], [`super::attention_from_scores`]).

use super::head_gemm::{mm, Dims, Dst, Mat, Out};
use super::softmax::{softmax_grad_in_place, softmax_in_place};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use kd_kernels::cpu::{f32_input, fast_path};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// `softmax(q k^T * scale + mask) v` per head, with `dropout` (keep-mask values `0` or
/// `1 / (1 - p)`, `[B, heads, L, L]` row-major) applied to the probabilities. `q`, `k`, `v`
/// are `[B, L, H]` (the dense layers' outputs, heads side by side), `mask` the additive key
/// mask `[B, 1, 1, L]`; returns the context `[B, L, H]`. CPU `f32` only: callers check
/// [`fits`] and compose the same computation otherwise.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    heads: usize,
    scale: f64,
    dropout: Option<Vec<f32>>,
) -> Result<Tensor> {
    let (b, l, h) = q.dims3()?;
    if heads == 0 || h % heads != 0 || k.dims() != q.dims() || v.dims() != q.dims() {
        candle_core::bail!(
            "kd-attention: q {:?}, k {:?}, v {:?} do not split into {heads} heads",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if dropout
        .as_ref()
        .is_some_and(|d| d.len() != b * heads * l * l)
    {
        candle_core::bail!("kd-attention: the dropout mask does not fit [B, heads, L, L]");
    }
    let mask = mask.flatten_all()?.to_vec1::<f32>()?;
    if mask.len() != b * l {
        candle_core::bail!("kd-attention: the key mask does not fit [B, 1, 1, L]");
    }
    let op = FusedAttention {
        shape: Dims { b, l, h, heads },
        scale: scale as f32,
        mask: Arc::new(mask),
        dropout: dropout.map(Arc::new),
        probs: Mutex::new(None),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// Whether the fused path applies to these inputs.
pub fn fits(q: &Tensor, mask: &Tensor) -> bool {
    fast_path(q) && fast_path(mask)
}

struct FusedAttention {
    shape: Dims,
    scale: f32,
    /// Additive key mask, `[B, L]`.
    mask: Arc<Vec<f32>>,
    dropout: Option<Arc<Vec<f32>>>,
    /// Softmax probabilities from the forward pass, `[B, heads, L, L]`.
    probs: Mutex<Option<Arc<Vec<f32>>>>,
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "kd-attention"
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
        let [q, k, v] = [(s1, l1), (s2, l2), (s3, l3)].map(|(s, l)| f32_input(s, l, self.name()));
        let (q, k, v, dims) = (q?, k?, v?, self.shape);
        let (l, h, d) = (dims.l, dims.h as isize, dims.d());
        let mut out = vec![0f32; q.len()];
        let mut probs = vec![0f32; dims.b * dims.heads * l * l];
        let dst = Out(out.as_mut_ptr());
        probs
            .par_chunks_mut((l * l).max(1))
            .enumerate()
            .for_each(|(bh, p)| {
                let (s, hd) = (bh / dims.heads, bh % dims.heads);
                let off = dims.head_offset(s, hd);
                // SAFETY: q/k/v views cover rows 0..l, columns off..off+d of one sequence; the
                // output block (sequence s, head hd) belongs to this task alone.
                unsafe {
                    let qv = Mat(q.as_ptr().add(off), h, 1);
                    let kt = Mat(k.as_ptr().add(off), 1, h);
                    mm(l, l, d, Dst(p.as_mut_ptr(), l as isize), qv, kt, self.scale);
                }
                let key_mask = &self.mask[s * l..(s + 1) * l];
                p.chunks_mut(l)
                    .for_each(|row| softmax_in_place(row, Some(key_mask)));
                let dropped;
                let weights: &[f32] = match &self.dropout {
                    Some(mask) => {
                        let m = &mask[bh * l * l..(bh + 1) * l * l];
                        dropped = p.iter().zip(m).map(|(a, b)| a * b).collect::<Vec<_>>();
                        &dropped
                    }
                    None => p,
                };
                unsafe {
                    let vv = Mat(v.as_ptr().add(off), h, 1);
                    let pw = Mat(weights.as_ptr(), l as isize, 1);
                    mm(l, d, l, dst.at(off, h), pw, vv, 1.0);
                }
            });
        *self.probs.lock().expect("attention probs lock") = Some(Arc::new(probs));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let probs = self
            .probs
            .lock()
            .expect("attention probs lock")
            .clone()
            .ok_or_else(|| {
                candle_core::Error::Msg("kd-attention: backward before forward".into())
            })?;
        let op = AttentionGrad {
            shape: self.shape,
            scale: self.scale,
            dropout: self.dropout.clone(),
            probs,
            grad: Arc::new(grad.flatten_all()?.to_vec1::<f32>()?),
        };
        let all = q.detach().contiguous()?.apply_op3_no_bwd(
            &k.detach().contiguous()?,
            &v.detach().contiguous()?,
            &op,
        )?;
        Ok((Some(all.get(0)?), Some(all.get(1)?), Some(all.get(2)?)))
    }
}

/// The gradients `[dq, dk, dv]` stacked into `[3, B, L, H]`.
struct AttentionGrad {
    shape: Dims,
    scale: f32,
    dropout: Option<Arc<Vec<f32>>>,
    probs: Arc<Vec<f32>>,
    grad: Arc<Vec<f32>>,
}

impl CustomOp3 for AttentionGrad {
    fn name(&self) -> &'static str {
        "kd-attention-grad"
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
        let [q, k, v] = [(s1, l1), (s2, l2), (s3, l3)].map(|(s, l)| f32_input(s, l, self.name()));
        let (q, k, v, dims) = (q?, k?, v?, self.shape);
        let (l, h, d) = (dims.l, dims.h as isize, dims.d());
        let n = q.len();
        let mut out = vec![0f32; 3 * n];
        let dst = Out(out.as_mut_ptr());
        let g = self.grad.as_slice();
        (0..dims.b * dims.heads).into_par_iter().for_each(|bh| {
            let (s, hd) = (bh / dims.heads, bh % dims.heads);
            let off = dims.head_offset(s, hd);
            let p = &self.probs[bh * l * l..(bh + 1) * l * l];
            let drop = self
                .dropout
                .as_ref()
                .map(|m| &m[bh * l * l..(bh + 1) * l * l]);
            let mut ds = vec![0f32; l * l];
            // SAFETY: views stay inside one sequence's rows and one head's columns; the three
            // output blocks of (s, hd) belong to this task alone.
            unsafe {
                let gv = Mat(g.as_ptr().add(off), h, 1);
                let weights: Vec<f32> = match drop {
                    Some(m) => p.iter().zip(m).map(|(a, b)| a * b).collect(),
                    None => p.to_vec(),
                };
                // dV = P_d^T dctx
                let pt = Mat(weights.as_ptr(), 1, l as isize);
                mm(l, d, l, dst.at(2 * n + off, h), pt, gv, 1.0);
                // dP_d = dctx V^T
                let vt = Mat(v.as_ptr().add(off), 1, h);
                mm(l, l, d, Dst(ds.as_mut_ptr(), l as isize), gv, vt, 1.0);
            }
            if let Some(m) = drop {
                ds.iter_mut().zip(m).for_each(|(x, &m)| *x *= m);
            }
            // dS = P * (dP - rowsum(dP * P))
            ds.chunks_mut(l)
                .zip(p.chunks(l))
                .for_each(|(row, prow)| softmax_grad_in_place(row, prow));
            unsafe {
                let dsv = Mat(ds.as_ptr(), l as isize, 1);
                let dst_t = Mat(ds.as_ptr(), 1, l as isize);
                // dQ = scale dS K, dK = scale dS^T Q
                let kv = Mat(k.as_ptr().add(off), h, 1);
                mm(l, d, l, dst.at(off, h), dsv, kv, self.scale);
                let qv = Mat(q.as_ptr().add(off), h, 1);
                mm(l, d, l, dst.at(n + off, h), dst_t, qv, self.scale);
            }
        });
        let mut shape = vec![3];
        shape.extend_from_slice(l1.dims());
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}
