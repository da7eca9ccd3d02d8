//! One place for what the fused kernels of kd share.
//!
//! kd-bert's ops (dense layer, attention, softmax, LayerNorm, GELU, head split/merge) and
//! kd-distill's vocabulary-wide losses each run a fused kernel, forward and backward, as a
//! candle custom op; elsewhere they fall back to compositions of differentiable candle ops.
//! [`cpu`] holds what every CPU kernel needs: the fast-path check and the contiguous `f32`
//! slices behind a storage. A CUDA kernel goes beside the CPU one in a `cuda` module here,
//! with its own check, so both crates pick it up the same way.

pub mod cpu;
