//! Seeded randomness: ChaCha8 streams keyed by purpose, and the integer draws built on them.
//!
//! Every stream of the data order (masks, batch order, shard order, epoch order, sampled
//! targets) is a ChaCha8 generator seeded from SHA-256 of a purpose tag and the numbers that
//! select it (seed, epoch, sequence id), so any worker reproduces any stream alone. Integer
//! draws are written out here rather than taken from `rand`'s distributions, whose algorithms
//! may change between versions; each algorithm keeps its own name because existing data orders
//! depend on the exact draws of each.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// SHA-256 of a purpose tag and the numbers that select a stream, turned into a seed.
///
/// `SeedHash::tagged(b"kd-data/masks/v1\0").u64(seed).u64(epoch).rng()` hashes the tag's
/// bytes, then each `u64` little-endian, in call order.
#[derive(Debug, Clone, Default)]
pub struct SeedHash(Sha256);

impl SeedHash {
    /// Starts with the bytes of `tag` (a purpose, ending in `\0` by convention).
    pub fn tagged(tag: &[u8]) -> Self {
        SeedHash(Sha256::new()).bytes(tag)
    }

    /// Adds raw bytes.
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self.0.update(bytes);
        self
    }

    /// Adds a number, little-endian.
    pub fn u64(self, v: u64) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    /// The ChaCha8 generator seeded with the 32-byte digest.
    pub fn rng(self) -> ChaCha8Rng {
        ChaCha8Rng::from_seed(self.0.finalize().into())
    }

    /// The first 8 bytes of the digest as a little-endian `u64` (a seed for `seed_from_u64`).
    pub fn seed_u64(self) -> u64 {
        let d = self.0.finalize();
        u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
    }
}

/// A uniform integer in `0..n` (`n = 0` counts as 1) by modulo with rejection: draws
/// `next_u64` until it falls below the largest multiple of `n`, returns it modulo `n`.
pub fn below_by_modulo(rng: &mut impl RngCore, n: u64) -> u64 {
    let n = n.max(1);
    let zone = u64::MAX / n * n;
    loop {
        let x = rng.next_u64();
        if x < zone {
            return x % n;
        }
    }
}

/// A uniform integer in `0..n` (`n > 0`) by Lemire's multiply-and-reject on `next_u64`.
pub fn below_by_multiply(rng: &mut impl RngCore, n: u64) -> u64 {
    let threshold = n.wrapping_neg() % n;
    loop {
        let x = rng.next_u64();
        let m = (x as u128) * (n as u128);
        if (m as u64) >= threshold {
            return (m >> 64) as u64;
        }
    }
}

/// A uniform integer in `0..n` (`n > 0`) as `rand` 0.9's `random_range(0..n)` draws a
/// `usize`: Canon's method, on `next_u32` while `n - 1` fits 32 bits (so 32- and 64-bit
/// machines agree), on `next_u64` above.
pub fn below_by_canon(rng: &mut impl RngCore, n: u64) -> u64 {
    let high = n - 1;
    if high <= u64::from(u32::MAX) {
        let range = (high as u32).wrapping_add(1);
        if range == 0 {
            return u64::from(rng.next_u32());
        }
        let wide = u64::from(rng.next_u32()) * u64::from(range);
        let (mut result, lo) = ((wide >> 32) as u32, wide as u32);
        if lo > range.wrapping_neg() {
            let extra = ((u64::from(rng.next_u32()) * u64::from(range)) >> 32) as u32;
            result += u32::from(lo.checked_add(extra).is_none());
        }
        u64::from(result)
    } else {
        let range = high.wrapping_add(1);
        if range == 0 {
            return rng.next_u64();
        }
        let wide = u128::from(rng.next_u64()) * u128::from(range);
        let (mut result, lo) = ((wide >> 64) as u64, wide as u64);
        if lo > range.wrapping_neg() {
            let extra = ((u128::from(rng.next_u64()) * u128::from(range)) >> 64) as u64;
            result += u64::from(lo.checked_add(extra).is_none());
        }
        result
    }
}

/// Fisher–Yates from the end: for `i` from `len - 1` down to 1, swaps `v[i]` with
/// `v[below(rng, i + 1)]`.
pub fn shuffle_with<T, R: RngCore>(v: &mut [T], rng: &mut R, below: fn(&mut R, u64) -> u64) {
    for i in (1..v.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        v.swap(i, j);
    }
}
