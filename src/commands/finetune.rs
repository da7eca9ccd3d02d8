//! `kd finetune`: teacher preparation. `--objective mlm` fits an MLM head (and optionally the
//! encoder) on a text corpus; `--objective classify` fine-tunes a sequence classifier.

use super::loop_flags::LoopFlags;
use super::GlobalArgs;
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use kd_data::TaskData;
use kd_teacher::classify::{run_classify, ClassifyConfig};
use kd_teacher::mlm::{run_mlm, MlmConfig};
use std::path::PathBuf;

/// What to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Objective {
    /// Masked-language modelling on a text corpus.
    Mlm,
    /// Sequence classification on a labelled dataset.
    Classify,
}

/// Arguments of `kd finetune`.
#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// What to train.
    #[arg(long, value_enum)]
    objective: Objective,
    /// Model directory to start from.
    #[arg(long)]
    model: PathBuf,
    /// Output directory (model/, metrics.jsonl, checkpoints/, report.json); a rerun resumes.
    #[arg(long)]
    out: PathBuf,
    /// Settings file: the table of a pipeline `finetune_mlm` or `finetune_classify` step;
    /// flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a setting, e.g. `--set train.lr=1e-4` (repeatable; flags still win).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// MLM: corpus files or folders (one paragraph per line).
    #[arg(long, num_args = 1..)]
    corpus: Vec<PathBuf>,
    /// MLM: read JSONL records and take this field as text.
    #[arg(long)]
    text_field: Option<String>,
    /// MLM: hold out the last N documents for evaluation.
    #[arg(long)]
    heldout_docs: Option<usize>,
    /// MLM: train only the MLM head.
    #[arg(long)]
    freeze_encoder: bool,
    /// MLM: train only the top N encoder layers and the head.
    #[arg(long)]
    trainable_layers: Option<usize>,
    /// MLM: train on a seeded sample of at most N sequences.
    #[arg(long)]
    max_train_sequences: Option<usize>,
    /// Classify: the movie-review sentiment file (fixed split by id).
    #[arg(long, conflicts_with_all = ["train", "dev"])]
    movie_reviews: Option<PathBuf>,
    /// Classify: training file (.tsv with header, or .jsonl).
    #[arg(long, requires = "dev")]
    train: Option<PathBuf>,
    /// Classify: development file for model selection.
    #[arg(long)]
    dev: Option<PathBuf>,
    /// Classify: test file.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Classify: text column.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Classify: second text column of pair tasks.
    #[arg(long)]
    text_pair_column: Option<String>,
    /// Classify: label column.
    #[arg(long, default_value = "label")]
    label_column: String,
    /// Classify: `class` (integer ids), `named` (strings) or `regression`.
    #[arg(long, default_value = "class")]
    label_kind: String,
    #[command(flatten)]
    training: LoopFlags,
    /// Longest sequence in tokens.
    #[arg(long)]
    max_len: Option<usize>,
}

/// Runs `kd finetune`.
pub fn run(a: &FinetuneArgs, global: &GlobalArgs) -> Result<()> {
    super::check_model_dir(&a.model)?;
    let device = global.device()?;
    let report = match a.objective {
        Objective::Mlm => {
            let mut c: MlmConfig = crate::settings::from_file(
                a.config.as_deref(),
                "finetune_mlm",
                "mlm",
                &a.overrides,
            )?;
            c.model = a.model.clone();
            c.out = a.out.clone();
            if !a.corpus.is_empty() {
                c.corpus = a.corpus.clone();
            }
            if c.corpus.is_empty() {
                bail!("--objective mlm needs --corpus FILE_OR_DIR");
            }
            c.text_field = a.text_field.clone().or(c.text_field);
            c.heldout_docs = a.heldout_docs.unwrap_or(c.heldout_docs);
            c.freeze_encoder |= a.freeze_encoder;
            c.trainable_layers = a.trainable_layers.or(c.trainable_layers);
            c.max_train_sequences = a.max_train_sequences.or(c.max_train_sequences);
            c.batch_size = a.training.batch_size.unwrap_or(c.batch_size);
            c.max_len = a.max_len.unwrap_or(c.max_len);
            a.training.apply(&mut c.train);
            serde_json::to_value(run_mlm(&c, &device)?)?
        }
        Objective::Classify => {
            let mut c: ClassifyConfig = crate::settings::from_file(
                a.config.as_deref(),
                "finetune_classify",
                "classify",
                &a.overrides,
            )?;
            c.model = a.model.clone();
            c.out = a.out.clone();
            if let Some(p) = &a.movie_reviews {
                c.data = TaskData::MovieReviews { path: p.clone() };
            } else if let (Some(train), Some(dev)) = (&a.train, &a.dev) {
                c.data = TaskData::Files {
                    train: train.clone(),
                    dev: dev.clone(),
                    test: a.test.clone(),
                    text: a.text_column.clone(),
                    text_pair: a.text_pair_column.clone(),
                    label: a.label_column.clone(),
                    label_kind: a.label_kind.clone(),
                };
            } else if a.config.is_none() {
                bail!("--objective classify needs --movie-reviews FILE or --train FILE --dev FILE");
            }
            c.batch_size = a.training.batch_size.unwrap_or(c.batch_size);
            c.max_len = a.max_len.unwrap_or(c.max_len);
            a.training.apply(&mut c.train);
            serde_json::to_value(run_classify(&c, &device)?)?
        }
    };
    super::print_json(&report)?;
    Ok(())
}
