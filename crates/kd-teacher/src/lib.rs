//! Teacher preparation, the step before distillation: give a pre-trained encoder an MLM head
//! fitted on the target corpus (domain adaptation), or fine-tune it as a sequence classifier.
//!
//! - [`tensors`]: kd-data batches to model input tensors.
//! - [`evaluate`]: masked-token top-1 accuracy and classification accuracy.
//! - [`mlm`]: MLM fine-tuning on a text corpus with a held-out split.
//! - [`classify`]: sequence-classification fine-tuning with dev-based model selection.

pub mod classify;
pub mod error;
pub mod evaluate;
pub mod mlm;
pub mod tensors;

pub use error::{Error, Result};
