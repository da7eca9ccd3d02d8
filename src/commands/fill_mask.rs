//! `kd fill-mask`: the most likely tokens behind each `[MASK]`, like the `fill-mask` pipeline of
//! `transformers`.

use super::{check_model_dir, inference_model, load_tokenizer, pad_batch, GlobalArgs};
use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use kd_bert::config::{Architecture, BertConfig};
use kd_bert::model::gather_positions;
use kd_bert::{load_model, ForwardCtx, LoadOptions};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use tokenizers::{Encoding, Tokenizer};

/// Texts run through the model at once.
const BATCH: usize = 16;

/// Arguments of `kd fill-mask`.
#[derive(Debug, Args)]
pub struct FillMaskArgs {
    /// Model directory with an MLM head (`BertForMaskedLM`).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Predictions shown per [MASK].
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Print JSON (one array with an entry per text) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Texts, each with at least one [MASK].
    #[arg(required = true, value_name = "TEXT")]
    pub texts: Vec<String>,
}

/// Predictions for one text.
#[derive(Debug, Serialize)]
struct TextResult {
    text: String,
    masks: Vec<MaskResult>,
}

/// Predictions for one `[MASK]`.
#[derive(Debug, Serialize)]
struct MaskResult {
    /// Token index of the mask in the encoded text (`[CLS]` is 0).
    position: usize,
    predictions: Vec<Prediction>,
}

/// One candidate token.
#[derive(Debug, Serialize)]
struct Prediction {
    token: u32,
    token_str: String,
    score: f32,
}

/// Runs `kd fill-mask`.
pub fn run(args: &FillMaskArgs, global: &GlobalArgs) -> Result<()> {
    ensure!(args.top_k > 0, "--top-k must be at least 1");
    let dir = &args.model;
    check_model_dir(dir)?;
    let cfg_path = dir.join("config.json");
    let config = BertConfig::from_file(&cfg_path)
        .with_context(|| format!("cannot read the model config of {}", dir.display()))?;
    let arch = config.architecture().unwrap_or(Architecture::Base);
    if arch != Architecture::MaskedLm {
        bail!(
            "{} is a {} and has no MLM head, which fill-mask needs; \
             fit one with `kd finetune --objective mlm`",
            dir.display(),
            arch.hf_name()
        );
    }
    let tok = load_tokenizer(dir)?;
    let mask_id = tok
        .token_to_id("[MASK]")
        .context("the tokenizer has no [MASK] token")?;
    let encodings = encode(&tok, &args.texts, mask_id, config.max_position_embeddings)?;

    let device = global.device()?;
    let opts = LoadOptions {
        fresh_heads: true,
        device: device.clone(),
        ..LoadOptions::default()
    };
    let loaded = load_model(dir, &opts)
        .with_context(|| format!("cannot load the model in {}", dir.display()))?;
    if loaded
        .report
        .initialized
        .iter()
        .any(|n| n.starts_with("cls."))
    {
        bail!(
            "the checkpoint in {} has no MLM head weights (cls.predictions.*); \
             fit them with `kd finetune --objective mlm`",
            dir.display()
        );
    }
    let model = inference_model(&loaded)?;
    let pad_id = model.config.pad_token_id;
    let k = args.top_k.min(model.config.vocab_size);

    let mut results = Vec::with_capacity(args.texts.len());
    for (chunk_no, chunk) in encodings.chunks(BATCH).enumerate() {
        let probs = mask_probs(&model, chunk, mask_id, pad_id, &device)?;
        let mut rows = probs.iter();
        for (j, enc) in chunk.iter().enumerate() {
            let mut masks = Vec::new();
            for position in mask_positions(enc, mask_id) {
                let row = rows.next().context("fewer MLM outputs than masks")?;
                let predictions = top_k(row, k)
                    .into_iter()
                    .map(|(id, score)| Prediction {
                        token: id,
                        token_str: tok.decode(&[id], false).unwrap_or_default(),
                        score,
                    })
                    .collect();
                masks.push(MaskResult {
                    position,
                    predictions,
                });
            }
            let text = args.texts[chunk_no * BATCH + j].clone();
            results.push(TextResult { text, masks });
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &results)?;
        writeln!(out)?;
    } else {
        print_text(&mut out, &results)?;
    }
    Ok(())
}

/// Encodes every text with special tokens, checking it has a mask and fits the model.
fn encode(
    tok: &Tokenizer,
    texts: &[String],
    mask_id: u32,
    max_pos: usize,
) -> Result<Vec<Encoding>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let enc = tok
                .encode(text.as_str(), true)
                .map_err(|e| anyhow::anyhow!("cannot tokenize text {} ({text:?}): {e}", i + 1))?;
            ensure!(
                enc.get_ids().contains(&mask_id),
                "text {} ({text:?}) has no [MASK] token to fill",
                i + 1
            );
            ensure!(
                enc.len() <= max_pos,
                "text {} is {} tokens long, more than the model's {max_pos} positions",
                i + 1,
                enc.len()
            );
            Ok(enc)
        })
        .collect()
}

fn mask_positions(enc: &Encoding, mask_id: u32) -> impl Iterator<Item = usize> + '_ {
    (enc.get_ids().iter())
        .enumerate()
        .filter(move |(_, &id)| id == mask_id)
        .map(|(p, _)| p)
}

/// Softmax over the vocabulary at every mask of `chunk`, in text then position order.
fn mask_probs(
    model: &kd_bert::Bert,
    chunk: &[Encoding],
    mask_id: u32,
    pad_id: u32,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let refs: Vec<&Encoding> = chunk.iter().collect();
    let input = pad_batch(&refs, pad_id, device)?;
    let len = input.input_ids.dim(1)?;
    let flat: Vec<u32> = (chunk.iter().enumerate())
        .flat_map(|(b, enc)| mask_positions(enc, mask_id).map(move |p| (b * len + p) as u32))
        .collect();
    let n = flat.len();
    let flat = Tensor::from_vec(flat, n, device)?;
    let out = model.encode(&input, &[], &mut ForwardCtx::eval())?;
    let hidden = gather_positions(out.last_hidden_state(), &flat)?;
    let logits = model.mlm_logits(&hidden)?;
    let probs = candle_nn::ops::softmax_last_dim(&logits.to_dtype(candle_core::DType::F32)?)?;
    Ok(probs.to_vec2::<f32>()?)
}

/// The `k` largest entries of `row` as `(index, value)`, largest first.
fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let by_prob = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]);
    if k < idx.len() {
        idx.select_nth_unstable_by(k, by_prob);
        idx.truncate(k);
    }
    idx.sort_by(by_prob);
    idx.into_iter().map(|i| (i, row[i as usize])).collect()
}

fn print_text(out: &mut impl Write, results: &[TextResult]) -> std::io::Result<()> {
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "{}", r.text)?;
        for (m, mask) in r.masks.iter().enumerate() {
            writeln!(out, "  [MASK] #{} (token {}):", m + 1, mask.position)?;
            for (rank, p) in mask.predictions.iter().enumerate() {
                writeln!(
                    out,
                    "    {:>2}. {:<16} {:.4}  (id {})",
                    rank + 1,
                    p.token_str,
                    p.score,
                    p.token
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::top_k;

    #[test]
    fn top_k_is_sorted_and_complete() {
        let row = [0.1, 0.4, 0.05, 0.3, 0.15];
        assert_eq!(top_k(&row, 3), vec![(1, 0.4), (3, 0.3), (4, 0.15)]);
        assert_eq!(top_k(&row, 9).len(), 5);
        assert_eq!(top_k(&row, 5)[4], (2, 0.05));
    }
}
