//! Task heads: pooler, masked-LM head (tied decoder) and sequence classifier.

use super::layers::{ForwardCtx, LayerNorm, Linear};
use crate::config::{Activation, BertConfig};
use crate::ops;
use candle_core::{IndexOp, Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// `tanh(W h_[CLS] + b)`, the sentence representation used by classifiers.
#[derive(Debug, Clone)]
pub struct Pooler {
    dense: Linear,
}

impl Pooler {
    /// Creates or loads `pooler.dense.*` under `vb`.
    pub fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            dense: Linear::new(h, h, vb.pp("dense"))?,
        })
    }

    /// Pools the last hidden state `[B, L, H]` into `[B, H]`.
    pub fn forward(&self, last_hidden: &Tensor) -> Result<Tensor> {
        self.dense.forward(&last_hidden.i((.., 0))?)?.tanh()
    }
}

/// The masked-LM head: transform (dense, activation, LayerNorm) then the decoder tied to the
/// word embeddings plus an output bias.
#[derive(Debug, Clone)]
pub struct MlmHead {
    dense: Linear,
    activation: Activation,
    layer_norm: LayerNorm,
    decoder: Tensor,
    /// Output bias `[vocab]`.
    pub bias: Tensor,
}

impl MlmHead {
    /// Creates or loads `cls.predictions.*` under `vb`, tying the decoder to `word_embeddings`.
    pub fn new(cfg: &BertConfig, word_embeddings: Tensor, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let t = vb.pp("transform");
        Ok(Self {
            dense: Linear::new(h, h, t.pp("dense"))?,
            activation: cfg.activation(),
            layer_norm: LayerNorm::new(h, cfg.layer_norm_eps, t.pp("LayerNorm"))?,
            decoder: word_embeddings,
            bias: vb.get_with_hints(cfg.vocab_size, "bias", Init::Const(0.0))?,
        })
    }

    /// The transformed hidden states `[..., H]` before the vocabulary projection.
    pub fn transform(&self, hidden: &Tensor) -> Result<Tensor> {
        let x = ops::activate(&self.dense.forward(hidden)?, self.activation)?;
        self.layer_norm.forward(&x)
    }

    /// Vocabulary logits `[N, V]` for hidden states `[N, H]` (gather masked positions first to
    /// run the projection only where it is needed) or `[B, L, V]` for `[B, L, H]`.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        ops::linear(&self.transform(hidden)?, &self.decoder, &self.bias)
    }
}

/// Dropout + linear classifier on the pooled output.
#[derive(Debug, Clone)]
pub struct ClassifierHead {
    classifier: Linear,
    dropout: f64,
}

impl ClassifierHead {
    /// Creates or loads `classifier.*` under `vb` with `num_labels` outputs.
    pub fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            classifier: Linear::new(cfg.hidden_size, cfg.num_labels(), vb)?,
            dropout: cfg.classifier_dropout.unwrap_or(cfg.hidden_dropout_prob),
        })
    }

    /// Logits `[B, num_labels]` from the pooled output `[B, H]`.
    pub fn forward(&self, pooled: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        self.classifier.forward(&ctx.dropout(pooled, self.dropout)?)
    }
}
