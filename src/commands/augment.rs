//! `kd augment`: the transfer set of task-specific distillation, a task's examples followed by
//! augmented copies (TinyBERT's teacher-MLM word replacement or Tang et al.'s rules), as JSONL.

use super::GlobalArgs;
use anyhow::{Context, Result};
use clap::Args;
use kd_augment::{run_augment, AugmentConfig};
use std::path::PathBuf;

/// Arguments of `kd augment`.
#[derive(Debug, Args)]
pub struct AugmentArgs {
    /// Task file: movieReviewSnippets_GroundTruth.txt (with --split), or a JSONL / TSV task file.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Output JSONL transfer set (written atomically).
    #[arg(long)]
    out: Option<PathBuf>,
    /// `tinybert` (teacher MLM + embedding neighbours) or `tang` (mask, POS, n-gram).
    #[arg(long)]
    method: Option<String>,
    /// Settings file: the table of a pipeline `augment` step; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a setting, e.g. `--set tang.mask_prob=0.2` (repeatable; flags still win).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Also write the transfer set as Parquet beside the JSONL (same name, .parquet).
    #[arg(long)]
    parquet: bool,
    /// Split of the movie-review file: train, dev or test.
    #[arg(long)]
    split: Option<String>,
    /// Text column / field of a task file.
    #[arg(long)]
    text: Option<String>,
    /// Second text of a pair (column / field).
    #[arg(long)]
    text_pair: Option<String>,
    /// Label column / field.
    #[arg(long)]
    label: Option<String>,
    /// Labels: class, named or regression (the ratings, for the movie-review file).
    #[arg(long)]
    label_kind: Option<String>,
    /// Augmented copies drawn per example (reference: 20 for SST-2; duplicates are dropped).
    #[arg(long)]
    copies: Option<usize>,
    /// Seed of every draw (same seed, same bytes).
    #[arg(long)]
    seed: Option<u64>,
    /// Augment only the first N examples, in file order (the movie-review file lists positive
    /// reviews first: --sample draws across the file).
    #[arg(long)]
    limit: Option<usize>,
    /// Augment a seeded sample of N examples (drawn with --seed, kept in file order)
    #[arg(long, value_name = "N")]
    sample: Option<usize>,
    /// Teacher with an MLM head (tinybert).
    #[arg(long, value_name = "DIR")]
    teacher: Option<PathBuf>,
    /// Masked inputs per teacher forward pass (tinybert).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Probability that a candidate word is replaced (tinybert, reference 0.4).
    #[arg(long)]
    replace_prob: Option<f64>,
    /// Brill's lexicon, lexicon.js of npm pos@0.4.2 (tang; scripts/fetch-assets.sh puts it in
    /// assets/pos/).
    #[arg(long, value_name = "FILE")]
    lexicon: Option<PathBuf>,
}

/// Runs `kd augment`.
pub fn run(a: &AugmentArgs, global: &GlobalArgs) -> Result<()> {
    let mut c: AugmentConfig =
        crate::settings::from_file(a.config.as_deref(), "augment", "augment", &a.overrides)?;
    c.input = a.input.clone().unwrap_or(c.input);
    c.out = a.out.clone().unwrap_or(c.out);
    c.parquet |= a.parquet;
    if let Some(m) = &a.method {
        c.method = super::parse_choice("method", m)?;
    }
    if let Some(s) = &a.split {
        c.split = super::parse_choice("split", s)?;
    }
    c.text = a.text.clone().unwrap_or(c.text);
    c.text_pair = a.text_pair.clone().or(c.text_pair);
    c.label = a.label.clone().unwrap_or(c.label);
    c.label_kind = a.label_kind.clone().unwrap_or(c.label_kind);
    c.copies = a.copies.unwrap_or(c.copies);
    c.seed = a.seed.unwrap_or(c.seed);
    c.limit = a.limit.or(c.limit);
    c.sample = a.sample.or(c.sample);
    c.teacher = a.teacher.clone().or(c.teacher);
    c.batch_size = a.batch_size.unwrap_or(c.batch_size);
    c.tinybert.replace_prob = a.replace_prob.unwrap_or(c.tinybert.replace_prob);
    c.lexicon = a.lexicon.clone().unwrap_or(c.lexicon);
    let report = run_augment(&c, &global.device()?)
        .with_context(|| format!("augment {}", c.input.display()))?;
    super::print_json(&report)?;
    Ok(())
}
