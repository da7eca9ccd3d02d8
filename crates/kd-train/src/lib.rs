//! Training core shared by every trainer in `kd`.
//!
//! Works on named candle [`Var`](candle_core::Var)s (a
//! [`VarMap`](candle_nn::VarMap)) whose names follow Hugging Face BERT
//! conventions; it does not depend on any model crate.
//!
//! Modules:
//! - [`optim`]: AdamW with decay / no-decay groups, frozen parameters and
//!   exportable state.
//! - [`schedule`]: learning-rate schedules (constant and linear, with warmup).
//! - [`grads`]: gradient accumulation, global-norm clipping, gradient
//!   coverage checks.
//! - [`checkpoint`]: atomic checkpoints keeping the last K, `latest` pointer.
//! - [`metrics`]: JSON-lines metrics log.
//! - [`progress`]: progress bar that hides itself when not on a terminal.
//! - [`loop_state`]: step / epoch / RNG state for exact resume, seeded data
//!   order and dropout masks.
//! - [`trainer`]: the training loop (accumulation, clipping, schedule, NaN guard, metrics,
//!   progress, checkpoints, exact resume) over a [`TrainTask`].
//! - [`params`]: named-variable helpers over a `VarMap`.
//! - [`dir_lock`]: an advisory lock on an output directory ([`DirLock`]).
//! - [`run_settings`]: the settings a run started with, checked when it resumes.
//! - [`error`]: the crate's error type.

pub mod checkpoint;
pub mod dir_lock;
pub mod error;
mod fused_adamw;
pub mod grads;
pub mod loop_state;
pub mod metrics;
pub mod optim;
pub mod params;
pub mod progress;
pub mod run_settings;
pub mod schedule;
pub mod trainer;

pub use checkpoint::{
    list_checkpoints, load_checkpoint, load_latest, Checkpoint, CheckpointManager, TrainerState,
};
pub use dir_lock::DirLock;
pub use error::{Error, Result};
pub use grads::{clip_grad_norm, global_norm, missing_or_zero_grads, GradAccumulator};
pub use loop_state::{dropout, dropout_mask, epoch_order, TrainState};
pub use metrics::{read_metrics, MetricsWriter, StepMetrics};
pub use optim::{is_no_decay, AdamW, AdamWBuilder, AdamWConfig};
pub use params::{named_vars, NamedVar};
pub use progress::{progress_enabled, Progress};
pub use schedule::{warmup_from_fraction, Schedule};
pub use trainer::{run_training, LoopConfig, MicroBatch, RunSummary, ScheduleKind, TrainTask};
