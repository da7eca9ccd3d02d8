//! Differentiable building blocks with fused CPU kernels.
//!
//! candle's fused `softmax_last_dim` and `layer_norm` record no backward pass, so gradients
//! through them are silently missing. The ops here run a fused kernel forward on CPU `f32`
//! tensors *and* register a fused backward; on other devices or dtypes they fall back to
//! compositions of differentiable candle ops.

mod activation;
mod attention;
mod dropout;
mod heads;
mod layer_norm;
mod linear;
mod softmax;

pub use activation::{activate, gelu_erf, gelu_tanh};
pub use attention::{attention, fits as attention_fits};
pub use dropout::{dropout, keep_mask};
pub use heads::{merge_heads, split_heads, split_heads_transposed};
pub use layer_norm::layer_norm;
pub use linear::linear;
pub use softmax::{masked_softmax, softmax_last_dim};

use candle_core::{CpuStorage, Layout, Result};

/// The contiguous `f32` slice behind a CPU storage, or `None` for other dtypes/layouts.
fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Option<&'a [f32]> {
    match storage {
        CpuStorage::F32(v) => layout.contiguous_offsets().map(|(a, b)| &v[a..b]),
        _ => None,
    }
}

/// Like [`f32_slice`] but an error for unsupported inputs (the fused path is only chosen for
/// contiguous `f32`, so this signals a logic error, not bad user input).
fn f32_input<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    f32_slice(storage, layout)
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: expected a contiguous f32 tensor")))
}

/// Whether the fused CPU path applies to `t`.
fn fused_ok(t: &candle_core::Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}
