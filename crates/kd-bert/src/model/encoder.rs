//! Transformer layers and the encoder stack.

use super::attention::{AttentionMaps, BertAttention};
use super::layers::{ForwardCtx, LayerNorm, Linear};
use crate::config::{Activation, BertConfig};
use crate::ops;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// One encoder layer: self-attention then the feed-forward block.
#[derive(Debug, Clone)]
pub struct BertLayer {
    attention: BertAttention,
    intermediate: Linear,
    output: Linear,
    layer_norm: LayerNorm,
    activation: Activation,
    dropout: f64,
}

impl BertLayer {
    /// The layer's self-attention (its query and key projections give the cached Q/K targets).
    pub fn attention(&self) -> &BertAttention {
        &self.attention
    }

    /// Creates or loads one layer under `vb` (`encoder.layer.N.*`).
    pub fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            attention: BertAttention::new(cfg, vb.pp("attention"))?,
            intermediate: Linear::new(h, i, vb.pp("intermediate").pp("dense"))?,
            output: Linear::new(i, h, vb.pp("output").pp("dense"))?,
            layer_norm: LayerNorm::new(h, cfg.layer_norm_eps, vb.pp("output").pp("LayerNorm"))?,
            activation: cfg.activation(),
            dropout: cfg.hidden_dropout_prob,
        })
    }

    /// Runs the layer; attention maps are returned when `keep_maps`.
    pub fn forward(
        &self,
        xs: &Tensor,
        additive_mask: &Tensor,
        keep_maps: bool,
        ctx: &mut ForwardCtx,
    ) -> Result<(Tensor, Option<AttentionMaps>)> {
        let (attended, maps) = self.attention.forward(xs, additive_mask, keep_maps, ctx)?;
        let inner = ops::activate(&self.intermediate.forward(&attended)?, self.activation)?;
        let out = ctx.dropout(&self.output.forward(&inner)?, self.dropout)?;
        Ok((self.layer_norm.forward(&out.add(&attended)?)?, maps))
    }
}

/// Attention maps of one requested layer.
#[derive(Debug, Clone)]
pub struct LayerAttention {
    /// Layer number, 1-based (layer n produces hidden state n; 0 is the embedding output).
    pub layer: usize,
    /// Scores and probabilities.
    pub maps: AttentionMaps,
}

/// What the encoder returns.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// Hidden states `[B, L, H]`: index 0 is the embedding output, index n the output of
    /// layer n (1-based), so `hidden_states.len() == num_layers + 1`.
    pub hidden_states: Vec<Tensor>,
    /// Attention maps of the requested layers, in layer order.
    pub attentions: Vec<LayerAttention>,
}

impl EncoderOutput {
    /// The last layer's hidden state.
    pub fn last_hidden_state(&self) -> &Tensor {
        self.hidden_states
            .last()
            .expect("the encoder output always holds the embedding output")
    }

    /// Attention maps of layer `n` (1-based), if they were requested.
    pub fn attention(&self, layer: usize) -> Option<&AttentionMaps> {
        self.attentions
            .iter()
            .find(|a| a.layer == layer)
            .map(|a| &a.maps)
    }
}

/// The stack of encoder layers.
#[derive(Debug, Clone)]
pub struct BertEncoder {
    /// The layers, bottom first.
    pub layers: Vec<BertLayer>,
}

impl BertEncoder {
    /// Creates or loads `num_hidden_layers` layers under `vb` (`encoder.*`).
    pub fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::new(cfg, vb.pp("layer").pp(i)))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// Runs every layer over the embedding output; `attention_layers` lists the 1-based
    /// layers whose maps to keep.
    pub fn forward(
        &self,
        embeddings: Tensor,
        additive_mask: &Tensor,
        attention_layers: &[usize],
        ctx: &mut ForwardCtx,
    ) -> Result<EncoderOutput> {
        let mut hidden_states = Vec::with_capacity(self.layers.len() + 1);
        let mut attentions = Vec::new();
        hidden_states.push(embeddings);
        for (i, layer) in self.layers.iter().enumerate() {
            let number = i + 1;
            let keep = attention_layers.contains(&number);
            let input = hidden_states.last().expect("non-empty");
            let (out, maps) = layer.forward(input, additive_mask, keep, ctx)?;
            if let Some(maps) = maps {
                attentions.push(LayerAttention {
                    layer: number,
                    maps,
                });
            }
            hidden_states.push(out);
        }
        Ok(EncoderOutput {
            hidden_states,
            attentions,
        })
    }
}
