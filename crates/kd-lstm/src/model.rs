//! The BiLSTM classifier of Tang et al.: word-piece embeddings, one bidirectional LSTM layer,
//! max pooling over the real steps, a ReLU layer and class logits. For sentence pairs the
//! siamese form: both sides through the same embedding and BiLSTM, features
//! `[h1, h2, h1 * h2, |h1 - h2|]`.
//!
//! The inputs are the teacher tokenizer's word pieces as the cache stores them: a sentence is
//! every real token (`[CLS]` and `[SEP]` included); of a pair `[CLS] a [SEP] b [SEP]`, side 1
//! is the segment-0 tokens (`[CLS] a [SEP]`) and side 2 the segment-1 tokens (`b [SEP]`).
//! With a vocabulary of its own (see [`crate::vocab`]) the model maps those ids to its rows
//! before the embedding lookup, so it reads the teacher tokenizer's ids either way.

use crate::config::{BiLstmConfig, Vocabulary};
use crate::lstm::BiLstm;
use crate::vocab::VocabMap;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use candle_nn::{Embedding, Linear, Module, VarBuilder};
use kd_bert::ForwardCtx;
use kd_data::Batch;
use std::sync::Arc;

/// Added to the padded steps before max pooling, so they never win.
const PAD_SCORE: f32 = -1e30;

/// The model; parameters under the names of the PyTorch module of `kd_bilstm.py`.
#[derive(Debug, Clone)]
pub struct BiLstmClassifier {
    /// Sizes and settings.
    pub config: BiLstmConfig,
    /// `embedding.weight`, `[V, E]`.
    pub embedding: Embedding,
    /// `lstm.*`.
    pub lstm: BiLstm,
    /// `mlp.{weight, bias}`, `[M, F]`.
    pub mlp: Linear,
    /// `classifier.{weight, bias}`, `[C, M]`.
    pub classifier: Linear,
    /// Teacher ids to rows, when the table is the transfer set's.
    pub vocab_map: Option<VocabMap>,
    /// The row of each teacher id (from `vocab_map`).
    rows_of: Option<Arc<Vec<u32>>>,
}

/// Left-aligned token rows for the encoder: ids `[R, T]` and the real length of each row.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderRows {
    /// Row-major ids, padded with the pad id.
    pub ids: Vec<u32>,
    /// Rows.
    pub rows: usize,
    /// Longest row.
    pub steps: usize,
    /// Real tokens per row (`1..=steps`).
    pub lengths: Vec<usize>,
}

impl EncoderRows {
    /// The rows the encoder reads for `batch`: each sequence's real tokens; when `siamese`,
    /// first every sequence's segment-0 tokens, then every sequence's segment-1 tokens.
    pub fn from_batch(batch: &Batch, siamese: bool, pad: u32) -> Result<Self> {
        let (b, l) = (batch.batch_size, batch.seq_len);
        let sides: &[Option<u32>] = if siamese {
            &[Some(0), Some(1)]
        } else {
            &[None]
        };
        let mut seqs: Vec<Vec<u32>> = Vec::with_capacity(b * sides.len());
        for &side in sides {
            for row in 0..b {
                let seq: Vec<u32> = (row * l..(row + 1) * l)
                    .filter(|&i| batch.attention_mask[i] != 0)
                    .filter(|&i| side.is_none_or(|s| batch.token_type_ids[i] == s))
                    .map(|i| batch.input_ids[i])
                    .collect();
                if seq.is_empty() {
                    return Err(Error::Config(match side {
                        None => {
                            format!("batch row {row} (sequence {}) has no token", batch.ids[row])
                        }
                        Some(s) => format!(
                            "batch row {row} (sequence {}) has no token of segment {s}: a siamese \
                             BiLSTM needs sentence pairs",
                            batch.ids[row]
                        ),
                    }));
                }
                seqs.push(seq);
            }
        }
        let steps = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = vec![pad; seqs.len() * steps];
        for (r, s) in seqs.iter().enumerate() {
            ids[r * steps..r * steps + s.len()].copy_from_slice(s);
        }
        Ok(Self {
            ids,
            rows: seqs.len(),
            steps,
            lengths: seqs.iter().map(Vec::len).collect(),
        })
    }
}

impl BiLstmClassifier {
    /// The model's parameters from `vb` (created, with candle's init, when missing; the
    /// builders of [`crate::init`] draw them from a seed instead).
    pub fn new(config: &BiLstmConfig, vb: VarBuilder) -> Result<Self> {
        config.validate("BiLSTM config")?;
        let c = config;
        let table = vb.get_with_hints(
            (c.vocab_size, c.embedding_size),
            "embedding.weight",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        let linear = |inp: usize, out: usize, name: &str| -> Result<Linear> {
            let bound = 1.0 / (inp as f64).sqrt();
            let init = candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            };
            let vb = vb.pp(name);
            Ok(Linear::new(
                vb.get_with_hints((out, inp), "weight", init)?,
                Some(vb.get_with_hints(out, "bias", init)?),
            ))
        };
        Ok(Self {
            config: config.clone(),
            embedding: Embedding::new(table, c.embedding_size),
            lstm: BiLstm::new(c.embedding_size, c.hidden_size, vb.pp("lstm"))?,
            mlp: linear(c.feature_size(), c.mlp_hidden_size, "mlp")?,
            classifier: linear(c.mlp_hidden_size, c.num_labels, "classifier")?,
            vocab_map: None,
            rows_of: None,
        })
    }

    /// The model reading its rows through `map` (checked against the config; `origin` names
    /// where the map came from).
    pub fn with_vocab_map(mut self, map: VocabMap, origin: &str) -> Result<Self> {
        map.validate(&self.config, origin)?;
        self.rows_of = Some(Arc::new(map.lookup()));
        self.vocab_map = Some(map);
        Ok(self)
    }

    /// The embedding rows of input ids: the ids themselves, or through the vocabulary map;
    /// an id outside the vocabulary the model reads is an error.
    pub fn rows(&self, ids: &[u32]) -> Result<Vec<u32>> {
        let (v, rows_of) = match (&self.rows_of, self.config.vocabulary) {
            (Some(r), _) => (r.len(), Some(r)),
            (None, Vocabulary::Teacher) => (self.config.vocab_size, None),
            (None, Vocabulary::TransferSet) => {
                return Err(Error::Config(
                    "a BiLSTM with vocabulary \"transfer_set\" needs its vocabulary map".into(),
                ))
            }
        };
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= v) {
            return Err(Error::Config(format!(
                "token id {bad} is outside the BiLSTM's vocabulary of {v}"
            )));
        }
        Ok(match rows_of {
            Some(r) => ids.iter().map(|&id| r[id as usize]).collect(),
            None => ids.to_vec(),
        })
    }

    /// Max-pooled BiLSTM states `[R, 2H]` of encoder rows (only real tokens are embedded).
    pub fn encode(&self, rows: &EncoderRows, ctx: &mut ForwardCtx, dev: &Device) -> Result<Tensor> {
        let packed: Vec<u32> = (rows.lengths.iter().enumerate())
            .flat_map(|(r, &len)| rows.ids[r * rows.steps..][..len].iter().copied())
            .collect();
        let packed = self.rows(&packed)?;
        let n = packed.len();
        let ids = Tensor::from_vec(packed, n, dev)?;
        let x = ctx.dropout(&self.embedding.forward(&ids)?, self.config.dropout)?;
        let h = self.lstm.forward_packed(&x, &rows.lengths, rows.steps)?;
        let mut pad = vec![0f32; rows.rows * rows.steps];
        for (r, &len) in rows.lengths.iter().enumerate() {
            pad[r * rows.steps + len..(r + 1) * rows.steps].fill(PAD_SCORE);
        }
        let pad = Tensor::from_vec(pad, (rows.rows, rows.steps, 1), dev)?;
        Ok(h.broadcast_add(&pad)?.max(1)?)
    }

    /// Class logits `[B, C]` of a batch of the teacher tokenizer's sequences.
    pub fn forward(&self, batch: &Batch, ctx: &mut ForwardCtx, dev: &Device) -> Result<Tensor> {
        let c = &self.config;
        let rows = EncoderRows::from_batch(batch, c.siamese, c.pad_token_id)?;
        let pooled = self.encode(&rows, ctx, dev)?;
        let feats = if c.siamese {
            let b = batch.batch_size;
            let (h1, h2) = (pooled.narrow(0, 0, b)?, pooled.narrow(0, b, b)?);
            let prod = (&h1 * &h2)?;
            let diff = (&h1 - &h2)?.abs()?;
            Tensor::cat(&[&h1, &h2, &prod, &diff], 1)?
        } else {
            pooled
        };
        let feats = ctx.dropout(&feats, c.dropout)?;
        let hidden = self.mlp.forward(&feats)?.relu()?;
        Ok(self.classifier.forward(&hidden)?)
    }
}
