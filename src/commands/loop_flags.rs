//! The training-loop flags that `kd finetune` and `kd train` share.

use clap::Args;
use kd_train::LoopConfig;

/// Flags over a [`LoopConfig`] (and the batch size): each one given replaces the value from the
/// settings file or the defaults.
#[derive(Debug, Args)]
pub struct LoopFlags {
    /// Passes over the training data (`kd train`: each uses the cache's next masked view).
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Stop after N optimizer steps.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Sequences per micro-batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Seed of data order, dropout and fresh heads.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl LoopFlags {
    /// Writes the given flags into `t`.
    pub fn apply(&self, t: &mut LoopConfig) {
        t.epochs = self.epochs.unwrap_or(t.epochs);
        t.max_steps = self.max_steps.or(t.max_steps);
        t.lr = self.lr.unwrap_or(t.lr);
        t.grad_accum = self.grad_accum.unwrap_or(t.grad_accum);
        t.seed = self.seed.unwrap_or(t.seed);
    }
}
