//! Helpers of the fused CPU kernels.

use candle_core::{CpuStorage, DType, Layout, Result, Tensor};

/// Whether the fused CPU kernels apply to `t`: a CPU `f32` tensor.
pub fn fast_path(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// The contiguous `f32` slice behind a CPU storage, or `None` for other dtypes/layouts.
pub fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Option<&'a [f32]> {
    match storage {
        CpuStorage::F32(v) => layout.contiguous_offsets().map(|(a, b)| &v[a..b]),
        _ => None,
    }
}

/// Like [`f32_slice`] but an error for unsupported inputs (the fused path is only chosen for
/// contiguous `f32`, so this signals a logic error, not bad user input); `op` names the kernel.
pub fn f32_input<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    f32_slice(storage, layout)
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: expected a contiguous f32 tensor")))
}

/// The `f32` slices of several inputs of kernel `op`, in order.
pub fn f32_inputs<'a, const N: usize>(
    inputs: [(&'a CpuStorage, &Layout); N],
    op: &str,
) -> Result<[&'a [f32]; N]> {
    let mut out = [&[][..]; N];
    for (o, (s, l)) in out.iter_mut().zip(inputs) {
        *o = f32_input(s, l, op)?;
    }
    Ok(out)
}

/// The length of the last dimension of `layout` (1 for scalars and empty shapes): a kernel's
/// row length.
pub fn row_len(layout: &Layout) -> usize {
    layout.dims().last().copied().unwrap_or(1).max(1)
}
