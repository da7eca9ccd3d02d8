//! Dropout driven by a seeded, checkpointable RNG.

use candle_core::{Result, Tensor};
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

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

/// Draws per parallel chunk of [`keep_mask`].
const MASK_CHUNK: usize = 1 << 16;

/// The host-drawn dropout mask of `n` elements (`0` or `1 / (1 - p)`), as [`dropout`] draws it
/// on CPU: the same draws from `rng`, so fused ops that take the mask reproduce its results.
///
/// Element `i` is decided by the `i`-th 32-bit word of `rng`'s stream; ChaCha is seekable, so
/// chunks are drawn in parallel from their own stream positions, giving the same mask as one
/// sequential pass, and `rng` ends `n` words further on.
pub fn keep_mask(n: usize, p: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    let threshold = (keep * u32::MAX as f64) as u32;
    let base = rng.get_word_pos();
    let mut mask = vec![0f32; n];
    mask.par_chunks_mut(MASK_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut r = rng.clone();
            r.set_word_pos(base + (c * MASK_CHUNK) as u128);
            for m in chunk {
                if r.next_u32() < threshold {
                    *m = scale;
                }
            }
        });
    rng.set_word_pos(base + n as u128);
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parallel_mask_equals_sequential_draws() {
        for n in [0, 1, 7, MASK_CHUNK - 1, MASK_CHUNK, 2 * MASK_CHUNK + 13] {
            let mut a = ChaCha8Rng::seed_from_u64(9);
            let _ = a.random::<u32>(); // start mid-block
            let mut b = a.clone();
            let threshold = (0.9 * u32::MAX as f64) as u32;
            let scale = (1.0 / 0.9f64) as f32;
            let expect: Vec<f32> = (0..n)
                .map(|_| {
                    if b.random::<u32>() < threshold {
                        scale
                    } else {
                        0.0
                    }
                })
                .collect();
            assert_eq!(keep_mask(n, 0.1, &mut a), expect, "n = {n}");
            assert_eq!(
                a.random::<u64>(),
                b.random::<u64>(),
                "stream position after n = {n}"
            );
        }
    }
}
