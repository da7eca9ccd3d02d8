//! `kd eval`: a student against a held-out teacher cache: masked-token accuracy next to the
//! teacher's, agreement with the teacher, KL over the cached top-k, hidden-state cosine, and
//! size and speed against the teacher.

use super::{check_model_dir, GlobalArgs};
use anyhow::{Context, Result};
use clap::Args;
use kd_student::eval::{evaluate_layers, evaluate_student, EvalOptions};
use kd_student::layer_map::LayerMatch;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `kd eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Student model directory (a BertForMaskedLM, as `kd train` saves it).
    #[arg(long)]
    student: PathBuf,
    /// Held-out cache directory (e.g. from `kd precompute --split heldout`).
    #[arg(long)]
    cache: PathBuf,
    /// Teacher model directory: also time the teacher on the same batches.
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Cache records per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Evaluate at most N records (in cache order).
    #[arg(long, value_name = "N")]
    max_records: Option<usize>,
    /// Time each batch N times and keep the fastest (steadier on a busy machine).
    #[arg(long, value_name = "N", default_value_t = 1)]
    timing_repeats: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also compare mapped layers (TinyBERT students): `uniform` (n = g(m)), `last`, or
    /// `S:T,S:T,...` pairs of student and teacher layers (0 = embeddings).
    #[arg(long, value_name = "MAP")]
    layers: Option<String>,
    /// The run's projections.safetensors, for layers of different widths.
    #[arg(long, value_name = "FILE")]
    projections: Option<PathBuf>,
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

/// Runs `kd eval`.
pub fn run(a: &EvalArgs, global: &GlobalArgs) -> Result<()> {
    check_model_dir(&a.student)?;
    if let Some(t) = &a.teacher {
        check_model_dir(t)?;
    }
    let opts = EvalOptions {
        teacher: a.teacher.clone(),
        batch_size: a.batch_size,
        max_records: a.max_records,
        timing_repeats: a.timing_repeats,
    };
    let report = evaluate_student(&a.student, &a.cache, &opts, &global.device()?)
        .with_context(|| format!("cannot evaluate {}", a.student.display()))?;
    let mut report = report;
    if let Some(map) = &a.layers {
        report.layer_metrics = Some(
            evaluate_layers(
                &a.student,
                &a.cache,
                &parse_layer_map(map)?,
                a.projections.as_deref(),
                a.batch_size,
                a.max_records,
                &global.device()?,
            )
            .with_context(|| format!("cannot compare the layers of {}", a.student.display()))?,
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
