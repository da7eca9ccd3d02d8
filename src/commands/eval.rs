//! `kd eval`: a student against a held-out teacher cache: masked-token accuracy next to the
//! teacher's, agreement with the teacher, KL over the cached top-k, hidden-state cosine, and
//! size and speed against the teacher. With `--task-model`: classifiers (BERT, BiLSTM) on a
//! task split, next to a classifier teacher (accuracy, macro-F1, agreement, retention, size,
//! throughput, latency).

use super::{check_model_dir, GlobalArgs};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use kd_data::{TaskData, TaskSplit};
use kd_student::eval::{
    evaluate_layers, evaluate_student, run_suite, run_task_eval, EvalOptions, TaskEvalSuite,
};
use kd_student::layer_map::LayerMatch;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `kd eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Student model directory (a BertForMaskedLM, as `kd train` saves it).
    #[arg(
        long,
        required_unless_present = "task_model",
        conflicts_with = "task_model"
    )]
    student: Option<PathBuf>,
    /// Held-out cache directory (e.g. from `kd precompute --split heldout`).
    #[arg(
        long,
        required_unless_present = "task_model",
        conflicts_with = "task_model"
    )]
    cache: Option<PathBuf>,
    /// Teacher model directory: also time the teacher on the same batches (with
    /// `--task-model`: the classifier teacher, scored and timed on the same split).
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Cache records (task examples) per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Evaluate at most N records (in cache order).
    #[arg(long, value_name = "N", conflicts_with = "task_model")]
    max_records: Option<usize>,
    /// Time each batch N times and keep the fastest (steadier on a busy machine).
    #[arg(long, value_name = "N", default_value_t = 1)]
    timing_repeats: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also compare mapped layers (TinyBERT students): `uniform` (n = g(m)), `last`, or
    /// `S:T,S:T,...` pairs of student and teacher layers (0 = embeddings).
    #[arg(long, value_name = "MAP", conflicts_with = "task_model")]
    layers: Option<String>,
    /// The run's projections.safetensors, for layers of different widths.
    #[arg(long, value_name = "FILE", conflicts_with = "task_model")]
    projections: Option<PathBuf>,
    #[command(flatten)]
    task: TaskFlags,
}

/// The task form of `kd eval`: classifiers on a task split.
#[derive(Debug, Args)]
struct TaskFlags {
    /// Classifier to evaluate on a task split (repeatable): a BertForSequenceClassification
    /// or kd-bilstm directory.
    #[arg(long = "task-model", value_name = "DIR")]
    task_model: Vec<PathBuf>,
    /// Task: the movie-review sentiment file (fixed split by id).
    #[arg(long, conflicts_with_all = ["task_train", "task_dev"], requires = "task_model")]
    movie_reviews: Option<PathBuf>,
    /// Task: training file (.tsv with header, or .jsonl; it fixes named labels' ids).
    #[arg(long, requires_all = ["task_dev", "task_model"])]
    task_train: Option<PathBuf>,
    /// Task: development file.
    #[arg(long, requires = "task_train")]
    task_dev: Option<PathBuf>,
    /// Task: test file.
    #[arg(long)]
    task_test: Option<PathBuf>,
    /// Task: text column.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Task: second text column of pair tasks.
    #[arg(long)]
    text_pair_column: Option<String>,
    /// Task: label column.
    #[arg(long, default_value = "label")]
    label_column: String,
    /// Task: `class` (integer ids), `named` (strings) or `regression`.
    #[arg(long, default_value = "class")]
    label_kind: String,
    /// Task: the split to evaluate: train, dev or test.
    #[arg(long, default_value = "test")]
    split: String,
    /// Task: evaluate only the first N examples of the split.
    #[arg(long, value_name = "N")]
    max_examples: Option<usize>,
    /// Task: tokens per example, [CLS] and [SEP] included.
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// Task: single-sentence calls per model whose median is the latency.
    #[arg(long, value_name = "N", default_value_t = 20)]
    latency_calls: usize,
    /// Task: also write the report as JSON to FILE (atomically).
    #[arg(long, value_name = "FILE", requires = "task_model")]
    out: Option<PathBuf>,
}

impl TaskFlags {
    /// The task data the flags name.
    fn data(&self) -> Result<TaskData> {
        if let Some(p) = &self.movie_reviews {
            return Ok(TaskData::MovieReviews { path: p.clone() });
        }
        let (Some(train), Some(dev)) = (&self.task_train, &self.task_dev) else {
            bail!("--task-model needs --movie-reviews FILE or --task-train FILE --task-dev FILE");
        };
        Ok(TaskData::Files {
            train: train.clone(),
            dev: dev.clone(),
            test: self.task_test.clone(),
            text: self.text_column.clone(),
            text_pair: self.text_pair_column.clone(),
            label: self.label_column.clone(),
            label_kind: self.label_kind.clone(),
        })
    }
}

/// A `--layers` value as a layer match.
fn parse_layer_map(text: &str) -> Result<LayerMatch> {
    let map = match text {
        "uniform" => serde_json::json!({"map": "uniform"}),
        "last" => serde_json::json!({}),
        pairs => {
            let list: Vec<[usize; 2]> = pairs
                .split(',')
                .map(|p| {
                    let (s, t) = p.split_once(':').context("expected S:T")?;
                    Ok([s.trim().parse()?, t.trim().parse()?])
                })
                .collect::<Result<_>>()
                .with_context(|| format!("--layers {text:?}: expected uniform, last or S:T,..."))?;
            serde_json::json!({ "map": list })
        }
    };
    Ok(serde_json::from_value(map)?)
}

/// Runs the task form of `kd eval`.
fn run_task(a: &EvalArgs, device: &Device) -> Result<()> {
    let t = &a.task;
    let suite = TaskEvalSuite {
        split: super::parse_choice::<TaskSplit>("split", &t.split)?,
        teacher: a.teacher.clone(),
        batch_size: a.batch_size,
        max_len: t.max_len,
        max_examples: t.max_examples,
        timing_repeats: a.timing_repeats,
        latency_calls: t.latency_calls,
        out: t.out.clone(),
        ..TaskEvalSuite::new(t.data()?, t.task_model.clone())
    };
    let report = run_task_eval(&suite, &|dir| super::predict::load_classifier(dir, device))?;
    if a.json {
        super::print_json(&report)
    } else {
        super::print_stdout(&report.to_string())
    }
}

/// Runs a pipeline's `eval` step (a held-out cache, or classifiers on a task), printing its
/// table to standard error; returns its report.
pub(crate) fn run_step(
    step: &crate::pipeline::EvalStep,
    device: &Device,
) -> Result<serde_json::Value> {
    use crate::pipeline::EvalStep;
    Ok(match step {
        EvalStep::Cache(c) => {
            let report = run_suite(c, device)?;
            for r in &report.students {
                eprintln!("{r}");
            }
            eprint!("{report}");
            serde_json::to_value(report)?
        }
        EvalStep::Task(c) => {
            let report = run_task_eval(c, &|dir| super::predict::load_classifier(dir, device))?;
            eprint!("{report}");
            serde_json::to_value(report)?
        }
    })
}

/// Runs `kd eval`.
pub fn run(a: &EvalArgs, global: &GlobalArgs) -> Result<()> {
    if !a.task.task_model.is_empty() {
        return run_task(a, &global.device()?);
    }
    let t = &a.task;
    if t.movie_reviews.is_some() || t.task_train.is_some() || t.out.is_some() {
        bail!("--movie-reviews, --task-train and --out go with --task-model DIR");
    }
    let (Some(student), Some(cache)) = (&a.student, &a.cache) else {
        bail!("kd eval needs --student DIR --cache DIR, or --task-model DIR with a task");
    };
    check_model_dir(student)?;
    if let Some(t) = &a.teacher {
        check_model_dir(t)?;
    }
    let opts = EvalOptions {
        teacher: a.teacher.clone(),
        batch_size: a.batch_size,
        max_records: a.max_records,
        timing_repeats: a.timing_repeats,
    };
    let report = evaluate_student(student, cache, &opts, &global.device()?)
        .with_context(|| format!("cannot evaluate {}", student.display()))?;
    let mut report = report;
    if let Some(map) = &a.layers {
        report.layer_metrics = Some(
            evaluate_layers(
                student,
                cache,
                &parse_layer_map(map)?,
                a.projections.as_deref(),
                a.batch_size,
                a.max_records,
                &global.device()?,
            )
            .with_context(|| format!("cannot compare the layers of {}", student.display()))?,
        );
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{report}")?;
    }
    Ok(())
}
