//! Resumable loop position and randomness.
//!
//! Exact resume requires that every random choice of a run come from state
//! that is checkpointed. [`TrainState`] provides two sources:
//!
//! * the data order of an epoch, a permutation derived only from the run seed
//!   and the epoch number, so a resumed run recomputes it and skips the
//!   micro-batches already consumed ([`TrainState::micro_batch`]);
//! * a [`ChaCha8Rng`] stream for everything drawn during forward passes
//!   (dropout masks, sampling), saved and restored with the checkpoint.
//!
//! Checkpoints must be taken at optimizer-step boundaries (no partially
//! accumulated gradients).

use candle_core::{DType, Device, Shape, Tensor};
use kd_core::rng::{below_by_multiply, shuffle_with};
use rand::RngCore;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Stream of [`TrainState::rng`]; epoch orders use stream `1 + epoch`.
const MODEL_STREAM: u64 = 0;

/// Position of a training run and its random state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// Seed of the run; fixes every epoch's data order.
    pub seed: u64,
    /// Optimizer steps completed.
    pub step: u64,
    /// Current epoch (0-based).
    pub epoch: u64,
    /// Micro-batches of the current epoch already consumed.
    pub micro_batch: u64,
    /// Random stream for forward-pass randomness (dropout, sampling).
    pub rng: ChaCha8Rng,
}

impl TrainState {
    /// Fresh state at step 0 of epoch 0.
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(MODEL_STREAM);
        Self {
            seed,
            step: 0,
            epoch: 0,
            micro_batch: 0,
            rng,
        }
    }

    /// Random stream for forward-pass randomness.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Permutation of `0..n` for the current epoch; depends only on the seed
    /// and the epoch number.
    pub fn epoch_order(&self, n: usize) -> Vec<usize> {
        epoch_order(self.seed, self.epoch, n)
    }

    /// Micro-batches of the current epoch not yet consumed, as
    /// `(index_in_epoch, example_indices)`. The last batch is kept even if
    /// short unless `drop_last` is set.
    pub fn remaining_batches(
        &self,
        n: usize,
        batch_size: usize,
        drop_last: bool,
    ) -> Result<Vec<(u64, Vec<usize>)>> {
        if batch_size == 0 {
            return Err(Error::InvalidConfig("batch_size must be > 0".into()));
        }
        let order = self.epoch_order(n);
        let skip = usize::try_from(self.micro_batch).unwrap_or(usize::MAX);
        Ok(order
            .chunks(batch_size)
            .enumerate()
            .filter(|(_, c)| !drop_last || c.len() == batch_size)
            .skip(skip)
            .map(|(i, c)| (i as u64, c.to_vec()))
            .collect())
    }

    /// Records that one micro-batch of the current epoch was consumed.
    pub fn advance_micro_batch(&mut self) {
        self.micro_batch += 1;
    }

    /// Records a completed optimizer step.
    pub fn advance_step(&mut self) {
        self.step += 1;
    }

    /// Moves to the start of the next epoch.
    pub fn next_epoch(&mut self) {
        self.epoch += 1;
        self.micro_batch = 0;
    }
}

/// Permutation of `0..n` for `epoch` of a run seeded with `seed`
/// (Fisher-Yates over a dedicated ChaCha8 stream; stable across versions of
/// `rand`).
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch.wrapping_add(1).max(1));
    let mut order: Vec<usize> = (0..n).collect();
    shuffle_with(&mut order, &mut rng, below_by_multiply);
    order
}

/// Inverted-dropout mask drawn from `rng`: each element is `1 / (1 - p)` with
/// probability `1 - p` and 0 otherwise. Multiply activations by it.
pub fn dropout_mask(
    rng: &mut impl RngCore,
    shape: impl Into<Shape>,
    p: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::InvalidConfig(format!(
            "dropout probability {p} is not in [0, 1)"
        )));
    }
    let shape = shape.into();
    let keep = (1.0 / (1.0 - p)) as f32;
    // Drop when a uniform 24-bit draw falls below p.
    let cut = (p * (1u32 << 24) as f64) as u32;
    let data: Vec<f32> = (0..shape.elem_count())
        .map(|_| {
            if (rng.next_u32() >> 8) < cut {
                0.0
            } else {
                keep
            }
        })
        .collect();
    Ok(Tensor::from_vec(data, shape, device)?.to_dtype(dtype)?)
}

/// Applies inverted dropout to `xs` with a mask from `rng` (identity when
/// `p == 0`, without consuming randomness).
pub fn dropout(rng: &mut impl RngCore, xs: &Tensor, p: f64) -> Result<Tensor> {
    if p == 0.0 {
        return Ok(xs.clone());
    }
    let mask = dropout_mask(rng, xs.shape(), p, xs.dtype(), xs.device())?;
    Ok(xs.mul(&mask)?)
}
