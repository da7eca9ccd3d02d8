//! Multi-head self-attention that can hand back its scores and probabilities.

use super::layers::{ForwardCtx, LayerNorm, Linear};
use crate::config::BertConfig;
use crate::ops;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use std::cell::Cell;

thread_local! {
    /// Set while [`BertAttention::with_composed`] runs on this thread.
    static COMPOSED_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Attention maps of one layer, `[B, heads, L, L]` each.
#[derive(Debug, Clone)]
pub struct AttentionMaps {
    /// Pre-softmax scores `QK^T / sqrt(d) + mask`, the mask being `(1 - m) * -10000` on keys;
    /// differentiable with respect to the layer's parameters and input.
    pub scores: Tensor,
    /// Attention probabilities (softmax of the scores, before dropout). On the fused CPU path
    /// this is a constant: gradients flow through `scores` and the layer output only.
    pub probs: Tensor,
}

/// Self-attention plus its output projection, residual and LayerNorm.
#[derive(Debug, Clone)]
pub struct BertAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    layer_norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    attention_dropout: f64,
    hidden_dropout: f64,
}

impl BertAttention {
    /// Creates or loads the weights under `vb` (`attention.*`).
    pub fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let sv = vb.pp("self");
        let ov = vb.pp("output");
        Ok(Self {
            query: Linear::new(h, h, sv.pp("query"))?,
            key: Linear::new(h, h, sv.pp("key"))?,
            value: Linear::new(h, h, sv.pp("value"))?,
            output: Linear::new(h, h, ov.pp("dense"))?,
            layer_norm: LayerNorm::new(h, cfg.layer_norm_eps, ov.pp("LayerNorm"))?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            attention_dropout: cfg.attention_probs_dropout_prob,
            hidden_dropout: cfg.hidden_dropout_prob,
        })
    }

    /// The query and key projections of `xs` `[B, L, H]` (biases added, unscaled, heads side
    /// by side): the two tensors from which this layer's scores are `q_h k_h^T / sqrt(d)`.
    pub fn query_key(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.query.forward(xs)?, self.key.forward(xs)?))
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Width of one head (`hidden / heads`); scores are scaled by `1 / sqrt(head_dim)`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Attends over `xs` `[B, L, H]` with the additive key mask `[B, 1, 1, L]`; returns the
    /// layer output and, when `keep_maps`, the attention maps.
    pub fn forward(
        &self,
        xs: &Tensor,
        additive_mask: &Tensor,
        keep_maps: bool,
        ctx: &mut ForwardCtx,
    ) -> Result<(Tensor, Option<AttentionMaps>)> {
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let (q, k, v) = (
            self.query.forward(xs)?,
            self.key.forward(xs)?,
            self.value.forward(xs)?,
        );
        let fused = ops::attention_fits(&q, additive_mask) && !COMPOSED_ONLY.with(Cell::get);
        let (context, maps) = if fused {
            let (b, l, _) = xs.dims3()?;
            let drop = ctx.keep_mask(b * self.heads * l * l, self.attention_dropout);
            if keep_maps {
                let scores = ops::attention_scores(&q, &k, additive_mask, self.heads, scale)?;
                let (context, probs) = ops::attention_from_scores(&scores, &v, drop)?;
                (context, Some(AttentionMaps { scores, probs }))
            } else {
                let context = ops::attention(&q, &k, &v, additive_mask, self.heads, scale, drop)?;
                (context, None)
            }
        } else {
            self.composed(&q, &k, &v, additive_mask, keep_maps, scale, ctx)?
        };
        let projected = ctx.dropout(&self.output.forward(&context)?, self.hidden_dropout)?;
        let out = self.layer_norm.forward(&projected.add(xs)?)?;
        Ok((out, maps))
    }

    /// Runs `f` with every attention on this thread taking the composed path of candle ops,
    /// the reference the fused CPU kernels are tested and benchmarked against.
    pub fn with_composed<R>(f: impl FnOnce() -> R) -> R {
        /// Restores the previous choice, also when `f` panics.
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                COMPOSED_ONLY.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(COMPOSED_ONLY.with(|c| c.replace(true)));
        f()
    }

    /// Attention from candle ops (devices and dtypes without fused kernels, and the reference
    /// for them). Scaling q (L x d) is cheaper than scaling the L x L scores;
    /// keys are split straight into K^T; the mask add is fused into the softmax, and the masked
    /// scores are materialised only when asked for.
    #[allow(clippy::too_many_arguments)]
    fn composed(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        additive_mask: &Tensor,
        keep_maps: bool,
        scale: f64,
        ctx: &mut ForwardCtx,
    ) -> Result<(Tensor, Option<AttentionMaps>)> {
        let q = ops::split_heads(q, self.heads, scale)?;
        let k_t = ops::split_heads_transposed(k, self.heads)?;
        let v = ops::split_heads(v, self.heads, 1.0)?;
        let raw = q.matmul(&k_t)?;
        let probs = ops::masked_softmax(&raw, additive_mask)?;
        let dropped = ctx.dropout(&probs, self.attention_dropout)?;
        let context = ops::merge_heads(&dropped.matmul(&v)?)?;
        let maps = if keep_maps {
            Some(AttentionMaps {
                scores: raw.broadcast_add(additive_mask)?,
                probs,
            })
        } else {
            None
        };
        Ok((context, maps))
    }

    /// The query and key layers' weights (`[H, H]` as `[out, in]`) and biases (`[H]`):
    /// `(W_q, b_q, W_k, b_k)`, the parameters of [`query_key`](Self::query_key).
    pub fn query_key_weights(&self) -> (&Tensor, &Tensor, &Tensor, &Tensor) {
        (
            &self.query.weight,
            &self.query.bias,
            &self.key.weight,
            &self.key.bias,
        )
    }
}
