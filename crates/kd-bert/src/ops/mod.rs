//! Differentiable building blocks with fused CPU kernels.
//!
//! candle's fused `softmax_last_dim` and `layer_norm` record no backward pass, so gradients
//! through them are silently missing. The ops here run a fused kernel forward on CPU `f32`
//! tensors *and* register a fused backward; on other devices or dtypes they fall back to
//! compositions of differentiable candle ops.

mod activation;
mod attention;
mod dropout;
mod head_gemm;
mod heads;
mod layer_norm;
mod linear;
mod scored_attention;
mod softmax;

pub use activation::{activate, gelu_erf, gelu_tanh};
pub use attention::{attention, fits as attention_fits};
pub use dropout::{dropout, keep_mask};
pub use heads::{merge_heads, split_heads, split_heads_transposed};
pub use layer_norm::layer_norm;
pub use linear::linear;
pub use scored_attention::{attention_from_scores, attention_scores};
pub use softmax::{masked_softmax, softmax_last_dim};
