//! `kd info DIR`: what a model directory holds.

use super::{check_model_dir, load_tokenizer, GlobalArgs};
use anyhow::{Context, Result};
use clap::Args;
use kd_bert::checkpoint::find_weights;
use kd_bert::tokenizer::tokenizer_source;
use kd_bert::tokenizer::SPECIAL_TOKENS;
use kd_bert::{load_model, LoadOptions};
use kd_core::fs::sha256_file;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use tokenizers::Tokenizer;

/// Arguments of `kd info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Model directory (config.json, weights, tokenizer files).
    pub dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Everything `kd info` reports.
#[derive(Debug, Serialize)]
struct ModelInfo {
    dir: String,
    architecture: &'static str,
    config: ConfigSummary,
    parameters: ParamCounts,
    weights: WeightsInfo,
    tokenizer: Option<TokenizerInfo>,
    load: LoadInfo,
}

/// The sizes `config.json` sets.
#[derive(Debug, Serialize)]
struct ConfigSummary {
    layers: usize,
    hidden: usize,
    heads: usize,
    head_dim: usize,
    ffn: usize,
    vocab: usize,
    activation: String,
    max_positions: usize,
    type_vocab: usize,
    layer_norm_eps: f64,
    num_labels: Option<usize>,
}

/// Parameter counts by part; the MLM decoder is tied to the word embeddings and not counted
/// twice (its bias is part of `mlm_head`).
#[derive(Debug, Default, Serialize)]
struct ParamCounts {
    embeddings: usize,
    encoder: usize,
    pooler: usize,
    mlm_head: usize,
    classifier: usize,
    other: usize,
    total: usize,
    mlm_decoder_tied: bool,
}

/// The weight file and its checksum.
#[derive(Debug, Serialize)]
struct WeightsInfo {
    file: String,
    bytes: u64,
    sha256: String,
}

/// Where the tokenizer comes from and its special tokens.
#[derive(Debug, Serialize)]
struct TokenizerInfo {
    source: String,
    vocab_size: usize,
    casing: &'static str,
    special_tokens: BTreeMap<&'static str, Option<u32>>,
}

/// A checkpoint tensor that was not loaded, and why.
#[derive(Debug, Serialize)]
struct IgnoredTensor {
    name: String,
    reason: String,
}

/// What loading left out.
#[derive(Debug, Serialize)]
struct LoadInfo {
    /// Checkpoint tensors that were not loaded.
    ignored: Vec<IgnoredTensor>,
    /// Head parameters the checkpoint lacks (they would be freshly initialised).
    missing_heads: Vec<String>,
}

/// Runs `kd info`.
pub fn run(args: &InfoArgs, global: &GlobalArgs) -> Result<()> {
    let info = inspect(args, global)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &info)?;
        writeln!(out)?;
    } else {
        print_text(&mut out, &info)?;
    }
    Ok(())
}

fn inspect(args: &InfoArgs, global: &GlobalArgs) -> Result<ModelInfo> {
    let dir = &args.dir;
    check_model_dir(dir)?;
    let opts = LoadOptions {
        fresh_heads: true,
        device: global.device()?,
        ..LoadOptions::default()
    };
    let loaded = load_model(dir, &opts)
        .with_context(|| format!("cannot load the model in {}", dir.display()))?;
    let cfg = &loaded.model.config;
    let weights = find_weights(dir)?;
    let bytes = std::fs::metadata(&weights)
        .with_context(|| format!("cannot stat {}", weights.display()))?
        .len();
    let tokenizer = match tokenizer_source(dir) {
        Ok(src) => Some(tokenizer_info(src, &load_tokenizer(dir)?)),
        Err(_) => None,
    };
    let classifier = loaded.model.classifier.is_some();
    Ok(ModelInfo {
        dir: dir.display().to_string(),
        architecture: loaded.model.architecture.hf_name(),
        config: ConfigSummary {
            layers: cfg.num_hidden_layers,
            hidden: cfg.hidden_size,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            ffn: cfg.intermediate_size,
            vocab: cfg.vocab_size,
            activation: cfg.hidden_act.clone(),
            max_positions: cfg.max_position_embeddings,
            type_vocab: cfg.type_vocab_size,
            layer_norm_eps: cfg.layer_norm_eps,
            num_labels: classifier.then(|| cfg.num_labels()),
        },
        parameters: count_params(&loaded.varmap, loaded.model.mlm.is_some()),
        weights: WeightsInfo {
            sha256: sha256_file(&weights)?,
            file: weights.display().to_string(),
            bytes,
        },
        tokenizer,
        load: LoadInfo {
            ignored: (loaded.report.ignored.iter())
                .map(|(name, reason)| IgnoredTensor {
                    name: name.clone(),
                    reason: reason.clone(),
                })
                .collect(),
            missing_heads: loaded.report.initialized.clone(),
        },
    })
}

/// Counts the elements of every variable by the part of the model it belongs to.
fn count_params(varmap: &candle_nn::VarMap, mlm: bool) -> ParamCounts {
    let mut c = ParamCounts {
        mlm_decoder_tied: mlm,
        ..ParamCounts::default()
    };
    let vars = varmap.data().lock().expect("varmap lock poisoned");
    for (name, var) in vars.iter() {
        let n = var.elem_count();
        let part = if name.starts_with("bert.embeddings.") {
            &mut c.embeddings
        } else if name.starts_with("bert.encoder.") {
            &mut c.encoder
        } else if name.starts_with("bert.pooler.") {
            &mut c.pooler
        } else if name.starts_with("cls.") {
            &mut c.mlm_head
        } else if name.starts_with("classifier.") {
            &mut c.classifier
        } else {
            &mut c.other
        };
        *part += n;
        c.total += n;
    }
    c
}

fn tokenizer_info(source: PathBuf, tok: &Tokenizer) -> TokenizerInfo {
    TokenizerInfo {
        source: source.display().to_string(),
        vocab_size: tok.get_vocab_size(true),
        casing: casing(tok),
        special_tokens: SPECIAL_TOKENS
            .iter()
            .map(|t| (*t, tok.token_to_id(t)))
            .collect(),
    }
}

/// `uncased` when the normalizer lower-cases, else `cased`.
fn casing(tok: &Tokenizer) -> &'static str {
    let Some(norm) = tok.get_normalizer() else {
        return "cased";
    };
    match serde_json::to_value(norm) {
        Ok(v) if lowercases(&v) => "uncased",
        Ok(_) => "cased",
        Err(_) => "unknown",
    }
}

/// Whether a serialised normalizer (possibly a sequence) lower-cases its input.
fn lowercases(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => {
            let ty = m.get("type").and_then(|t| t.as_str());
            ty == Some("Lowercase")
                || (ty == Some("BertNormalizer") && m.get("lowercase") == Some(&true.into()))
                || m.values().any(lowercases)
        }
        serde_json::Value::Array(a) => a.iter().any(lowercases),
        _ => false,
    }
}

fn print_text(out: &mut impl Write, i: &ModelInfo) -> std::io::Result<()> {
    let c = &i.config;
    writeln!(out, "model          {}", i.dir)?;
    writeln!(out, "architecture   {}", i.architecture)?;
    writeln!(
        out,
        "config         {} layers, hidden {}, {} heads (head dim {}), FFN {}, vocab {}, \
         activation {}, max positions {}, {} token types, LayerNorm eps {:e}",
        c.layers,
        c.hidden,
        c.heads,
        c.head_dim,
        c.ffn,
        c.vocab,
        c.activation,
        c.max_positions,
        c.type_vocab,
        c.layer_norm_eps
    )?;
    if let Some(n) = c.num_labels {
        writeln!(out, "labels         {n}")?;
    }
    let p = &i.parameters;
    writeln!(out, "parameters")?;
    let part = |present: bool, note: &str| match present {
        true => note.to_string(),
        false => "(none)".to_string(),
    };
    let tied = "(decoder tied to the word embeddings, not counted again)";
    let rows = [
        ("embeddings", p.embeddings, String::new()),
        ("encoder", p.encoder, String::new()),
        ("pooler", p.pooler, part(p.pooler > 0, "")),
        ("MLM head", p.mlm_head, part(p.mlm_decoder_tied, tied)),
        ("classifier", p.classifier, part(p.classifier > 0, "")),
    ];
    for (name, n, note) in rows {
        writeln!(
            out,
            "{}",
            format!("  {name:<12} {n:>12}  {note}").trim_end()
        )?;
    }
    if p.other > 0 {
        writeln!(out, "  {:<12} {:>12}", "other", p.other)?;
    }
    writeln!(
        out,
        "  {:<12} {:>12}  ({})",
        "total",
        p.total,
        human(p.total)
    )?;
    writeln!(
        out,
        "weights        {} ({})",
        i.weights.file,
        human_bytes(i.weights.bytes)
    )?;
    writeln!(out, "  sha256       {}", i.weights.sha256)?;
    match &i.tokenizer {
        None => writeln!(out, "tokenizer      none (no tokenizer.json or vocab.txt)")?,
        Some(t) => {
            writeln!(out, "tokenizer      {}", t.source)?;
            writeln!(out, "  vocab size   {}", t.vocab_size)?;
            if t.vocab_size != c.vocab {
                writeln!(out, "  warning      config.json has vocab_size {}", c.vocab)?;
            }
            writeln!(out, "  casing       {}", t.casing)?;
            let ids: Vec<String> = (SPECIAL_TOKENS.iter())
                .map(|tok| match t.special_tokens.get(tok).copied().flatten() {
                    Some(id) => format!("{tok}={id}"),
                    None => format!("{tok}=absent"),
                })
                .collect();
            writeln!(out, "  special      {}", ids.join(" "))?;
        }
    }
    writeln!(out, "load report")?;
    if i.load.ignored.is_empty() && i.load.missing_heads.is_empty() {
        writeln!(out, "  every checkpoint tensor loaded, nothing missing")?;
    }
    for t in &i.load.ignored {
        writeln!(out, "  ignored      {} ({})", t.name, t.reason)?;
    }
    for n in &i.load.missing_heads {
        writeln!(
            out,
            "  missing      {n} (head parameter not in the checkpoint)"
        )?;
    }
    Ok(())
}

/// `20141` as `20.1K`, `22713216` as `22.7M`.
fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
