//! `kd eval`: a student against a held-out teacher cache: masked-token accuracy next to the
//! teacher's, agreement with the teacher, KL over the cached top-k, hidden-state cosine, and
//! size and speed against the teacher.

use super::{check_model_dir, GlobalArgs};
use anyhow::{Context, Result};
use clap::Args;
use kd_student::eval::{evaluate_student, EvalOptions};
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
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{report}")?;
    }
    Ok(())
}
