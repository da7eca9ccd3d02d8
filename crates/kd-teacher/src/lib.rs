//! Teacher preparation, the step before distillation: give a pre-trained encoder an MLM head
//! fitted on the target corpus (domain adaptation), or fine-tune it as a sequence classifier.
//!
//! - [`tensors`]: kd-data batches to model input tensors.
//! - [`evaluate`]: masked-token top-1 accuracy and classification accuracy.
//! - [`mlm`]: MLM fine-tuning on a text corpus with a held-out split.
//! - [`classify`]: sequence-classification fine-tuning with dev-based model selection.
//! - [`targets`]: one teacher forward pass over a padded batch -> one cache record per
//!   sequence (used by precompute and by online distillation).

pub mod classify;
pub mod error;
pub mod evaluate;
pub mod mlm;
pub mod targets;
pub mod tensors;

pub use error::{Error, Result};

/// Takes the lock on a run's output folder and checks that a rerun resumes the same run: the
/// settings (all but `out`) must equal those recorded when the run started. The lock is held
/// until the returned value is dropped.
pub(crate) fn claim_run_dir<C: serde::Serialize>(
    out: &std::path::Path,
    what: &str,
    cfg: &C,
) -> Result<kd_train::DirLock> {
    let lock = kd_train::DirLock::acquire(out, what)?;
    let mut settings = serde_json::to_value(cfg)
        .map_err(|e| Error::Config(format!("settings do not serialise: {e}")))?;
    if let Some(map) = settings.as_object_mut() {
        map.remove("out");
    }
    kd_train::run_settings::check_or_record(out, &settings)?;
    Ok(lock)
}
