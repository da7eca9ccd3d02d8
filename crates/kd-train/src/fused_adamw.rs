//! One AdamW update of an `f32` CPU parameter in three streaming in-place passes (first
//! moment, second moment, parameter), instead of a dozen allocating tensor ops.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor};

/// Constants of one update (see `optim` for the formula).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Update {
    pub beta1: f64,
    pub beta2: f64,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f32,
    /// `1 / sqrt(1 - beta2^t)`.
    pub inv_bc2_sqrt: f32,
    pub eps: f32,
    /// `1 - lr * weight_decay` (1 outside the decay group).
    pub decay: f32,
}

/// Whether the fused path applies: CPU, `f32` everywhere, contiguous.
pub(crate) fn applies(param: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor) -> bool {
    [param, m, v, g]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous())
}

/// Updates `m`, `v` and `param` in place from the gradient `g`.
pub(crate) fn step(param: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor, u: Update) -> Result<()> {
    m.inplace_op2(g, &Moment::new(u.beta1, false))?;
    v.inplace_op2(g, &Moment::new(u.beta2, true))?;
    param.inplace_op3(m, v, &Apply(u))
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("fused AdamW expects contiguous f32 tensors"),
    }
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("fused AdamW expects contiguous f32 tensors"),
    }
}

/// `m <- beta * m + (1 - beta) * g` (or `g^2`).
struct Moment {
    beta: f32,
    /// `1 - beta`, rounded from f64 as the tensor-op path does.
    rest: f32,
    square: bool,
}

impl Moment {
    fn new(beta: f64, square: bool) -> Self {
        Self {
            beta: beta as f32,
            rest: (1.0 - beta) as f32,
            square,
        }
    }
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "kd-adamw-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let m = slice_mut(s1, l1)?;
        let g = slice(s2, l2)?;
        let (b, c) = (self.beta, self.rest);
        if self.square {
            m.iter_mut()
                .zip(g)
                .for_each(|(m, &g)| *m = b * *m + c * (g * g));
        } else {
            m.iter_mut().zip(g).for_each(|(m, &g)| *m = b * *m + c * g);
        }
        Ok(())
    }
}

/// `p <- p * decay - step_size * m / (sqrt(v) * inv_bc2_sqrt + eps)`.
struct Apply(Update);

impl InplaceOp3 for Apply {
    fn name(&self) -> &'static str {
        "kd-adamw-apply"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let p = slice_mut(s1, l1)?;
        let m = slice(s2, l2)?;
        let v = slice(s3, l3)?;
        let u = self.0;
        for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
            let denom = v.sqrt() * u.inv_bc2_sqrt + u.eps;
            *p = *p * u.decay - u.step_size * (m / denom);
        }
        Ok(())
    }
}
