//! `kd train`: train a student from a teacher cache, without the teacher in memory.

use super::loop_flags::LoopFlags;
use super::GlobalArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use kd_student::distil::{DistilConfig, HeadKind, LossSpec, SoftTargetSource};
use kd_student::init::parse_layers;
use std::path::PathBuf;

/// Arguments of `kd train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The teacher cache (from `kd precompute`).
    #[arg(long)]
    cache: PathBuf,
    /// Output directory (model/, metrics.jsonl, checkpoints/, report.json); a rerun resumes.
    #[arg(long)]
    out: PathBuf,
    /// Settings file: the table of a pipeline `train` step (cache, student, [[loss]], train,
    /// ...); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a setting, e.g. `--set train.lr=1e-4` (repeatable; flags still win).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// DistilBERT init: the teacher directory whose layers, embeddings and MLM head are copied.
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Teacher layers to copy, 0-based (e.g. 0,2,4).
    #[arg(long)]
    layers: Option<String>,
    /// Or copy --layers from this model instead of the cache's teacher (e.g. the checkpoint the
    /// teacher was fine-tuned from: a baseline that never sees the teacher).
    #[arg(long, value_name = "MODEL_DIR")]
    init_from: Option<PathBuf>,
    /// Or a fresh student from this config.json (with --tokenizer-from).
    #[arg(long)]
    student_config: Option<PathBuf>,
    /// Directory whose tokenizer a fresh student uses.
    #[arg(long)]
    tokenizer_from: Option<PathBuf>,
    /// The student's head: `mlm`, or `classifier` (task distillation from a logits cache,
    /// with the labels of the teacher that wrote it).
    #[arg(long)]
    head: Option<String>,
    /// A BiLSTM student (Tang et al.) over the vocabulary of --teacher instead of a BERT one;
    /// its sizes from the settings' `student.bilstm` table (defaults: 150 units per
    /// direction, the teacher's embeddings copied).
    #[arg(long)]
    bilstm: bool,
    #[command(flatten)]
    training: LoopFlags,
    /// Soft-target temperature.
    #[arg(long)]
    temperature: Option<f32>,
    /// Weights of the soft_ce, mlm_ce and hidden_cos losses (e.g. 5,2,1; 0 drops one).
    #[arg(long)]
    weights: Option<String>,
    /// Soft targets from `topk` or `sampled` records.
    #[arg(long)]
    soft_targets: Option<String>,
    /// Online reference: run this teacher in process on every batch (same inputs, masks and
    /// order as the cache) instead of reading its stored targets.
    #[arg(long, value_name = "TEACHER_DIR")]
    online: Option<PathBuf>,
}

/// Runs `kd train`.
pub fn run(a: &TrainArgs, global: &GlobalArgs) -> Result<()> {
    let mut c: DistilConfig =
        crate::settings::from_file(a.config.as_deref(), "train", "train", &a.overrides)?;
    c.cache = a.cache.clone();
    c.out = a.out.clone();
    if a.teacher.is_some() {
        c.student.teacher = a.teacher.clone();
    }
    if let Some(l) = &a.layers {
        c.student.layers = parse_layers(l)?;
    }
    if a.init_from.is_some() {
        c.student.init = a.init_from.clone();
    }
    if a.student_config.is_some() {
        c.student.config = a.student_config.clone();
    }
    if a.tokenizer_from.is_some() {
        c.student.tokenizer_from = a.tokenizer_from.clone();
    }
    if a.bilstm && c.student.bilstm.is_none() {
        c.student.bilstm = Some(serde_json::json!({}));
    }
    if let Some(h) = &a.head {
        c.student.head = super::parse_choice::<HeadKind>("head", h)?;
    }
    a.training.apply(&mut c.train);
    c.batch_size = a.training.batch_size.unwrap_or(c.batch_size);
    if let Some(w) = &a.weights {
        let v: Vec<f64> = w
            .split(',')
            .map(|x| x.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("--weights {w:?}: expected three numbers like 5,2,1"))?;
        let [ce, mlm, cos] = v[..] else {
            bail!("--weights {w:?}: expected three numbers (ce, mlm, cos)");
        };
        c.loss.set_distil_weights(ce, mlm, cos);
    }
    let source = match &a.soft_targets {
        Some(s) => Some(super::parse_choice::<SoftTargetSource>("soft-targets", s)?),
        None => None,
    };
    if a.temperature.is_some() || source.is_some() {
        let Some(LossSpec::SoftCe(soft)) = c.loss.entry_mut("soft_ce") else {
            bail!("--temperature and --soft-targets set the soft_ce loss, which the list lacks");
        };
        soft.temperature = a.temperature.unwrap_or(soft.temperature);
        soft.source = source.unwrap_or(soft.source);
    }
    if a.online.is_some() {
        c.online = a.online.clone();
    }
    let report = super::train_step::train(&c, &global.device()?)
        .with_context(|| format!("train from {}", c.cache.display()))?;
    super::print_json(&report)?;
    Ok(())
}
