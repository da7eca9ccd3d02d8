//! Distillation losses for BERT students on candle, each a small pure function over tensors
//! that is differentiable with respect to the student's inputs (teacher inputs are treated as
//! constants and detached).
//!
//! Modules:
//! - [`losses`]: one module per loss, each documenting its formula and reference.
//!   - [`losses::soft_target_full`]: DistilBERT's soft-target KL with full teacher logits.
//!   - [`losses::soft_target_topk`]: the same from a top-k teacher record (rest bucket or
//!     renormalised).
//!   - [`losses::soft_target_sampled`]: the unbiased sampled estimator from teacher draws.
//!   - [`losses::mlm_cross_entropy`]: cross-entropy at masked positions.
//!   - [`losses::cosine_embedding`]: DistilBERT's cosine loss between last hidden states over
//!     real tokens.
//!   - [`losses::logit_mse`]: MSE between logits (Tang et al., TinyBERT regression).
//!   - [`losses::attention_mse`]: TinyBERT's attention-score MSE.
//!   - [`losses::hidden_mse`]: TinyBERT's hidden-state MSE and the student [`Projection`].
//!   - [`losses::prediction_soft_ce`]: TinyBERT's prediction-layer soft cross-entropy.
//! - [`targets`]: [`TopKTargets`] and [`SampledTargets`], teacher records from a cache checked
//!   once and packed for the top-k and sampled losses.
//! - [`kl`]: host-side KL over a top-k support plus a rest bucket, for evaluation reports.
//! - [`combine`]: weighted sums of named terms with their values for the metrics log.
//! - [`ops`]: the differentiable log-softmax the losses share.
//! - [`error`]: the crate's error type.
//!
//! On CPU `f32`, the vocabulary-wide losses (full, top-k with the rest bucket, sampled, MLM)
//! run fused kernels with their own backward (two passes over each row each way); other
//! devices and dtypes use compositions of differentiable candle ops. Both are tested against
//! the same PyTorch references. Half-precision students are computed in `f32`, `f64` students
//! in `f64`.
//!
//! Inputs whose shapes do not fit return [`Error::Shape`] naming the shapes, bad values
//! [`Error::Invalid`]; no function panics on bad input.

#![warn(missing_docs)]

mod check;
pub mod combine;
pub mod error;
mod fused;
pub mod kl;
pub mod losses;
pub mod ops;
pub mod targets;

pub use combine::{LossWeights, WeightedLoss};
pub use error::{Error, Result};
pub use losses::attention_mse::{attention_mse, ATTENTION_SCORE_FLOOR};
pub use losses::cosine_embedding::cosine_embedding;
pub use losses::hidden_mse::{hidden_mse, Projection};
pub use losses::logit_mse::logit_mse;
pub use losses::mlm_cross_entropy::mlm_cross_entropy;
pub use losses::prediction_soft_ce::{prediction_soft_ce, SoftCeReduction};
pub use losses::soft_target_full::soft_target_full;
pub use losses::soft_target_sampled::soft_target_sampled;
pub use losses::soft_target_topk::{soft_target_topk, TailMode};
pub use losses::SoftTargetConfig;
pub use targets::{SampledTargets, TopKTargets};
