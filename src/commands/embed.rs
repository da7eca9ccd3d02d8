//! `kd embed`: mean-pooled sentence embeddings, as sentence-transformers computes them for
//! MiniLM (average of the last hidden state over real tokens, optionally L2-normalised).

use super::{check_model_dir, inference_model, load_tokenizer, pad_batch, GlobalArgs};
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use clap::Args;
use kd_bert::{load_model, Bert, ForwardCtx, LoadOptions};
use kd_train::Progress;
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use tokenizers::{Encoding, TruncationParams};

/// Arguments of `kd embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Model directory (any BERT architecture; only the encoder is used).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Text file with one text per line (every line, blank ones included, gets a row).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Output file; its extension picks the format: `.safetensors` (tensor `embeddings`
    /// [N, H] f32), `.jsonl` (`{"text", "embedding"}` per line) or `.npy`.
    #[arg(long, value_name = "OUT")]
    pub output: PathBuf,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Tokens per text, [CLS] and [SEP] included; longer texts are truncated [default: 128, or
    /// the model's positions if fewer].
    #[arg(long)]
    pub max_len: Option<usize>,
    /// L2-normalise each embedding (as sentence-transformers' Normalize module).
    #[arg(long)]
    pub normalize: bool,
}

/// Tokens per text unless `--max-len` says otherwise.
const DEFAULT_MAX_LEN: usize = 128;

/// Output file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Safetensors,
    Jsonl,
    Npy,
}

impl Format {
    fn of(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext.to_ascii_lowercase().as_str() {
            "safetensors" => Ok(Self::Safetensors),
            "jsonl" => Ok(Self::Jsonl),
            "npy" => Ok(Self::Npy),
            _ => bail!(
                "cannot tell the format of output {}: use a .safetensors, .jsonl or .npy file",
                path.display()
            ),
        }
    }
}

/// Runs `kd embed`.
pub fn run(args: &EmbedArgs, global: &GlobalArgs) -> Result<()> {
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    ensure!(
        args.max_len.is_none_or(|n| n >= 2),
        "--max-len must leave room for [CLS] and [SEP] (at least 2)"
    );
    let format = Format::of(&args.output)?;
    check_model_dir(&args.model)?;
    let texts = read_texts(&args.input)?;
    let mut tok = load_tokenizer(&args.model)?;

    let device = global.device()?;
    let opts = LoadOptions {
        fresh_heads: true,
        device: device.clone(),
        ..LoadOptions::default()
    };
    let loaded = load_model(&args.model, &opts)
        .with_context(|| format!("cannot load the model in {}", args.model.display()))?;
    let model = &inference_model(&loaded)?;
    drop(loaded);
    let max_pos = model.config.max_position_embeddings;
    let max_len = match args.max_len {
        Some(n) => {
            ensure!(
                n <= max_pos,
                "--max-len {n} exceeds the model's {max_pos} positions"
            );
            n
        }
        None => DEFAULT_MAX_LEN.min(max_pos),
    };
    let trunc = TruncationParams {
        max_length: max_len,
        ..TruncationParams::default()
    };
    tok.with_truncation(Some(trunc))
        .map_err(|e| anyhow::anyhow!("cannot set truncation: {e}"))?;
    let encodings = tok
        .encode_batch(texts.clone(), true)
        .map_err(|e| anyhow::anyhow!("cannot tokenize {}: {e}", args.input.display()))?;

    let embeddings = embed_all(model, &encodings, args, &device)?;
    let n = texts.len();
    let h = model.config.hidden_size;
    write_atomic(&args.output, |tmp| match format {
        Format::Safetensors => {
            let t = Tensor::from_vec(embeddings.clone(), (n, h), &Device::Cpu)?;
            let map = HashMap::from([("embeddings".to_string(), t)]);
            candle_core::safetensors::save(&map, tmp)?;
            readable_by_all(tmp)
        }
        Format::Npy => {
            let t = Tensor::from_vec(embeddings.clone(), (n, h), &Device::Cpu)?;
            Ok(t.write_npy(tmp)?)
        }
        Format::Jsonl => write_jsonl(tmp, &texts, &embeddings, h),
    })?;
    eprintln!(
        "wrote {n} embeddings of dimension {h} to {}",
        args.output.display()
    );
    Ok(())
}

/// The lines of `path` (line endings stripped).
fn read_texts(path: &Path) -> Result<Vec<String>> {
    let data = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read input file {}", path.display()))?;
    let texts: Vec<String> = data.lines().map(str::to_string).collect();
    ensure!(
        !texts.is_empty(),
        "input file {} holds no text",
        path.display()
    );
    let blank = texts.iter().filter(|t| t.trim().is_empty()).count();
    if blank > 0 {
        eprintln!(
            "warning: {blank} blank line(s) in {}; each still gets an embedding row",
            path.display()
        );
    }
    Ok(texts)
}

/// Embeddings `[N * H]` in input order; texts are batched by length to limit padding.
fn embed_all(
    model: &Bert,
    encodings: &[Encoding],
    args: &EmbedArgs,
    device: &Device,
) -> Result<Vec<f32>> {
    let h = model.config.hidden_size;
    let mut order: Vec<usize> = (0..encodings.len()).collect();
    order.sort_by_key(|&i| encodings[i].len());
    let mut out = vec![0f32; encodings.len() * h];
    let progress = Progress::new(encodings.len() as u64, "embed");
    for batch in order.chunks(args.batch_size) {
        let refs: Vec<&Encoding> = batch.iter().map(|&i| &encodings[i]).collect();
        let rows = embed_batch(model, &refs, args.normalize, device)?;
        for (&i, row) in batch.iter().zip(rows) {
            out[i * h..(i + 1) * h].copy_from_slice(&row);
        }
        progress.inc(batch.len() as u64);
    }
    progress.finish();
    Ok(out)
}

/// Masked mean of the last hidden state for one batch, `[B][H]`.
fn embed_batch(
    model: &Bert,
    encodings: &[&Encoding],
    normalize: bool,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let input = pad_batch(encodings, model.config.pad_token_id, device)?;
    let out = model.encode(&input, &[], &mut ForwardCtx::eval())?;
    let hidden = out.last_hidden_state().to_dtype(DType::F32)?;
    let mask = (input.attention_mask.as_ref())
        .context("padded batch without attention mask")?
        .to_dtype(DType::F32)?
        .unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    let mut pooled = summed.broadcast_div(&counts)?;
    if normalize {
        let norm = pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        pooled = pooled.broadcast_div(&norm.clamp(1e-12, f64::MAX)?)?;
    }
    Ok(pooled.to_vec2::<f32>()?)
}

/// Gives `path` the usual `rw-r--r--` mode: safetensors writes through a private (`rw-------`)
/// temporary file, unlike the other formats.
fn readable_by_all(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn write_jsonl(path: &Path, texts: &[String], embeddings: &[f32], h: usize) -> Result<()> {
    let file = std::fs::File::create(path)?;
    let mut w = BufWriter::new(file);
    for (text, row) in texts.iter().zip(embeddings.chunks(h)) {
        let line = serde_json::json!({ "text": text, "embedding": row });
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// Writes `path` through `write` on a temporary sibling, synced and then renamed into place, so
/// a reader never sees a partial file.
fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create output directory {}", parent.display()))?;
    kd_core::fs::write_atomic_with(path, write)
        .with_context(|| format!("cannot write {}", path.display()))
}
