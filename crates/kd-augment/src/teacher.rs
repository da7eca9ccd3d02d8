//! The teacher as TinyBERT's augmentation uses it: a `BertForMaskedLM` whose MLM head ranks
//! candidates for masked words (batched forward passes), and whose word-piece input embeddings
//! give nearest neighbours for words of several pieces.

use crate::error::{AugmentError, Result};
use crate::words::is_alphabetic;
use candle_core::{DType, Device, Tensor};
use kd_bert::config::{Architecture, BertConfig};
use kd_bert::model::gather_positions;
use kd_bert::tokenizer::load_tokenizer;
use kd_bert::{load_model, Bert, BertInput, ForwardCtx, LoadOptions};
use kd_data::{collate, BatchItem, SpecialTokens};
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// One masked input: `[CLS] masked sentence [SEP] original sentence [SEP]` with token types
/// 0 up to the first `[SEP]` and 1 after, and the position of its `[MASK]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlmQuery {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// Token types.
    pub token_type_ids: Vec<u32>,
    /// Index of the `[MASK]` in `input_ids`.
    pub position: usize,
}

/// The word pieces of a text with their byte offsets in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pieces {
    /// Token ids, no special tokens.
    pub ids: Vec<u32>,
    /// Byte range of each piece in the text.
    pub offsets: Vec<(usize, usize)>,
}

/// A loaded MLM teacher with its tokenizer and vocabulary.
pub struct MlmTeacher {
    dir: PathBuf,
    model: Bert,
    tokenizer: Tokenizer,
    device: Device,
    specials: SpecialTokens,
    max_len: usize,
    /// Token string per id (empty where the tokenizer has none).
    vocab: Vec<String>,
}

impl MlmTeacher {
    /// Loads `dir`, which must hold a `BertForMaskedLM` with its MLM head weights.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let bad = |message: String| AugmentError::Teacher {
            dir: dir.to_path_buf(),
            message,
        };
        if !dir.is_dir() {
            return Err(bad("not a model directory".into()));
        }
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let arch = config.architecture().unwrap_or(Architecture::Base);
        if arch != Architecture::MaskedLm {
            return Err(bad(format!(
                "is a {} without an MLM head, which TinyBERT's augmentation needs; \
                 fit one with `kd finetune --objective mlm`",
                arch.hf_name()
            )));
        }
        let opts = LoadOptions {
            fresh_heads: true,
            device: device.clone(),
            ..LoadOptions::default()
        };
        let loaded = load_model(dir, &opts)?;
        if loaded
            .report
            .initialized
            .iter()
            .any(|n| n.starts_with("cls."))
        {
            return Err(bad(
                "the checkpoint has no MLM head weights (cls.predictions.*); \
                 fit them with `kd finetune --objective mlm`"
                    .into(),
            ));
        }
        let model = loaded.inference_model()?;
        let tokenizer = load_tokenizer(dir)?;
        let specials = SpecialTokens::from_tokenizer(&tokenizer)?;
        let vocab = (0..model.config.vocab_size as u32)
            .map(|id| tokenizer.id_to_token(id).unwrap_or_default())
            .collect();
        Ok(MlmTeacher {
            dir: dir.to_path_buf(),
            max_len: model.config.max_position_embeddings,
            model,
            tokenizer,
            device: device.clone(),
            specials,
            vocab,
        })
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model (for direct forward passes).
    pub fn model(&self) -> &Bert {
        &self.model
    }

    /// The special-token ids.
    pub fn specials(&self) -> SpecialTokens {
        self.specials
    }

    /// Longest input the model takes.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The token string of `id` (empty when unknown).
    pub fn token(&self, id: u32) -> &str {
        self.vocab.get(id as usize).map_or("", String::as_str)
    }

    /// Whether `id` is a special token: one of BERT's five, or any bracketed vocabulary entry
    /// such as `[unused7]`.
    pub fn is_special(&self, id: u32) -> bool {
        let t = self.token(id);
        self.specials.is_special(id) || (t.starts_with('[') && t.ends_with(']'))
    }

    /// Whether `id` is a whole word a replacement may use: not special, not a `##` sub-word
    /// piece, and a word (letters only: punctuation and digits are not words to put in a
    /// word's place).
    pub fn is_replacement(&self, id: u32) -> bool {
        let t = self.token(id);
        !self.is_special(id) && !t.starts_with("##") && is_alphabetic(t)
    }

    /// Whether `id` is a candidate for the embedding neighbours of multi-piece words: a whole
    /// word of at least two ASCII letters.
    pub fn is_neighbour_candidate(&self, id: u32) -> bool {
        let t = self.token(id);
        self.is_replacement(id) && t.len() >= 2
    }

    /// The word pieces of `text` with their byte offsets.
    pub fn pieces(&self, text: &str) -> Result<Pieces> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| AugmentError::Setting(format!("cannot tokenize {text:?}: {e}")))?;
        Ok(Pieces {
            ids: enc.get_ids().to_vec(),
            offsets: enc.get_offsets().to_vec(),
        })
    }

    /// The input that asks for piece `piece` of `ids`: `[CLS] ids with [MASK] at piece [SEP]
    /// ids [SEP]`, cut to the model's positions; `None` when the mask falls beyond them.
    pub fn query(&self, ids: &[u32], piece: usize) -> Option<MlmQuery> {
        let s = self.specials;
        let mut input_ids = Vec::with_capacity(2 * ids.len() + 3);
        input_ids.push(s.cls);
        input_ids.extend_from_slice(ids);
        input_ids[piece + 1] = s.mask;
        input_ids.push(s.sep);
        let first = input_ids.len();
        input_ids.extend_from_slice(ids);
        input_ids.push(s.sep);
        let mut token_type_ids = vec![0; first];
        token_type_ids.resize(input_ids.len(), 1);
        input_ids.truncate(self.max_len);
        token_type_ids.truncate(self.max_len);
        (piece + 1 < self.max_len).then_some(MlmQuery {
            input_ids,
            token_type_ids,
            position: piece + 1,
        })
    }

    /// MLM logits at the mask of each query, in query order, as rows of the vocabulary. The
    /// queries run `batch_size` per forward pass, grouped by length (a stable sort) so that
    /// little padding is computed.
    pub fn mask_logits(&self, queries: &[MlmQuery], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..queries.len()).collect();
        order.sort_by_key(|&i| queries[i].input_ids.len());
        let mut rows: Vec<Vec<f32>> = vec![Vec::new(); queries.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let batch: Vec<&MlmQuery> = chunk.iter().map(|&i| &queries[i]).collect();
            for (&i, row) in chunk.iter().zip(self.forward_masks(&batch)?) {
                rows[i] = row;
            }
        }
        Ok(rows)
    }

    /// One forward pass over `batch` (right-padded): the MLM logits at each query's mask.
    pub fn forward_masks(&self, batch: &[&MlmQuery]) -> Result<Vec<Vec<f32>>> {
        let items: Vec<BatchItem> = batch
            .iter()
            .enumerate()
            .map(|(i, q)| BatchItem {
                id: i as u64,
                input_ids: &q.input_ids,
                token_type_ids: Some(&q.token_type_ids),
                mlm_positions: &[],
                mlm_labels: &[],
                label: None,
            })
            .collect();
        let padded = collate(&items, self.specials.pad)?;
        let input = BertInput::from_batch(&padded, &self.device)?;
        let len = padded.seq_len;
        let flat: Vec<u32> = (batch.iter().enumerate())
            .map(|(b, q)| (b * len + q.position) as u32)
            .collect();
        let flat = Tensor::from_vec(flat, batch.len(), &self.device)?;
        let out = self.model.encode(&input, &[], &mut ForwardCtx::eval())?;
        let hidden = gather_positions(out.last_hidden_state(), &flat)?;
        let logits = self.model.mlm_logits(&hidden)?.to_dtype(DType::F32)?;
        Ok(logits.to_vec2::<f32>()?)
    }

    /// The word-piece input embedding table `[V, H]`, row-major, as f32.
    pub fn word_embeddings(&self) -> Result<(Vec<f32>, usize)> {
        let w = &self.model.embeddings.word_embeddings;
        let (_, h) = w.dims2()?;
        let flat = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok((flat, h))
    }
}

/// Indices of the `k` largest entries of `row`, largest first (ties by lower index).
pub fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let by = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k, by);
        idx.truncate(k);
    }
    idx.sort_by(by);
    idx
}

#[cfg(test)]
mod tests {
    use super::top_k;

    #[test]
    fn top_k_sorted_with_ties_by_index() {
        let row = [0.1, 0.4, 0.05, 0.4, 0.15];
        assert_eq!(top_k(&row, 3), [1, 3, 4]);
        assert_eq!(top_k(&row, 9), [1, 3, 4, 0, 2]);
    }
}
