//! The subcommands of `kd`, one module each, and what they share.
//!
//! To add a stage: write `commands/<stage>.rs` with an `Args` struct and a `run` function, add a
//! variant to [`Command`] and one arm to [`Command::run`].

mod augment;
mod cache;
mod embed;
mod eval;
mod fill_mask;
mod finetune;
mod info;
mod loop_flags;
mod precompute;
mod predict;
mod run;
mod train;
mod train_step;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Subcommand};
use kd_bert::{Bert, BertInput, LoadedModel};
use std::path::Path;
use tokenizers::{Encoding, Tokenizer};

/// Options accepted by every subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where to run: `cpu`, or `cuda:N` (needs a build with the `cuda` feature).
    #[arg(long, global = true, default_value = "cpu", value_name = "DEVICE")]
    pub device: String,
}

impl GlobalArgs {
    /// The device named by `--device`.
    pub fn device(&self) -> Result<Device> {
        crate::device::parse_device(&self.device)
    }
}

/// The stages of `kd`.
// Parsed once per process, so the size of the largest arguments struct does not matter; boxing
// would only make new variants more cumbersome to add.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Describe a model directory: architecture, sizes, parameters, weights, tokenizer.
    Info(info::InfoArgs),
    /// Predict the tokens behind each [MASK] of one or more texts with a model's MLM head.
    FillMask(fill_mask::FillMaskArgs),
    /// Mean-pooled sentence embeddings of a file with one text per line.
    Embed(embed::EmbedArgs),
    /// Prepare a teacher: fit an MLM head on a corpus, or fine-tune a classifier.
    Finetune(finetune::FinetuneArgs),
    /// Run a teacher once over a masked corpus and write the distillation cache.
    Precompute(precompute::PrecomputeArgs),
    /// Inspect, verify or merge teacher caches.
    Cache(cache::CacheArgs),
    /// Train a student from a teacher cache, without the teacher in memory.
    Train(train::TrainArgs),
    /// Evaluate a student against a held-out cache, or classifiers on a task split.
    Eval(eval::EvalArgs),
    /// Run a whole pipeline from a TOML file (or the embedded default).
    Run(run::RunArgs),
    /// Build a transfer set: a task's examples and augmented copies (TinyBERT or Tang et al.).
    Augment(augment::AugmentArgs),
    /// Labels, probabilities and logits of texts from a classifier (BERT or BiLSTM), as JSONL.
    Predict(predict::PredictArgs),
}

impl Command {
    /// Runs the subcommand.
    pub fn run(self, global: &GlobalArgs) -> Result<()> {
        match self {
            Command::Info(args) => info::run(&args, global),
            Command::FillMask(args) => fill_mask::run(&args, global),
            Command::Embed(args) => embed::run(&args, global),
            Command::Finetune(args) => finetune::run(&args, global),
            Command::Precompute(args) => precompute::run(&args, global),
            Command::Cache(args) => cache::run(&args),
            Command::Train(args) => train::run(&args, global),
            Command::Eval(args) => eval::run(&args, global),
            Command::Run(args) => run::run(&args, global),
            Command::Augment(args) => augment::run(&args, global),
            Command::Predict(args) => predict::run(&args, global),
        }
    }
}

/// Writes `text` to standard output and flushes it. A closed pipe surfaces as a
/// `BrokenPipe` error, which `main` treats as the end of output; any other failure (a full
/// disk) is an error naming standard output.
pub(crate) fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}

/// [`print_stdout`] of `value` as pretty JSON and a newline.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    print_stdout(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// A flag's value read as one of a closed set of settings values (`--backend mmap`), with the
/// serde spelling of the settings files; an unknown value names the flag and the choices.
pub(crate) fn parse_choice<T: serde::de::DeserializeOwned>(flag: &str, value: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .with_context(|| format!("--{flag} {value:?}"))
}

/// Fails unless `dir` is an existing directory, naming it.
pub(crate) fn check_model_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        bail!("model directory {} does not exist", dir.display());
    }
    if !dir.is_dir() {
        bail!("model path {} is not a directory", dir.display());
    }
    Ok(())
}

/// The tokenizer of a model directory (special tokens matched whole, as in transformers).
pub(crate) fn load_tokenizer(dir: &Path) -> Result<Tokenizer> {
    kd_bert::tokenizer::load_tokenizer(dir).context("cannot load the tokenizer")
}

/// The model of `loaded` over detached parameters (no autograd graph), for inference.
pub(crate) fn inference_model(loaded: &LoadedModel) -> Result<Bert> {
    loaded
        .inference_model()
        .context("cannot rebuild the model for inference")
}

/// Right-pads `encodings` with `pad_id` into one model input on `device`.
pub(crate) fn pad_batch(
    encodings: &[&Encoding],
    pad_id: u32,
    device: &Device,
) -> Result<BertInput> {
    let items: Vec<kd_data::BatchItem> = encodings
        .iter()
        .enumerate()
        .map(|(i, e)| kd_data::BatchItem {
            id: i as u64,
            input_ids: e.get_ids(),
            token_type_ids: Some(e.get_type_ids()),
            mlm_positions: &[],
            mlm_labels: &[],
            label: None,
        })
        .collect();
    let batch = kd_data::collate(&items, pad_id)?;
    Ok(BertInput::from_batch(&batch, device)?)
}
