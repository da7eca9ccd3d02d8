//! Learning-rate schedules with Hugging Face semantics.
//!
//! `step` is the number of optimizer steps already taken (0 for the first
//! update), exactly like the `current_step` seen by the `lr_lambda` of
//! `transformers.get_linear_schedule_with_warmup`; the first update of a
//! schedule with warmup therefore uses a learning rate of 0.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A learning-rate multiplier as a function of the optimizer step.
///
/// Serialised with a `kind` tag, e.g. in TOML:
///
/// ```toml
/// [schedule]
/// kind = "linear_warmup_decay"
/// warmup_steps = 100
/// total_steps = 1000
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// Linear warmup from 0, then constant (HF `constant_with_warmup`).
    Constant {
        /// Steps of linear warmup (0 for none).
        warmup_steps: u64,
    },
    /// Linear warmup from 0, then linear decay to 0 at `total_steps`
    /// (HF `linear`).
    LinearWarmupDecay {
        /// Steps of linear warmup (0 for none).
        warmup_steps: u64,
        /// Step at which the learning rate reaches 0.
        total_steps: u64,
    },
}

impl Default for Schedule {
    /// A constant schedule without warmup.
    fn default() -> Self {
        Schedule::Constant { warmup_steps: 0 }
    }
}

impl Schedule {
    /// Multiplier of the base learning rate at `step`, in `[0, 1]`.
    pub fn factor(&self, step: u64) -> f64 {
        let warmup = match *self {
            Schedule::Constant { warmup_steps } => warmup_steps,
            Schedule::LinearWarmupDecay { warmup_steps, .. } => warmup_steps,
        };
        if step < warmup {
            return step as f64 / warmup.max(1) as f64;
        }
        match *self {
            Schedule::Constant { .. } => 1.0,
            Schedule::LinearWarmupDecay {
                warmup_steps,
                total_steps,
            } => {
                let left = total_steps.saturating_sub(step) as f64;
                let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
                (left / span).max(0.0)
            }
        }
    }

    /// Learning rate at `step` for the base learning rate `base_lr`.
    pub fn lr(&self, base_lr: f64, step: u64) -> f64 {
        base_lr * self.factor(step)
    }

    /// Linear warmup and decay over `total_steps`, with the warmup given as a
    /// fraction of the total (see [`warmup_from_fraction`]).
    pub fn linear_with_warmup_fraction(total_steps: u64, warmup_fraction: f64) -> Result<Self> {
        Ok(Schedule::LinearWarmupDecay {
            warmup_steps: warmup_from_fraction(total_steps, warmup_fraction)?,
            total_steps,
        })
    }

    /// Checks that the warmup does not exceed the total for decaying schedules.
    pub fn validate(&self) -> Result<()> {
        if let Schedule::LinearWarmupDecay {
            warmup_steps,
            total_steps,
        } = *self
        {
            if warmup_steps > total_steps {
                return Err(Error::InvalidConfig(format!(
                    "warmup_steps ({warmup_steps}) > total_steps ({total_steps})"
                )));
            }
        }
        Ok(())
    }
}

/// Warmup steps for a fraction of `total_steps`, rounded up like the HF
/// Trainer's `warmup_ratio` (`ceil(total_steps * fraction)`). The fraction
/// must be in `[0, 1]`.
pub fn warmup_from_fraction(total_steps: u64, fraction: f64) -> Result<u64> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::InvalidConfig(format!(
            "warmup fraction {fraction} is not in [0, 1]"
        )));
    }
    Ok((total_steps as f64 * fraction).ceil() as u64)
}
