//! Differentiable building blocks shared by the losses.
//!
//! candle's fused `softmax_last_dim` records no backward pass, so the losses build their
//! (log-)softmaxes from plain differentiable candle ops here.

use candle_core::{Result, Tensor, D};

/// Log-softmax over the last dimension, differentiable on every device and dtype.
///
/// `x - max(x) - log Σ exp(x - max(x))` with the row maximum detached: the log-softmax does
/// not depend on the shift, so the gradient is exact and no gradient is routed through the
/// max (where ties would split it).
pub fn log_softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    let (shifted, log_total) = shifted_log_partition(xs)?;
    shifted.broadcast_sub(&log_total)
}

/// `(x - max(x), log Σ exp(x - max(x)))` over the last dimension (the second keeps the
/// reduced dimension). `shifted.gather(ids) - log_total` gives log-softmax values at chosen
/// ids without materialising the whole log-softmax.
pub(crate) fn shifted_log_partition(xs: &Tensor) -> Result<(Tensor, Tensor)> {
    let (shifted, _, log_total) = shifted_exp_log_partition(xs)?;
    Ok((shifted, log_total))
}

/// Like [`shifted_log_partition`], also returning `exp(x - max(x))`.
pub(crate) fn shifted_exp_log_partition(xs: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let max = xs.max_keepdim(D::Minus1)?.detach();
    let shifted = xs.broadcast_sub(&max)?;
    let exp = shifted.exp()?;
    let log_total = exp.sum_keepdim(D::Minus1)?.log()?;
    Ok((shifted, exp, log_total))
}

/// `p (log p − log q)` elementwise with the `p = 0` terms 0 (torch's `KLDivLoss` convention),
/// given `p`, `log p` and `log q` of one shape.
pub(crate) fn kl_pointwise(p: &Tensor, log_p: &Tensor, log_q: &Tensor) -> Result<Tensor> {
    let terms = p.mul(&log_p.sub(log_q)?)?;
    p.gt(0.0)?.where_cond(&terms, &terms.zeros_like()?)
}
