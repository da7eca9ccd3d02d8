//! Word + position + token-type embeddings followed by LayerNorm and dropout.

use super::layers::{ForwardCtx, LayerNorm, WEIGHT_INIT};
use crate::config::BertConfig;
use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

/// BERT's input embeddings.
#[derive(Debug, Clone)]
pub struct BertEmbeddings {
    /// Word embedding table `[vocab, hidden]`, also the tied MLM decoder.
    pub word_embeddings: Tensor,
    /// Position embedding table `[max_positions, hidden]`.
    pub position_embeddings: Tensor,
    /// Token-type embedding table `[type_vocab, hidden]`.
    pub token_type_embeddings: Tensor,
    layer_norm: LayerNorm,
    dropout: f64,
}

impl BertEmbeddings {
    /// Creates or loads the embeddings under `vb` (`embeddings.*`).
    pub fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            word_embeddings: vb.get_with_hints(
                (cfg.vocab_size, h),
                "word_embeddings.weight",
                WEIGHT_INIT,
            )?,
            position_embeddings: vb.get_with_hints(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
                WEIGHT_INIT,
            )?,
            token_type_embeddings: vb.get_with_hints(
                (cfg.type_vocab_size, h),
                "token_type_embeddings.weight",
                WEIGHT_INIT,
            )?,
            layer_norm: LayerNorm::new(h, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    /// Embeds `input_ids` `[B, L]` (u32) with optional `token_type_ids` `[B, L]`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        ctx: &mut ForwardCtx,
    ) -> Result<Tensor> {
        let (b, l) = input_ids.dims2()?;
        let max_pos = self.position_embeddings.dim(0)?;
        if l > max_pos {
            candle_core::bail!("sequence length {l} exceeds max_position_embeddings {max_pos}")
        }
        let hidden = self.word_embeddings.dim(1)?;
        let flat_ids = input_ids.to_dtype(DType::U32)?.flatten_all()?;
        let words = self
            .word_embeddings
            .index_select(&flat_ids, 0)?
            .reshape((b, l, hidden))?;
        let positions = self.position_embeddings.narrow(0, 0, l)?.unsqueeze(0)?;
        let types = match token_type_ids {
            Some(t) => self
                .token_type_embeddings
                .index_select(&t.to_dtype(DType::U32)?.flatten_all()?, 0)?
                .reshape((b, l, hidden))?,
            None => self
                .token_type_embeddings
                .narrow(0, 0, 1)?
                .unsqueeze(0)?
                .broadcast_as((b, l, hidden))?,
        };
        let sum = words.add(&types)?.broadcast_add(&positions)?;
        let normed = self.layer_norm.forward(&sum)?;
        ctx.dropout(&normed, self.dropout)
    }
}
