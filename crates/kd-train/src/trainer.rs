//! The training loop every kd trainer runs: micro-batches, gradient accumulation, clipping,
//! schedule, AdamW, NaN guard, JSONL metrics, progress bar, periodic atomic checkpoints and
//! exact resume.
//!
//! A trainer supplies a [`TrainTask`]: the batches of an epoch (a pure function of the epoch,
//! so a resumed run sees the same order) and the loss of one micro-batch. All randomness inside
//! a micro-batch (dropout) must come from the RNG the loop passes in; it is checkpointed.

use crate::checkpoint::{CheckpointManager, TrainerState};
use crate::error::{Error, Result};
use crate::grads::{clip_grad_norm, GradAccumulator};
use crate::loop_state::TrainState;
use crate::metrics::MetricsWriter;
use crate::optim::AdamW;
use crate::progress::Progress;
use crate::schedule::Schedule;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The learning-rate schedule's shape (in settings: `linear` or `constant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Warmup, then linear decay to 0 at the last step (Hugging Face's default).
    #[default]
    Linear,
    /// Warmup, then constant.
    Constant,
}

/// Loop settings (serde, so pipelines can carry them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoopConfig {
    /// Seed of the data order and dropout.
    pub seed: u64,
    /// Passes over the data.
    pub epochs: u64,
    /// Stop after this many optimizer steps (overrides `epochs` when smaller).
    pub max_steps: Option<u64>,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Global-norm clipping threshold (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Peak learning rate.
    pub lr: f64,
    /// `linear` (warmup then linear decay) or `constant` (warmup then constant).
    pub schedule: ScheduleKind,
    /// Fraction of the total steps used for warmup.
    pub warmup_fraction: f64,
    /// Save a checkpoint every this many optimizer steps (0: only at epoch ends).
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    pub keep_last: usize,
    /// Write a metrics line every this many steps.
    pub log_every: u64,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            epochs: 1,
            max_steps: None,
            grad_accum: 1,
            max_grad_norm: Some(1.0),
            lr: 5e-5,
            schedule: ScheduleKind::Linear,
            warmup_fraction: 0.0,
            checkpoint_every: 200,
            keep_last: 2,
            log_every: 10,
        }
    }
}

impl LoopConfig {
    /// The schedule for a run of `total_steps` optimizer steps.
    pub fn resolve_schedule(&self, total_steps: u64) -> Result<Schedule> {
        let warmup = crate::schedule::warmup_from_fraction(total_steps, self.warmup_fraction)?;
        Ok(match self.schedule {
            ScheduleKind::Linear => Schedule::LinearWarmupDecay {
                warmup_steps: warmup,
                total_steps,
            },
            ScheduleKind::Constant => Schedule::Constant {
                warmup_steps: warmup,
            },
        })
    }
}

/// The loss of one micro-batch.
pub struct MicroBatch {
    /// Scalar loss to minimise (mean over the micro-batch).
    pub loss: Tensor,
    /// Named loss terms for the metrics log.
    pub terms: BTreeMap<String, f64>,
    /// Tokens processed, for throughput.
    pub tokens: usize,
}

/// What a trainer provides to the loop.
pub trait TrainTask {
    /// Micro-batches of `epoch` as lists of example indices; must depend only on the epoch (and
    /// fixed seeds) so that a resumed run continues with the same order.
    fn epoch_batches(&mut self, epoch: u64) -> Result<Vec<Vec<usize>>>;

    /// Forward pass and loss of the micro-batch at `index` of the epoch's list (its example
    /// indices are `batch`); dropout draws from `rng`.
    fn micro_batch(
        &mut self,
        index: usize,
        batch: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> Result<MicroBatch>;

    /// Called after each epoch (evaluation, keeping the best model); the returned JSON object
    /// is written to the metrics log.
    fn end_of_epoch(&mut self, _epoch: u64, _step: u64) -> Result<serde_json::Value> {
        Ok(serde_json::Value::Null)
    }

    /// Task state to carry in checkpoints (e.g. best dev score so far).
    fn task_state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Restores what [`TrainTask::task_state`] returned.
    fn restore_task_state(&mut self, _state: &serde_json::Value) -> Result<()> {
        Ok(())
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Optimizer steps taken in total (including before a resume).
    pub steps: u64,
    /// Step the run resumed from, if it did.
    pub resumed_from: Option<u64>,
    /// Mean loss over the last logging window.
    pub last_loss: f64,
    /// Tokens per second of this process.
    pub tokens_per_s: f64,
    /// Where checkpoints live.
    pub checkpoints: PathBuf,
}

/// Runs `task` to completion under `cfg`, writing `run_dir/metrics.jsonl` and
/// `run_dir/checkpoints/`, resuming from the latest checkpoint there if one exists.
pub fn run_training(
    task: &mut dyn TrainTask,
    varmap: &VarMap,
    opt: &mut AdamW,
    cfg: &LoopConfig,
    run_dir: &Path,
    device: &Device,
) -> Result<RunSummary> {
    if cfg.grad_accum == 0 {
        return Err(Error::InvalidConfig("grad_accum must be > 0".into()));
    }
    let ckpt_dir = run_dir.join("checkpoints");
    let manager = CheckpointManager::new(&ckpt_dir, cfg.keep_last.max(1))?;
    let per_epoch = task.epoch_batches(0)?.len() as u64;
    if per_epoch == 0 {
        return Err(Error::InvalidConfig(
            "epoch 0 has no micro-batch: there is no training data".into(),
        ));
    }
    let steps_per_epoch = per_epoch.div_ceil(cfg.grad_accum as u64).max(1);
    let mut total = steps_per_epoch * cfg.epochs;
    if let Some(m) = cfg.max_steps {
        total = total.min(m);
    }
    let schedule = cfg.resolve_schedule(total)?;
    let mut state = TrainState::new(cfg.seed);
    let mut resumed_from = None;
    if let Some(ck) = manager.load_latest(device)? {
        ck.restore_weights(varmap)?;
        ck.restore_optimizer(opt)?;
        task.restore_task_state(&ck.state.extra)?;
        state = ck.state.train.clone();
        resumed_from = Some(state.step);
    }
    let mut metrics = match resumed_from {
        Some(step) => MetricsWriter::open_resumed(run_dir.join("metrics.jsonl"), step)?,
        None => MetricsWriter::open(run_dir.join("metrics.jsonl"))?,
    };
    let progress = Progress::new(total, "train");
    progress.set_position(state.step);
    let vars = opt.trainable();
    let mut accum = GradAccumulator::new(vars.clone());
    let started = Instant::now();
    let (mut tokens, mut window_loss, mut window_n) = (0usize, 0f64, 0usize);
    let mut window_terms: BTreeMap<String, f64> = BTreeMap::new();
    let mut phases = PhaseTimes::default();
    let mut last_loss = f64::NAN;
    let save = |state: &TrainState, opt: &AdamW, extra: serde_json::Value| {
        manager.save(
            varmap,
            opt,
            &TrainerState::new(state.clone(), schedule, extra),
        )
    };
    'epochs: while state.epoch < cfg.epochs && state.step < total {
        let batches = task.epoch_batches(state.epoch)?;
        let n = batches.len() as u64;
        if n == 0 {
            return Err(Error::InvalidConfig(format!(
                "epoch {} has no micro-batch: there is no training data for it",
                state.epoch
            )));
        }
        while state.micro_batch < n {
            let t0 = Instant::now();
            let index = state.micro_batch as usize;
            let mb = task.micro_batch(index, &batches[index], state.rng())?;
            let loss = mb
                .loss
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            let t1 = Instant::now();
            phases.forward_s += (t1 - t0).as_secs_f64();
            if !loss.is_finite() {
                return Err(non_finite("loss", loss, state.step, &ckpt_dir));
            }
            accum.add(&mb.loss.backward()?)?;
            phases.backward_s += t1.elapsed().as_secs_f64();
            state.advance_micro_batch();
            tokens += mb.tokens;
            window_loss += loss;
            window_n += 1;
            for (k, v) in mb.terms {
                *window_terms.entry(k).or_default() += v;
            }
            let boundary = accum.micro_batches() == cfg.grad_accum || state.micro_batch == n;
            if !boundary {
                continue;
            }
            let t2 = Instant::now();
            let mut grads = accum.finish()?;
            let norm = match cfg.max_grad_norm {
                Some(max) => clip_grad_norm(&mut grads, &vars, max)?,
                None => crate::grads::global_norm(&grads, &vars)?,
            };
            if !norm.is_finite() {
                return Err(non_finite("gradient norm", norm, state.step, &ckpt_dir));
            }
            let lr = schedule.lr(cfg.lr, state.step);
            opt.set_lr(lr)?;
            opt.step(&grads)?;
            phases.optimizer_s += t2.elapsed().as_secs_f64();
            phases.steps += 1;
            state.advance_step();
            progress.set_position(state.step);
            if state.step.is_multiple_of(cfg.log_every.max(1)) || state.step == total {
                last_loss = window_loss / window_n.max(1) as f64;
                let elapsed = started.elapsed().as_secs_f64();
                let mut line = serde_json::json!({
                    "step": state.step, "epoch": state.epoch, "lr": lr, "loss": last_loss,
                    "grad_norm": norm, "tokens_per_s": tokens as f64 / elapsed.max(1e-9),
                    "elapsed_s": elapsed,
                });
                for (k, v) in &window_terms {
                    line[k] = serde_json::json!(v / window_n.max(1) as f64);
                }
                phases.drain_into(&mut line);
                metrics.write(&line)?;
                progress.set_message(format!("loss {last_loss:.4}"));
                (window_loss, window_n) = (0.0, 0);
                window_terms.clear();
            }
            // The last step is checkpointed below, after its evaluation, so that a checkpoint
            // at `total` always means a finished run.
            if cfg.checkpoint_every > 0
                && state.step.is_multiple_of(cfg.checkpoint_every)
                && state.step < total
            {
                save(&state, opt, task.task_state())?;
            }
            if state.step >= total {
                break 'epochs;
            }
        }
        let eval = task.end_of_epoch(state.epoch, state.step)?;
        if !eval.is_null() {
            metrics.write(
                &serde_json::json!({"step": state.step, "epoch": state.epoch, "eval": eval}),
            )?;
        }
        state.next_epoch();
        save(&state, opt, task.task_state())?;
    }
    // A rerun of a finished run takes no step: its final evaluation is already logged.
    let finished_before = resumed_from == Some(state.step);
    if (state.micro_batch > 0 || state.epoch < cfg.epochs) && !finished_before {
        // Stopped by max_steps inside an epoch: evaluate and checkpoint the final state.
        let eval = task.end_of_epoch(state.epoch, state.step)?;
        if !eval.is_null() {
            metrics.write(
                &serde_json::json!({"step": state.step, "epoch": state.epoch, "eval": eval}),
            )?;
        }
        save(&state, opt, task.task_state())?;
    }
    progress.finish();
    Ok(RunSummary {
        steps: state.step,
        resumed_from,
        last_loss,
        tokens_per_s: tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
        checkpoints: ckpt_dir,
    })
}

fn non_finite(what: &'static str, value: f64, step: u64, dir: &Path) -> Error {
    Error::NonFinite {
        what,
        value,
        step,
        checkpoints: dir.to_path_buf(),
    }
}

/// Wall time of the step's phases over a logging window, reported per optimizer step.
#[derive(Debug, Default)]
struct PhaseTimes {
    forward_s: f64,
    backward_s: f64,
    optimizer_s: f64,
    steps: u64,
}

impl PhaseTimes {
    /// Writes the per-step means (`forward_s` includes fetching the batch, `optimizer_s`
    /// clipping) into `line` and starts a new window.
    fn drain_into(&mut self, line: &mut serde_json::Value) {
        let n = self.steps.max(1) as f64;
        line["forward_s"] = serde_json::json!(self.forward_s / n);
        line["backward_s"] = serde_json::json!(self.backward_s / n);
        line["optimizer_s"] = serde_json::json!(self.optimizer_s / n);
        *self = Self::default();
    }
}
