//! A dense layer `x W^T + b` as one graph node.
//!
//! Composed from candle ops, a dense layer records six nodes (flatten, weight transpose,
//! matmul, bias broadcast, add, unflatten), and candle's backward materialises a zeroed
//! gradient buffer plus an add for each of them, then sums the broadcast bias gradient with a
//! strided reduction. The fused node does one GEMM (and an in-place bias add) forward and three
//! GEMMs backward.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use kd_kernels::cpu::fast_path;
use rayon::prelude::*;

/// `xs W^T + b` over the last dimension of `xs` (`[..., in]` -> `[..., out]`); `weight` is
/// `[out, in]` and `bias` `[out]`. Differentiable on every device, fused on CPU `f32`.
pub fn linear(xs: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if fast_path(xs) && fast_path(weight) && fast_path(bias) {
        return xs
            .contiguous()?
            .apply_op3(&weight.contiguous()?, &bias.contiguous()?, FusedLinear);
    }
    let dims = xs.dims();
    let in_dim = dims[dims.len() - 1];
    let rows = xs.elem_count() / in_dim.max(1);
    let out = xs
        .reshape((rows, in_dim))?
        .matmul(&weight.t()?)?
        .broadcast_add(bias)?;
    out.reshape(out_shape(dims, weight.dim(0)?))
}

/// `dims` with the last dimension replaced by `out`.
fn out_shape(dims: &[usize], out: usize) -> Vec<usize> {
    let mut shape = dims.to_vec();
    if let Some(last) = shape.last_mut() {
        *last = out;
    }
    shape
}

struct FusedLinear;

impl CustomOp3 for FusedLinear {
    fn name(&self) -> &'static str {
        "kd-linear"
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
        let dims = l1.dims();
        let (out_dim, in_dim) = l2.shape().dims2()?;
        if dims.last() != Some(&in_dim) || l3.dims() != [out_dim] {
            candle_core::bail!(
                "kd-linear: input {:?}, weight {:?} and bias {:?} do not fit",
                dims,
                l2.dims(),
                l3.dims()
            );
        }
        let rows = l1.shape().elem_count() / in_dim.max(1);
        let lhs = Layout::contiguous_with_offset((rows, in_dim), l1.start_offset());
        let rhs = l2.transpose(0, 1)?;
        let mut y = s1.matmul(s2, (1, rows, out_dim, in_dim), &lhs, &rhs)?;
        let bias = kd_kernels::cpu::f32_input(s3, l3, self.name())?;
        match &mut y {
            CpuStorage::F32(v) if out_dim > 0 => {
                v.par_chunks_mut(out_dim).for_each(|row| {
                    row.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
                });
            }
            CpuStorage::F32(_) => {}
            _ => candle_core::bail!("kd-linear: expected f32"),
        }
        Ok((y, Shape::from(out_shape(dims, out_dim))))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (out_dim, in_dim) = weight.dims2()?;
        let rows = xs.elem_count() / in_dim.max(1);
        let g = grad.contiguous()?.reshape((rows, out_dim))?;
        let x = xs.detach().reshape((rows, in_dim))?;
        let dx = g.matmul(&weight.detach())?.reshape(xs.shape())?;
        let dw = g.t()?.matmul(&x)?;
        // The bias gradient is a column sum; as a 1 x rows GEMM it runs at GEMM speed.
        let ones = Tensor::ones((1, rows), DType::F32, g.device())?;
        let db = ones.matmul(&g)?.reshape(out_dim)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}
