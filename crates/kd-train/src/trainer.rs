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
    let manager = CheckpointManager::new(run_dir.join("checkpoints"), cfg.keep_last.max(1))?;
    let (total, schedule) = plan_steps(task, cfg)?;
    let mut run = Run::open(
        task, varmap, opt, cfg, run_dir, device, manager, total, schedule,
    )?;
    run.epochs(task, opt)?;
    run.finish(task, opt)
}

/// The number of optimizer steps of the run and its learning-rate schedule.
fn plan_steps(task: &mut dyn TrainTask, cfg: &LoopConfig) -> Result<(u64, Schedule)> {
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
    Ok((total, cfg.resolve_schedule(total)?))
}

/// A run in progress: where it is, what it has accumulated, where it writes.
struct Run<'a> {
    cfg: &'a LoopConfig,
    varmap: &'a VarMap,
    manager: CheckpointManager,
    schedule: Schedule,
    total: u64,
    state: TrainState,
    resumed_from: Option<u64>,
    metrics: MetricsWriter,
    progress: Progress,
    vars: Vec<(String, candle_core::Var)>,
    accum: GradAccumulator,
    started: Instant,
    /// Tokens since this process started.
    tokens: usize,
    /// Loss and terms summed over the micro-batches of the current logging window.
    window_loss: f64,
    window_n: usize,
    window_terms: BTreeMap<String, f64>,
    phases: PhaseTimes,
    last_loss: f64,
}

impl<'a> Run<'a> {
    /// Restores the latest checkpoint, if any, and opens the metrics log and progress bar.
    #[allow(clippy::too_many_arguments)]
    fn open(
        task: &mut dyn TrainTask,
        varmap: &'a VarMap,
        opt: &mut AdamW,
        cfg: &'a LoopConfig,
        run_dir: &Path,
        device: &Device,
        manager: CheckpointManager,
        total: u64,
        schedule: Schedule,
    ) -> Result<Self> {
        let mut state = TrainState::new(cfg.seed);
        let mut resumed_from = None;
        if let Some(ck) = manager.load_latest(device)? {
            ck.restore_weights(varmap)?;
            ck.restore_optimizer(opt)?;
            task.restore_task_state(&ck.state.extra)?;
            state = ck.state.train.clone();
            resumed_from = Some(state.step);
        }
        let metrics = match resumed_from {
            Some(step) => MetricsWriter::open_resumed(run_dir.join("metrics.jsonl"), step)?,
            None => MetricsWriter::open(run_dir.join("metrics.jsonl"))?,
        };
        let progress = Progress::new(total, "train");
        progress.set_position(state.step);
        let vars = opt.trainable();
        let accum = GradAccumulator::new(vars.clone());
        Ok(Self {
            cfg,
            varmap,
            manager,
            schedule,
            total,
            state,
            resumed_from,
            metrics,
            progress,
            vars,
            accum,
            started: Instant::now(),
            tokens: 0,
            window_loss: 0.0,
            window_n: 0,
            window_terms: BTreeMap::new(),
            phases: PhaseTimes::default(),
            last_loss: f64::NAN,
        })
    }

    /// Runs epochs until the last one or the last step; each full epoch ends with the task's
    /// evaluation and a checkpoint.
    fn epochs(&mut self, task: &mut dyn TrainTask, opt: &mut AdamW) -> Result<()> {
        while self.state.epoch < self.cfg.epochs && self.state.step < self.total {
            let batches = task.epoch_batches(self.state.epoch)?;
            let n = batches.len() as u64;
            if n == 0 {
                return Err(Error::InvalidConfig(format!(
                    "epoch {} has no micro-batch: there is no training data for it",
                    self.state.epoch
                )));
            }
            while self.state.micro_batch < n {
                self.micro_batch(task, &batches)?;
                let boundary = self.accum.micro_batches() == self.cfg.grad_accum
                    || self.state.micro_batch == n;
                if !boundary {
                    continue;
                }
                self.optimizer_step(opt)?;
                // The last step is checkpointed by `finish`, after its evaluation, so that a
                // checkpoint at `total` always means a finished run.
                let every = self.cfg.checkpoint_every;
                if every > 0
                    && self.state.step.is_multiple_of(every)
                    && self.state.step < self.total
                {
                    self.save(opt, task.task_state())?;
                }
                if self.state.step >= self.total {
                    return Ok(());
                }
            }
            self.evaluate(task)?;
            self.state.next_epoch();
            self.save(opt, task.task_state())?;
        }
        Ok(())
    }

    /// Forward and backward of the next micro-batch of `batches`, its gradients accumulated.
    fn micro_batch(&mut self, task: &mut dyn TrainTask, batches: &[Vec<usize>]) -> Result<()> {
        let t0 = Instant::now();
        let index = self.state.micro_batch as usize;
        let mb = task.micro_batch(index, &batches[index], self.state.rng())?;
        let loss = mb
            .loss
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        let t1 = Instant::now();
        self.phases.forward_s += (t1 - t0).as_secs_f64();
        if !loss.is_finite() {
            return Err(non_finite(
                "loss",
                loss,
                self.state.step,
                self.manager.dir(),
            ));
        }
        self.accum.add(&mb.loss.backward()?)?;
        self.phases.backward_s += t1.elapsed().as_secs_f64();
        self.state.advance_micro_batch();
        self.tokens += mb.tokens;
        self.window_loss += loss;
        self.window_n += 1;
        for (k, v) in mb.terms {
            *self.window_terms.entry(k).or_default() += v;
        }
        Ok(())
    }

    /// Clipping, the scheduled learning rate and AdamW over the accumulated gradients; logs
    /// the step when the logging window ends.
    fn optimizer_step(&mut self, opt: &mut AdamW) -> Result<()> {
        let t2 = Instant::now();
        let mut grads = self.accum.finish()?;
        let norm = match self.cfg.max_grad_norm {
            Some(max) => clip_grad_norm(&mut grads, &self.vars, max)?,
            None => crate::grads::global_norm(&grads, &self.vars)?,
        };
        if !norm.is_finite() {
            let dir = self.manager.dir();
            return Err(non_finite("gradient norm", norm, self.state.step, dir));
        }
        let lr = self.schedule.lr(self.cfg.lr, self.state.step);
        opt.set_lr(lr)?;
        opt.step(&grads)?;
        self.phases.optimizer_s += t2.elapsed().as_secs_f64();
        self.phases.steps += 1;
        self.state.advance_step();
        self.progress.set_position(self.state.step);
        let step = self.state.step;
        if step.is_multiple_of(self.cfg.log_every.max(1)) || step == self.total {
            self.log_step(lr, norm)?;
        }
        Ok(())
    }

    /// Writes the metrics line of the logging window that just ended and starts a new one.
    fn log_step(&mut self, lr: f64, norm: f64) -> Result<()> {
        let n = self.window_n.max(1) as f64;
        self.last_loss = self.window_loss / n;
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut line = serde_json::json!({
            "step": self.state.step, "epoch": self.state.epoch, "lr": lr,
            "loss": self.last_loss, "grad_norm": norm,
            "tokens_per_s": self.tokens as f64 / elapsed.max(1e-9), "elapsed_s": elapsed,
        });
        for (k, v) in &self.window_terms {
            line[k] = serde_json::json!(v / n);
        }
        self.phases.drain_into(&mut line);
        self.metrics.write(&line)?;
        self.progress
            .set_message(format!("loss {:.4}", self.last_loss));
        (self.window_loss, self.window_n) = (0.0, 0);
        self.window_terms.clear();
        Ok(())
    }

    /// The task's evaluation at the current step, logged when it reports something.
    fn evaluate(&mut self, task: &mut dyn TrainTask) -> Result<()> {
        let eval = task.end_of_epoch(self.state.epoch, self.state.step)?;
        if !eval.is_null() {
            self.metrics.write(&serde_json::json!({
                "step": self.state.step, "epoch": self.state.epoch, "eval": eval
            }))?;
        }
        Ok(())
    }

    /// A checkpoint of the current state.
    fn save(&self, opt: &AdamW, extra: serde_json::Value) -> Result<()> {
        let state = TrainerState::new(self.state.clone(), self.schedule, extra);
        self.manager.save(self.varmap, opt, &state).map(|_| ())
    }

    /// A run stopped by `max_steps` inside an epoch evaluates and checkpoints its final state
    /// (a rerun of a finished run takes no step: its final evaluation is already logged).
    fn finish(mut self, task: &mut dyn TrainTask, opt: &AdamW) -> Result<RunSummary> {
        let finished_before = self.resumed_from == Some(self.state.step);
        let stopped_inside = self.state.micro_batch > 0 || self.state.epoch < self.cfg.epochs;
        if stopped_inside && !finished_before {
            self.evaluate(task)?;
            self.save(opt, task.task_state())?;
        }
        self.progress.finish();
        Ok(RunSummary {
            steps: self.state.step,
            resumed_from: self.resumed_from,
            last_loss: self.last_loss,
            tokens_per_s: self.tokens as f64 / self.started.elapsed().as_secs_f64().max(1e-9),
            checkpoints: self.manager.dir().to_path_buf(),
        })
    }
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
