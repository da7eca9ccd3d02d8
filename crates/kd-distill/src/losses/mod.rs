//! The distillation losses, one module each. Every loss returns a scalar tensor.

pub mod attention_mse;
pub mod cosine_embedding;
pub mod hidden_mse;
pub mod logit_mse;
pub mod mlm_cross_entropy;
pub mod prediction_soft_ce;
pub mod soft_target_full;
pub mod soft_target_sampled;
pub mod soft_target_topk;

/// Temperature and scaling of the soft-target (MLM distillation) losses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoftTargetConfig {
    /// Softmax temperature `T` applied to student and teacher logits.
    pub temperature: f64,
    /// Multiply the loss by `T²` (Hinton et al.; DistilBERT does, TinyBERT does not) so the
    /// gradient scale does not depend on `T`.
    pub t2_scaling: bool,
}

impl SoftTargetConfig {
    /// DistilBERT's released setting: `T = 2` with `T²` scaling.
    pub const DISTILBERT: SoftTargetConfig = SoftTargetConfig {
        temperature: 2.0,
        t2_scaling: true,
    };

    /// Temperature `temperature` with `T²` scaling.
    pub fn new(temperature: f64) -> Self {
        SoftTargetConfig {
            temperature,
            t2_scaling: true,
        }
    }

    /// The factor the mean KL is multiplied by: `T²` or 1.
    pub fn scale(&self) -> f64 {
        if self.t2_scaling {
            self.temperature * self.temperature
        } else {
            1.0
        }
    }
}

impl Default for SoftTargetConfig {
    /// [`SoftTargetConfig::DISTILBERT`].
    fn default() -> Self {
        Self::DISTILBERT
    }
}
