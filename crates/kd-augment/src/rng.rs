//! The seeded draws of augmentation: one ChaCha8 stream per (method, seed, example, copy), so
//! a copy's words depend on nothing else (not on batching, the number of copies or threads).

use kd_core::rng::{below_by_modulo, SeedHash};
use rand::RngCore;
use rand_chacha::ChaCha8Rng;

/// The stream of copy `copy` of example `example` for `method` (`b"tinybert"` or `b"tang"`).
pub fn copy_rng(method: &[u8], seed: u64, example: u64, copy: u64) -> ChaCha8Rng {
    SeedHash::tagged(b"kd-augment/copy/v1\0")
        .bytes(method)
        .bytes(b"\0")
        .u64(seed)
        .u64(example)
        .u64(copy)
        .rng()
}

/// A uniform float in [0, 1) from the top 53 bits of one `next_u64`.
pub fn unit(rng: &mut impl RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform index in `0..n` (`n > 0`).
pub fn index(rng: &mut impl RngCore, n: usize) -> usize {
    below_by_modulo(rng, n as u64) as usize
}
