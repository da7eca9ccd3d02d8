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
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    if !xs.device().is_cpu() {
        xs.device().set_seed(rng.random::<u64>())?;
        let u = Tensor::rand(0f32, 1f32, xs.shape(), xs.device())?;
        let mask = u.ge(p)?.to_dtype(xs.dtype())?.affine(scale as f64, 0.0)?;
        return xs.mul(&mask);
    }
    let threshold = (keep * u32::MAX as f64) as u32;
    let mask: Vec<f32> = (0..xs.elem_count())
        .map(|_| {
            if rng.random::<u32>() < threshold {
                scale
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
    xs.mul(&mask)
}
