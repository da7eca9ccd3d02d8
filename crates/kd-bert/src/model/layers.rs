//! Small layers shared by the encoder and the heads.

use crate::ops;
use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};
use rand_chacha::ChaCha8Rng;

/// Per-call forward settings: dropout is active exactly when an RNG is given.
pub struct ForwardCtx<'a> {
    rng: Option<&'a mut ChaCha8Rng>,
}

impl<'a> ForwardCtx<'a> {
    /// Inference: no dropout.
    pub fn eval() -> Self {
        Self { rng: None }
    }

    /// Training: dropout masks drawn from `rng`.
    pub fn train(rng: &'a mut ChaCha8Rng) -> Self {
        Self { rng: Some(rng) }
    }

    /// Whether dropout is active.
    pub fn is_train(&self) -> bool {
        self.rng.is_some()
    }

    /// Applies dropout with probability `p` in training, identity in eval.
    pub fn dropout(&mut self, xs: &Tensor, p: f64) -> Result<Tensor> {
        match self.rng.as_deref_mut() {
            Some(rng) if p > 0.0 => ops::dropout(xs, p, rng),
            _ => Ok(xs.clone()),
        }
    }

    /// The keep-mask of `n` elements that [`Self::dropout`] would draw on CPU (same RNG draws),
    /// for fused ops that apply dropout inside; `None` in eval or when `p` is 0.
    pub fn keep_mask(&mut self, n: usize, p: f64) -> Option<Vec<f32>> {
        match self.rng.as_deref_mut() {
            Some(rng) if p > 0.0 => Some(ops::keep_mask(n, p, rng)),
            _ => None,
        }
    }
}

/// Normal(0, 0.02) init as in BERT, for freshly created weights.
pub(crate) const WEIGHT_INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

/// A dense layer `x W^T + b` over the last dimension.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Weight, `[out, in]`.
    pub weight: Tensor,
    /// Bias, `[out]`.
    pub bias: Tensor,
}

impl Linear {
    /// Creates or loads `weight` and `bias` under `vb`.
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", WEIGHT_INIT)?;
        let bias = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias })
    }

    /// Applies the layer to `[..., in]` (one fused node on CPU, see [`ops::linear`]).
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        ops::linear(xs, &self.weight, &self.bias)
    }
}

/// LayerNorm with learned scale and shift (differentiable, fused on CPU).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// Scale, `[hidden]`.
    pub weight: Tensor,
    /// Shift, `[hidden]`.
    pub bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Creates or loads `weight` and `bias` under `vb`.
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(size, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(size, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    /// Normalises the last dimension.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        ops::layer_norm(xs, &self.weight, &self.bias, self.eps)
    }
}
