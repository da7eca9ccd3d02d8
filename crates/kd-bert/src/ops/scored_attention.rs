//! Attention that hands back its scores as a differentiable output, as two graph nodes.
//!
//! TinyBERT's attention loss reads the pre-softmax scores of its mapped layers, so the scores'
//! gradient from that loss must join the one coming back from the context. [`attention_scores`]
//! is one node `q, k -> q k^T * scale + mask` per head (backward to `q` and `k`: two GEMMs per
//! head); [`attention_from_scores`] is one node `scores, v -> context` that runs the softmax,
//! dropout and the context GEMM in place per head and keeps only the probabilities (backward to
//! the scores and `v`: two GEMMs per head, the softmax backward in place). candle adds the two
//! gradients of the scores before the first node's backward runs. The only `[B, heads, L, L]`
//! buffers are the scores, the probabilities and the scores' gradients.

use super::head_gemm::{mm, Dims, Dst, Mat, Out};
use super::softmax::{softmax_grad_in_place, softmax_in_place};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Tensor};
use kd_kernels::cpu::{f32_input, f32_inputs};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// The masked attention scores `q_h k_h^T * scale + mask` of every head, `[B, heads, L, L]`,
/// differentiable with respect to `q` and `k`. `q` and `k` are `[B, L, H]` (the dense layers'
/// outputs, heads side by side), `mask` the additive key mask `[B, 1, 1, L]`. CPU `f32` only:
/// callers check [`super::attention_fits`] and compose the same computation otherwise.
pub fn attention_scores(
    q: &Tensor,
    k: &Tensor,
    mask: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    let (b, l, h) = q.dims3()?;
    if heads == 0 || h % heads != 0 || k.dims() != q.dims() {
        candle_core::bail!(
            "kd-attention-scores: q {:?} and k {:?} do not split into {heads} heads",
            q.dims(),
            k.dims()
        );
    }
    let mask = mask.flatten_all()?.to_vec1::<f32>()?;
    if mask.len() != b * l {
        candle_core::bail!("kd-attention-scores: the key mask does not fit [B, 1, 1, L]");
    }
    let op = ScoresOp {
        shape: Dims { b, l, h, heads },
        scale: scale as f32,
        mask: Arc::new(mask),
    };
    q.contiguous()?.apply_op2(&k.contiguous()?, op)
}

/// `softmax(scores)` per row with `dropout` (keep-mask values `0` or `1 / (1 - p)`,
/// `[B, heads, L, L]` row-major) applied, times `v` per head. `scores` `[B, heads, L, L]`
/// already hold the mask (see [`attention_scores`]); `v` is `[B, L, H]`. Returns the context
/// `[B, L, H]`, differentiable with respect to `scores` and `v`, and the probabilities
/// `[B, heads, L, L]` before dropout, a constant (no gradient flows through it). CPU `f32` only.
pub fn attention_from_scores(
    scores: &Tensor,
    v: &Tensor,
    dropout: Option<Vec<f32>>,
) -> Result<(Tensor, Tensor)> {
    let (b, heads, lq, lk) = scores.dims4()?;
    let (vb, l, h) = v.dims3()?;
    if vb != b || lq != l || lk != l || heads == 0 || h % heads != 0 {
        candle_core::bail!(
            "kd-attention-context: scores {:?} do not fit v {:?} split into {heads} heads",
            scores.dims(),
            v.dims()
        );
    }
    let shape = Dims { b, l, h, heads };
    if dropout.as_ref().is_some_and(|d| d.len() != shape.map_len()) {
        candle_core::bail!("kd-attention-context: the dropout mask does not fit [B, heads, L, L]");
    }
    let probs = Arc::new(Mutex::new(None));
    let op = ContextOp {
        shape,
        dropout: dropout.map(Arc::new),
        probs: probs.clone(),
    };
    let context = scores.contiguous()?.apply_op2(&v.contiguous()?, op)?;
    let probs = probs.lock().expect("attention probs lock").clone();
    let probs = probs.ok_or_else(|| {
        candle_core::Error::Msg("kd-attention-context: the forward kept no probabilities".into())
    })?;
    Ok((context, probs))
}

/// `q, k -> q k^T * scale + mask` per head.
struct ScoresOp {
    shape: Dims,
    scale: f32,
    /// Additive key mask, `[B, L]`.
    mask: Arc<Vec<f32>>,
}

impl CustomOp2 for ScoresOp {
    fn name(&self) -> &'static str {
        "kd-attention-scores"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [q, k] = f32_inputs([(s1, l1), (s2, l2)], self.name())?;
        let dims = self.shape;
        let (l, h, d) = (dims.l, dims.h as isize, dims.d());
        let mut out = vec![0f32; dims.map_len()];
        out.par_chunks_mut((l * l).max(1))
            .enumerate()
            .for_each(|(bh, p)| {
                let (s, hd) = (bh / dims.heads, bh % dims.heads);
                let off = dims.head_offset(s, hd);
                // SAFETY: the q/k views cover rows 0..l, columns off..off+d of sequence s; the
                // destination is this task's own chunk of l x l scores.
                unsafe {
                    let qv = Mat(q.as_ptr().add(off), h, 1);
                    let kt = Mat(k.as_ptr().add(off), 1, h);
                    mm(l, l, d, Dst(p.as_mut_ptr(), l as isize), qv, kt, self.scale);
                }
                let key_mask = &self.mask[s * l..(s + 1) * l];
                p.chunks_mut(l).for_each(|row| {
                    row.iter_mut().zip(key_mask).for_each(|(x, &m)| *x += m);
                });
            });
        let shape = Shape::from((dims.b, dims.heads, l, l));
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let op = ScoresGrad {
            shape: self.shape,
            scale: self.scale,
        };
        let both = q.detach().contiguous()?.apply_op3_no_bwd(
            &k.detach().contiguous()?,
            &grad.contiguous()?,
            &op,
        )?;
        Ok((Some(both.get(0)?), Some(both.get(1)?)))
    }
}

/// `q, k, dS -> [dq, dk]` stacked into `[2, B, L, H]`: `dq = scale dS k`, `dk = scale dS^T q`
/// per head.
struct ScoresGrad {
    shape: Dims,
    scale: f32,
}

impl CustomOp3 for ScoresGrad {
    fn name(&self) -> &'static str {
        "kd-attention-scores-grad"
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
        let [q, k, g] = f32_inputs([(s1, l1), (s2, l2), (s3, l3)], self.name())?;
        let dims = self.shape;
        let (l, h, d) = (dims.l, dims.h as isize, dims.d());
        let n = q.len();
        let mut out = vec![0f32; 2 * n];
        let dst = Out(out.as_mut_ptr());
        (0..dims.b * dims.heads).into_par_iter().for_each(|bh| {
            let (s, hd) = (bh / dims.heads, bh % dims.heads);
            let off = dims.head_offset(s, hd);
            let ds = &g[bh * l * l..(bh + 1) * l * l];
            // SAFETY: views stay inside one sequence's rows and one head's columns; the two
            // output blocks of (s, hd) belong to this task alone.
            unsafe {
                let dsv = Mat(ds.as_ptr(), l as isize, 1);
                let dst_t = Mat(ds.as_ptr(), 1, l as isize);
                let kv = Mat(k.as_ptr().add(off), h, 1);
                mm(l, d, l, dst.at(off, h), dsv, kv, self.scale);
                let qv = Mat(q.as_ptr().add(off), h, 1);
                mm(l, d, l, dst.at(n + off, h), dst_t, qv, self.scale);
            }
        });
        let mut shape = vec![2];
        shape.extend_from_slice(l1.dims());
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

/// `scores, v -> dropout(softmax(scores)) v` per head; keeps the probabilities.
struct ContextOp {
    shape: Dims,
    dropout: Option<Arc<Vec<f32>>>,
    /// Softmax probabilities from the forward pass, `[B, heads, L, L]`, shared with the caller
    /// and read by the backward pass.
    probs: Arc<Mutex<Option<Tensor>>>,
}

/// `p * keep` for one head's block when dropout is on, else `p` itself.
fn dropped<'a>(p: &'a [f32], keep: Option<&[f32]>, scratch: &'a mut Vec<f32>) -> &'a [f32] {
    match keep {
        Some(m) => {
            scratch.clear();
            scratch.extend(p.iter().zip(m).map(|(a, b)| a * b));
            scratch
        }
        None => p,
    }
}

impl CustomOp2 for ContextOp {
    fn name(&self) -> &'static str {
        "kd-attention-context"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [scores, v] = f32_inputs([(s1, l1), (s2, l2)], self.name())?;
        let dims = self.shape;
        let (l, h, d) = (dims.l, dims.h as isize, dims.d());
        let mut out = vec![0f32; v.len()];
        let mut probs = vec![0f32; scores.len()];
        let dst = Out(out.as_mut_ptr());
        probs
            .par_chunks_mut((l * l).max(1))
            .zip(scores.par_chunks((l * l).max(1)))
            .enumerate()
            .for_each(|(bh, (p, scores))| {
                let (s, hd) = (bh / dims.heads, bh % dims.heads);
                let off = dims.head_offset(s, hd);
                p.copy_from_slice(scores);
                p.chunks_mut(l).for_each(|row| softmax_in_place(row, None));
                let keep = self
                    .dropout
                    .as_ref()
                    .map(|m| &m[bh * l * l..(bh + 1) * l * l]);
                let mut scratch = Vec::new();
                let weights = dropped(p, keep, &mut scratch);
                // SAFETY: the v view covers rows 0..l, columns off..off+d of sequence s; the
                // output block (sequence s, head hd) belongs to this task alone.
                unsafe {
                    let vv = Mat(v.as_ptr().add(off), h, 1);
                    let pw = Mat(weights.as_ptr(), l as isize, 1);
                    mm(l, d, l, dst.at(off, h), pw, vv, 1.0);
                }
            });
        let probs = Tensor::from_vec(probs, (dims.b, dims.heads, l, l), &Device::Cpu)?;
        *self.probs.lock().expect("attention probs lock") = Some(probs);
        Ok((CpuStorage::F32(out), l2.shape().clone()))
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let probs = self
            .probs
            .lock()
            .expect("attention probs lock")
            .clone()
            .ok_or_else(|| {
                candle_core::Error::Msg("kd-attention-context: backward before forward".into())
            })?;
        let op = ContextGrad {
            shape: self.shape,
            dropout: self.dropout.clone(),
        };
        let all = probs.apply_op3_no_bwd(&v.detach().contiguous()?, &grad.contiguous()?, &op)?;
        let dims = self.shape;
        let n = dims.map_len();
        let d_scores = all.narrow(0, 0, n)?.reshape(probs.shape())?;
        let d_v = all.narrow(0, n, v.elem_count())?.reshape(v.shape())?;
        Ok((Some(d_scores), Some(d_v)))
    }
}

/// `probs, v, dctx -> [dS, dv]` flattened one after the other: `dv = P_d^T dctx`,
/// `dP_d = dctx v^T`, `dS = P * (dP - rowsum(dP * P))` with `dP = dP_d * keep` per head.
struct ContextGrad {
    shape: Dims,
    dropout: Option<Arc<Vec<f32>>>,
}

impl CustomOp3 for ContextGrad {
    fn name(&self) -> &'static str {
        "kd-attention-context-grad"
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
        let [probs, v, g] =
            [(s1, l1), (s2, l2), (s3, l3)].map(|(s, l)| f32_input(s, l, self.name()));
        let (probs, v, g, dims) = (probs?, v?, g?, self.shape);
        let (l, h, d) = (dims.l, dims.h as isize, dims.d());
        let n = dims.map_len();
        let mut out = vec![0f32; n + v.len()];
        let (d_scores, d_v) = out.split_at_mut(n);
        let dv = Out(d_v.as_mut_ptr());
        d_scores
            .par_chunks_mut((l * l).max(1))
            .enumerate()
            .for_each(|(bh, ds)| {
                let (s, hd) = (bh / dims.heads, bh % dims.heads);
                let off = dims.head_offset(s, hd);
                let p = &probs[bh * l * l..(bh + 1) * l * l];
                let keep = self
                    .dropout
                    .as_ref()
                    .map(|m| &m[bh * l * l..(bh + 1) * l * l]);
                let mut scratch = Vec::new();
                let weights = dropped(p, keep, &mut scratch);
                // SAFETY: views stay inside one sequence's rows and one head's columns; the dv
                // block of (s, hd) and the chunk `ds` belong to this task alone.
                unsafe {
                    let gv = Mat(g.as_ptr().add(off), h, 1);
                    let pt = Mat(weights.as_ptr(), 1, l as isize);
                    mm(l, d, l, dv.at(off, h), pt, gv, 1.0);
                    let vt = Mat(v.as_ptr().add(off), 1, h);
                    mm(l, l, d, Dst(ds.as_mut_ptr(), l as isize), gv, vt, 1.0);
                }
                if let Some(m) = keep {
                    ds.iter_mut().zip(m).for_each(|(x, &m)| *x *= m);
                }
                ds.chunks_mut(l)
                    .zip(p.chunks(l))
                    .for_each(|(row, prow)| softmax_grad_in_place(row, prow));
            });
        Ok((CpuStorage::F32(out), Shape::from(n + v.len())))
    }
}
