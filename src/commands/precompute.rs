//! `kd precompute`: run a teacher once over a masked corpus (or task data) and write the
//! distillation cache that `kd train` streams.

use super::GlobalArgs;
use anyhow::{Context, Result};
use clap::Args;
use kd_data::TaskData;
use kd_precompute::sources::DocSplit;
use kd_precompute::{run_precompute, PrecomputeConfig};
use std::path::PathBuf;

/// Arguments of `kd precompute`.
#[derive(Debug, Args)]
pub struct PrecomputeArgs {
    /// Teacher model directory (an MLM head is needed for mlm-* targets).
    #[arg(long)]
    teacher: PathBuf,
    /// Cache directory; rerunning the same command resumes an interrupted run.
    #[arg(long)]
    out: PathBuf,
    /// Settings file: the table of a pipeline `precompute` step; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a setting, e.g. `--set rows_per_shard=256` (repeatable; flags still win).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Corpus files or folders (one paragraph per line).
    #[arg(long, num_args = 1..)]
    corpus: Vec<PathBuf>,
    /// Read JSONL records and take this field as text.
    #[arg(long)]
    text_field: Option<String>,
    /// Read Parquet corpora and take this string column as text.
    #[arg(long)]
    text_column: Option<String>,
    /// Documents held out at the end of the corpus.
    #[arg(long)]
    heldout_docs: Option<usize>,
    /// Which side of the held-out split: all, train or heldout.
    #[arg(long, value_parser = ["all", "train", "heldout"])]
    split: Option<String>,
    /// Keep a seeded sample of at most N sequences.
    #[arg(long)]
    max_sequences: Option<usize>,
    /// Task data: the movie-review sentiment file instead of a corpus.
    #[arg(long)]
    movie_reviews: Option<PathBuf>,
    /// Task split to run: train, dev or test.
    #[arg(long)]
    task_split: Option<String>,
    /// Targets, e.g. `mlm-topk:k=32,hidden:last` or `hidden:0,2,4,6@int8,attention:2,4,6`
    /// (`attention-qk:2,4,6@int8`: those layers' query/key projections instead of their maps;
    /// `attention-input:2,4,6@int8`: their input hidden states, with the teacher's query/key
    /// weights once per cache).
    #[arg(long)]
    targets: Option<String>,
    /// Differently masked views of the corpus.
    #[arg(long)]
    epochs: Option<u32>,
    /// Seed of masking and sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// Longest sequence in tokens.
    #[arg(long)]
    max_len: Option<usize>,
    /// Frequency smoothing of masked positions (DistilBERT: 0.7).
    #[arg(long)]
    mask_smoothing: Option<f64>,
    /// Storage backend: parquet or mmap.
    #[arg(long, value_parser = ["parquet", "mmap"])]
    backend: Option<String>,
    /// Sequences per shard file.
    #[arg(long)]
    rows_per_shard: Option<usize>,
    /// Sequences per teacher forward pass.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Produce only part I of N (`I/N`); join parts with `kd cache merge`.
    #[arg(long)]
    shard: Option<String>,
}

/// Runs `kd precompute`.
pub fn run(a: &PrecomputeArgs, global: &GlobalArgs) -> Result<()> {
    super::check_model_dir(&a.teacher)?;
    let mut c: PrecomputeConfig = crate::settings::from_file(
        a.config.as_deref(),
        "precompute",
        "precompute",
        &a.overrides,
    )?;
    c.teacher = a.teacher.clone();
    c.out = a.out.clone();
    let s = &mut c.source;
    if !a.corpus.is_empty() {
        s.corpus = a.corpus.clone();
    }
    s.text_field = a.text_field.clone().or(s.text_field.take());
    s.text_column = a.text_column.clone().or(s.text_column.take());
    s.heldout_docs = a.heldout_docs.unwrap_or(s.heldout_docs);
    if let Some(split) = &a.split {
        s.split = match split.as_str() {
            "train" => DocSplit::Train,
            "heldout" => DocSplit::Heldout,
            _ => DocSplit::All,
        };
    }
    s.max_sequences = a.max_sequences.or(s.max_sequences);
    if let Some(p) = &a.movie_reviews {
        s.task = Some(TaskData::MovieReviews { path: p.clone() });
    }
    if let Some(t) = &a.task_split {
        s.task_split = super::parse_choice("task-split", t)?;
    }
    s.max_len = a.max_len.unwrap_or(s.max_len);
    if let Some(t) = &a.targets {
        c.targets = t.clone();
    }
    c.epochs = a.epochs.unwrap_or(c.epochs);
    c.seed = a.seed.unwrap_or(c.seed);
    if a.mask_smoothing.is_some() {
        c.mask.smoothing = a.mask_smoothing;
    }
    if let Some(b) = &a.backend {
        c.backend = super::parse_choice("backend", b)?;
    }
    c.rows_per_shard = a.rows_per_shard.unwrap_or(c.rows_per_shard);
    c.batch_size = a.batch_size.unwrap_or(c.batch_size);
    c.shard = a.shard.clone().or(c.shard);
    let report = run_precompute(&c, &global.device()?)
        .with_context(|| format!("precompute into {}", c.out.display()))?;
    super::print_json(&report)?;
    Ok(())
}
