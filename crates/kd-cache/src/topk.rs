//! Building MLM targets from full-vocabulary teacher logits, and the
//! probabilities they stand for (the math of `schemas/cache-v2.md`).

use rand::Rng;
use rayon::prelude::*;

use crate::error::{CacheError, Result};
use crate::precision::Precision;
use crate::quant::Quantized;
use crate::record::{Sampled, TopK};

fn rows_of(logits: &[f32], vocab: usize) -> Result<std::slice::ChunksExact<'_, f32>> {
    if vocab == 0 || !logits.len().is_multiple_of(vocab) {
        return Err(CacheError::Invalid(format!(
            "{} logits do not form rows of a vocabulary of {vocab}",
            logits.len()
        )));
    }
    if let Some(v) = logits.iter().find(|v| !v.is_finite()) {
        return Err(CacheError::Invalid(format!("non-finite teacher logit {v}")));
    }
    Ok(logits.chunks_exact(vocab))
}

/// `log Σ exp(x / t)` of a row already shifted so that its maximum is 0 (every term is in
/// (0, 1], so f32 exponentials summed in f64 lose nothing that matters).
fn log_partition(shifted: &[f32], t: f32) -> f32 {
    let inv = 1.0 / t;
    let sum: f64 = shifted.iter().map(|&x| f64::from((x * inv).exp())).sum();
    sum.ln() as f32
}

/// Top-k ids and shifted logits of one row, and its log-partition per temperature.
fn row_top_k(row: &[f32], k: usize, temperatures: &[f32]) -> (Vec<u32>, Vec<f32>, Vec<f32>) {
    let vocab = row.len();
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let shifted: Vec<f32> = row.iter().map(|z| z - max).collect();
    let mut order: Vec<u32> = (0..vocab as u32).collect();
    let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    if k < vocab {
        order.select_nth_unstable_by(k - 1, cmp);
    }
    order.truncate(k);
    order.sort_unstable_by(cmp);
    let top = order.iter().map(|&i| shifted[i as usize]).collect();
    let log_z = temperatures
        .iter()
        .map(|&t| log_partition(&shifted, t))
        .collect();
    (order, top, log_z)
}

impl TopK {
    /// Top-k of each row of `logits` (`[n_mask, vocab]` row-major), stored
    /// relative to the row maximum (`z - max z`, so the first logit of each
    /// row is 0) together with `log Σ_v exp((z_v - max z) / T)` for every
    /// temperature. Ties keep the lower id first.
    pub fn from_vocab_logits(
        logits: &[f32],
        vocab: usize,
        k: usize,
        temperatures: &[f32],
        precision: Precision,
    ) -> Result<TopK> {
        if k == 0 || k > vocab {
            return Err(CacheError::Invalid(format!(
                "top-k needs 0 < k <= vocabulary ({vocab}), got {k}"
            )));
        }
        if temperatures.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
            return Err(CacheError::Invalid("temperatures must be positive".into()));
        }
        let rows: Vec<&[f32]> = rows_of(logits, vocab)?.collect();
        // Rows are independent: select, sort and sum them in parallel.
        let per_row: Vec<(Vec<u32>, Vec<f32>, Vec<f32>)> = rows
            .par_iter()
            .map(|row| row_top_k(row, k, temperatures))
            .collect();
        let n = per_row.len();
        let mut ids = Vec::with_capacity(n * k);
        let mut top = Vec::with_capacity(n * k);
        let mut log_z = Vec::with_capacity(n * temperatures.len());
        for (i, t, z) in per_row {
            ids.extend(i);
            top.extend(t);
            log_z.extend(z);
        }
        Ok(TopK {
            ids,
            logits: Quantized::encode(&top, k, precision)?,
            log_partition: log_z,
        })
    }

    /// The rows `rows` of a top-k record, e.g. its masked positions out of a record that
    /// has a row for every token; an index past the last row is an error.
    pub fn select_rows(&self, rows: &[u32]) -> Result<TopK> {
        let n = self.positions();
        let k = self.logits.cols();
        let nt = self.log_partition.len().checked_div(n).unwrap_or(0);
        if let Some(&bad) = rows.iter().find(|&&r| r as usize >= n) {
            return Err(CacheError::Invalid(format!(
                "top-k row {bad} asked of a record with {n} rows"
            )));
        }
        let values = self.logits.decode();
        let (mut ids, mut logits, mut logz) = (Vec::new(), Vec::new(), Vec::new());
        for &r in rows {
            let r = r as usize;
            ids.extend_from_slice(&self.ids[r * k..(r + 1) * k]);
            logits.extend_from_slice(&values[r * k..(r + 1) * k]);
            logz.extend_from_slice(&self.log_partition[r * nt..(r + 1) * nt]);
        }
        Ok(TopK {
            ids,
            logits: Quantized::encode(&logits, k, self.logits.precision())?,
            log_partition: logz,
        })
    }

    /// Number of rows (masked positions, or tokens when the cache has a row per token).
    pub fn positions(&self) -> usize {
        self.logits.rows()
    }

    /// Teacher probabilities of the top-k ids of masked position `pos` at
    /// `temperature` (one of `temperatures`, the cache's list), and the tail
    /// mass `1 - Σ p` (clamped at 0):
    /// `p_i = exp(z_i / T - log_partition[pos, t])`.
    pub fn probs(
        &self,
        pos: usize,
        temperatures: &[f32],
        temperature: f32,
    ) -> Result<(Vec<f32>, f32)> {
        let t = temperatures
            .iter()
            .position(|&x| x == temperature)
            .ok_or_else(|| {
                CacheError::Invalid(format!(
                    "temperature {temperature} is not stored (stored: {temperatures:?})"
                ))
            })?;
        let z = self.logits.decode_row(pos).ok_or_else(|| {
            CacheError::Invalid(format!("no masked position {pos} in {}", self.positions()))
        })?;
        let log_z = self
            .log_partition
            .get(pos * temperatures.len() + t)
            .copied()
            .ok_or_else(|| CacheError::Invalid("log-partition missing".into()))?;
        let p: Vec<f32> = z
            .iter()
            .map(|&x| (f64::from(x) / f64::from(temperature) - f64::from(log_z)).exp() as f32)
            .collect();
        let tail = (1.0 - p.iter().map(|&x| f64::from(x)).sum::<f64>()).max(0.0) as f32;
        Ok((p, tail))
    }
}

impl Sampled {
    /// Draws `k` tokens with replacement from `softmax(z / temperature)` of
    /// each row of `logits` (`[n_mask, vocab]`), keeping distinct ids
    /// (ascending) and their counts.
    pub fn draw(
        logits: &[f32],
        vocab: usize,
        k: u16,
        temperature: f32,
        rng: &mut impl Rng,
    ) -> Result<Sampled> {
        if k == 0 || !(temperature.is_finite() && temperature > 0.0) {
            return Err(CacheError::Invalid(
                "sampling needs k > 0 and a positive temperature".into(),
            ));
        }
        let rows = rows_of(logits, vocab)?;
        let mut out = Sampled {
            offsets: vec![0],
            ids: Vec::new(),
            counts: Vec::new(),
        };
        let mut cdf = vec![0f64; vocab];
        let mut draws: Vec<u32> = Vec::with_capacity(usize::from(k));
        for row in rows {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let inv = 1.0 / f64::from(temperature);
            let mut acc = 0f64;
            for (c, &z) in cdf.iter_mut().zip(row) {
                acc += (f64::from(z - max) * inv).exp();
                *c = acc;
            }
            draws.clear();
            for _ in 0..k {
                let u = rng.random::<f64>() * acc;
                let i = cdf.partition_point(|&c| c <= u).min(vocab - 1);
                draws.push(i as u32);
            }
            draws.sort_unstable();
            for &id in &draws {
                if out.ids.len() > *out.offsets.last().unwrap_or(&0) as usize
                    && out.ids.last() == Some(&id)
                {
                    if let Some(c) = out.counts.last_mut() {
                        *c += 1;
                    }
                } else {
                    out.ids.push(id);
                    out.counts.push(1);
                }
            }
            let end = u32::try_from(out.ids.len())
                .map_err(|_| CacheError::Invalid("too many sampled ids".into()))?;
            out.offsets.push(end);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn softmax(z: &[f32], t: f32) -> Vec<f64> {
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f64> = z
            .iter()
            .map(|&x| (f64::from(x - max) / f64::from(t)).exp())
            .collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    fn logits(n: usize, vocab: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * vocab)
            .map(|_| rng.random_range(-8.0..12.0))
            .collect()
    }

    #[test]
    fn topk_probabilities_and_tail_are_exact_in_f32() {
        let (n, vocab, k) = (3, 500, 10);
        let z = logits(n, vocab, 1);
        let temps = [1.0, 2.0, 0.5];
        let t = TopK::from_vocab_logits(&z, vocab, k, &temps, Precision::F32).unwrap();
        assert_eq!(t.positions(), n);
        for pos in 0..n {
            let row = &z[pos * vocab..(pos + 1) * vocab];
            let ids = &t.ids[pos * k..(pos + 1) * k];
            let mut sorted: Vec<usize> = (0..vocab).collect();
            sorted.sort_by(|a, b| row[*b].total_cmp(&row[*a]));
            assert_eq!(
                ids,
                sorted[..k].iter().map(|&i| i as u32).collect::<Vec<_>>()
            );
            assert_eq!(t.logits.decode_row(pos).unwrap()[0], 0.0);
            for &temp in &temps {
                let full = softmax(row, temp);
                let (p, tail) = t.probs(pos, &temps, temp).unwrap();
                for (j, &id) in ids.iter().enumerate() {
                    assert!((f64::from(p[j]) - full[id as usize]).abs() < 1e-6);
                }
                let want: f64 = 1.0 - ids.iter().map(|&i| full[i as usize]).sum::<f64>();
                assert!((f64::from(tail) - want).abs() < 1e-5, "{tail} {want}");
            }
        }
        assert!(t.probs(0, &temps, 3.0).is_err());
        assert!(t.probs(9, &temps, 1.0).is_err());
    }

    #[test]
    fn topk_f16_probabilities_are_close() {
        let (n, vocab, k) = (4, 300, 16);
        let z = logits(n, vocab, 2);
        let t = TopK::from_vocab_logits(&z, vocab, k, &[1.0], Precision::F16).unwrap();
        for pos in 0..n {
            let full = softmax(&z[pos * vocab..(pos + 1) * vocab], 1.0);
            let (p, _) = t.probs(pos, &[1.0], 1.0).unwrap();
            for (j, &id) in t.ids[pos * k..(pos + 1) * k].iter().enumerate() {
                let q = full[id as usize];
                assert!((f64::from(p[j]) - q).abs() <= 2e-2 * q, "{} {q}", p[j]);
            }
        }
    }

    #[test]
    fn sampled_counts_follow_the_distribution() {
        let vocab = 6;
        let z = vec![3.0f32, 1.0, 0.0, -1.0, 2.0, -5.0];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let k = 60000u16;
        let s = Sampled::draw(&z, vocab, k, 2.0, &mut rng).unwrap();
        assert_eq!(s.offsets.len(), 2);
        let (ids, counts) = s.position(0).unwrap();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            counts.iter().map(|&c| u32::from(c)).sum::<u32>(),
            u32::from(k)
        );
        let p = softmax(&z, 2.0);
        for (&id, &c) in ids.iter().zip(counts) {
            let freq = f64::from(c) / f64::from(k);
            assert!(
                (freq - p[id as usize]).abs() < 0.01,
                "{id}: {freq} vs {}",
                p[id as usize]
            );
        }
        assert!(Sampled::draw(&z, 4, 3, 1.0, &mut rng).is_err());
        assert!(Sampled::draw(&z, vocab, 0, 1.0, &mut rng).is_err());
    }
}
