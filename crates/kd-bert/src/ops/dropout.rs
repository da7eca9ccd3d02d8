//! Dropout driven by a seeded, checkpointable RNG.

use candle_core::{Result, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Zeroes each element with probability `p` and scales the rest by `1 / (1 - p)`.
///
/// The mask comes from `rng`, so a training run that checkpoints the RNG resumes with the
/// same masks (candle's CPU RNG cannot be seeded). On a GPU the mask is drawn there, by the
/// device's generator seeded from `rng`: as reproducible, without a host-side mask per call.
pub fn dropout(xs: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(xs.clone());
    }
    if !xs.device().is_cpu() {
        xs.device().set_seed(rng.random::<u64>())?;
        let u = Tensor::rand(0f32, 1f32, xs.shape(), xs.device())?;
        let mask = u
            .ge(p)?
            .to_dtype(xs.dtype())?
            .affine(f64::from((1.0 / (1.0 - p)) as f32), 0.0)?;
        return xs.mul(&mask);
    }
    let mask = Tensor::from_vec(keep_mask(xs.elem_count(), p, rng), xs.shape(), xs.device())?;
    xs.mul(&mask.to_dtype(xs.dtype())?)
}

/// The host-drawn dropout mask of `n` elements (`0` or `1 / (1 - p)`), as [`dropout`] draws it
/// on CPU: the same draws from `rng`, so fused ops that take the mask reproduce its results.
pub fn keep_mask(n: usize, p: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    let threshold = (keep * u32::MAX as f64) as u32;
    (0..n)
        .map(|_| {
            if rng.random::<u32>() < threshold {
                scale
            } else {
                0.0
            }
        })
        .collect()
}
