//! Masked-language-model masking, deterministic per (seed, epoch, sequence id).
//!
//! # Contract (stable: cached teacher outputs depend on it)
//! For a sequence `ids` with id `seq_id`, masked for `epoch` under `seed`:
//! 1. The generator is `ChaCha8Rng::from_seed(SHA-256(MASK_RNG_TAG ||
//!    seed.to_le_bytes() || epoch.to_le_bytes() || seq_id.to_le_bytes()))`
//!    (`seed`, `epoch`, `seq_id` as `u64`), see [`mask_rng`]. Only
//!    `next_u64` is used; a unit float is `((x >> 11) + 0.5) / 2^53`, in (0, 1).
//! 2. Candidates are the positions, ascending, whose token is not a special
//!    token (`[CLS]`, `[SEP]`, `[MASK]`, `[PAD]`, `[UNK]`). The number masked is
//!    `round(mask_prob * candidates)` (half away from zero), at least 1 and at
//!    most the number of candidates (0 when there is none).
//! 3. One unit float `u` per candidate, in position order, gives the key
//!    `ln(u) / w` with `w` the candidate's weight: 1 without smoothing, else
//!    `max(count, 1)^-smoothing` (Efraimidis–Spirakis weighted sampling without
//!    replacement). The candidates with the largest keys are taken (ties: lower
//!    position first), then sorted by position.
//! 4. For each taken position, ascending: one unit float `u` picks the action:
//!    `u < mask_frac` -> `[MASK]`, `u < mask_frac + keep_frac` -> keep, else a
//!    random token, drawn right away uniformly over `0..vocab_size` (nothing
//!    excluded) by rejection: draw `x` until `x < (2^64 - 1) / n * n`
//!    (integer division), token `x % n`.

use std::path::Path;

use kd_core::rng::{below_by_modulo, SeedHash};
use rand::RngCore;
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};
use crate::packing::PackedSequence;
use crate::tokens::SpecialTokens;

/// Domain tag hashed in front of (seed, epoch, sequence id), see [`mask_rng`].
pub const MASK_RNG_TAG: &[u8] = b"kd-data/mlm-mask/v1\0";

/// Masking settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MaskConfig {
    /// Share of candidate tokens to mask (default 0.15).
    pub mask_prob: f64,
    /// Share of masked positions replaced by `[MASK]` (default 0.8).
    pub mask_frac: f64,
    /// Share kept unchanged (default 0.1).
    pub keep_frac: f64,
    /// Share replaced by a random token (default 0.1).
    pub random_frac: f64,
    /// Frequency smoothing exponent: positions are sampled with weight
    /// `max(count, 1)^-smoothing` (DistilBERT: 0.7). `None`: uniform.
    pub smoothing: Option<f64>,
}

impl Default for MaskConfig {
    fn default() -> Self {
        MaskConfig {
            mask_prob: 0.15,
            mask_frac: 0.8,
            keep_frac: 0.1,
            random_frac: 0.1,
            smoothing: None,
        }
    }
}

impl MaskConfig {
    /// Checks the settings: shares in [0, 1] summing to 1, `mask_prob` in (0, 1],
    /// smoothing finite and non-negative.
    pub fn validate(&self) -> Result<()> {
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        if !(self.mask_prob > 0.0 && self.mask_prob <= 1.0) {
            return Err(DataError::Invalid(format!(
                "mask_prob must be in (0, 1], got {}",
                self.mask_prob
            )));
        }
        let shares = [self.mask_frac, self.keep_frac, self.random_frac];
        if !shares.iter().all(|&v| unit(v)) || (shares.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
            return Err(DataError::Invalid(format!(
                "mask/keep/random shares must be in [0, 1] and sum to 1, got {shares:?}"
            )));
        }
        if let Some(s) = self.smoothing {
            if !(s.is_finite() && s >= 0.0) {
                return Err(DataError::Invalid(format!(
                    "smoothing must be finite and >= 0, got {s}"
                )));
            }
        }
        Ok(())
    }
}

/// What was done at a masked position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MaskAction {
    /// Replaced by `[MASK]`.
    Mask,
    /// Left unchanged.
    Keep,
    /// Replaced by a uniformly drawn token (possibly the same one).
    Random,
}

impl MaskAction {
    /// Compact code: 0 mask, 1 keep, 2 random.
    pub fn code(self) -> u8 {
        match self {
            MaskAction::Mask => 0,
            MaskAction::Keep => 1,
            MaskAction::Random => 2,
        }
    }
}

/// A masked sequence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MaskedSequence {
    /// Input ids after masking (same length as the original).
    pub input_ids: Vec<u32>,
    /// Masked positions, ascending.
    pub positions: Vec<u32>,
    /// Original ids at `positions` (the MLM labels).
    pub labels: Vec<u32>,
    /// Action at each of `positions`.
    pub actions: Vec<MaskAction>,
}

/// Token frequencies over a corpus, for frequency smoothing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenCounts {
    /// Vocabulary size; `counts.len()`.
    pub vocab_size: usize,
    /// Sum of `counts`.
    pub total: u64,
    /// Occurrences per token id.
    pub counts: Vec<u64>,
}

impl TokenCounts {
    /// All-zero counts for a vocabulary of `vocab_size`.
    pub fn new(vocab_size: usize) -> Self {
        TokenCounts {
            vocab_size,
            total: 0,
            counts: vec![0; vocab_size],
        }
    }

    /// Counts every token of `ids`; an id outside the vocabulary is an error.
    pub fn add(&mut self, ids: &[u32]) -> Result<()> {
        let size = self.counts.len();
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= size) {
            return Err(DataError::Invalid(format!(
                "token id {bad} outside the vocabulary of {size}"
            )));
        }
        for &t in ids {
            self.counts[t as usize] += 1;
        }
        self.total += ids.len() as u64;
        Ok(())
    }

    /// Counts every token (special tokens included) of `sequences`.
    pub fn from_sequences<'a>(
        sequences: impl IntoIterator<Item = &'a PackedSequence>,
        vocab_size: usize,
    ) -> Result<Self> {
        let mut counts = TokenCounts::new(vocab_size);
        for s in sequences {
            counts.add(&s.input_ids)?;
        }
        Ok(counts)
    }

    /// Occurrences of `id` (0 outside the vocabulary).
    pub fn get(&self, id: u32) -> u64 {
        self.counts.get(id as usize).copied().unwrap_or(0)
    }

    /// Sampling weight of every id: `max(count, 1)^-exponent`.
    pub fn smoothing_weights(&self, exponent: f64) -> Vec<f64> {
        self.counts
            .iter()
            .map(|&c| (c.max(1) as f64).powf(-exponent))
            .collect()
    }

    /// JSON text of the counts.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| DataError::Invalid(e.to_string()))
    }

    /// Parses and checks JSON from [`TokenCounts::to_json`].
    pub fn from_json(text: &str) -> Result<Self> {
        let c: TokenCounts = serde_json::from_str(text).map_err(|e| DataError::Json {
            path: "<token counts>".into(),
            line: e.line(),
            message: e.to_string(),
        })?;
        if c.counts.len() != c.vocab_size || c.counts.iter().sum::<u64>() != c.total {
            return Err(DataError::Invalid(
                "token counts: length or total does not match".into(),
            ));
        }
        Ok(c)
    }

    /// Writes the JSON to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json()?).map_err(|e| DataError::io(path, e))
    }

    /// Reads JSON written by [`TokenCounts::save`].
    pub fn load(path: &Path) -> Result<Self> {
        crate::text::require_regular_file(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        TokenCounts::from_json(&text).map_err(|e| match e {
            DataError::Json { line, message, .. } => DataError::Json {
                path: path.to_path_buf(),
                line,
                message,
            },
            other => other,
        })
    }
}

/// The generator for (seed, epoch, sequence id); see the module doc.
pub fn mask_rng(seed: u64, epoch: u64, seq_id: u64) -> ChaCha8Rng {
    SeedHash::tagged(MASK_RNG_TAG)
        .u64(seed)
        .u64(epoch)
        .u64(seq_id)
        .rng()
}

/// A unit float in (0, 1) from one `next_u64`.
pub fn unit_f64(rng: &mut impl RngCore) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// Applies MLM masking.
#[derive(Debug, Clone)]
pub struct Masker {
    config: MaskConfig,
    specials: SpecialTokens,
    vocab_size: u32,
    weights: Option<Vec<f64>>,
}

impl Masker {
    /// A masker for a vocabulary of `vocab_size`. Smoothing needs `counts`
    /// over the same vocabulary.
    pub fn new(
        config: MaskConfig,
        specials: SpecialTokens,
        vocab_size: usize,
        counts: Option<&TokenCounts>,
    ) -> Result<Self> {
        config.validate()?;
        let vocab = u32::try_from(vocab_size)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| DataError::Invalid(format!("bad vocabulary size {vocab_size}")))?;
        let weights = match (config.smoothing, counts) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(DataError::Invalid(
                    "frequency smoothing needs token counts".into(),
                ))
            }
            (Some(e), Some(c)) if c.vocab_size == vocab_size => Some(c.smoothing_weights(e)),
            (Some(_), Some(c)) => {
                return Err(DataError::Invalid(format!(
                    "token counts cover {} ids, the vocabulary has {vocab_size}",
                    c.vocab_size
                )))
            }
        };
        Ok(Masker {
            config,
            specials,
            vocab_size: vocab,
            weights,
        })
    }

    /// The settings.
    pub fn config(&self) -> &MaskConfig {
        &self.config
    }

    /// How many of `candidates` maskable tokens get masked.
    pub fn num_to_mask(&self, candidates: usize) -> usize {
        if candidates == 0 {
            return 0;
        }
        ((self.config.mask_prob * candidates as f64).round() as usize).clamp(1, candidates)
    }

    /// Masks `ids` for (seed, epoch, seq_id), following the module contract.
    pub fn mask(&self, ids: &[u32], seed: u64, epoch: u64, seq_id: u64) -> MaskedSequence {
        self.mask_with_rng(ids, &mut mask_rng(seed, epoch, seq_id))
    }

    /// Masks `ids` drawing from `rng` (steps 2-4 of the module contract).
    pub fn mask_with_rng(&self, ids: &[u32], rng: &mut impl RngCore) -> MaskedSequence {
        let candidates: Vec<usize> = (0..ids.len())
            .filter(|&i| !self.specials.is_special(ids[i]))
            .collect();
        let n = self.num_to_mask(candidates.len());
        let mut keyed: Vec<(f64, usize)> = candidates
            .iter()
            .map(|&i| {
                let w = match &self.weights {
                    Some(w) => w.get(ids[i] as usize).copied().unwrap_or(1.0),
                    None => 1.0,
                };
                (unit_f64(rng).ln() / w, i)
            })
            .collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut chosen: Vec<usize> = keyed.into_iter().take(n).map(|(_, i)| i).collect();
        chosen.sort_unstable();

        let mut out = MaskedSequence {
            input_ids: ids.to_vec(),
            positions: Vec::with_capacity(n),
            labels: Vec::with_capacity(n),
            actions: Vec::with_capacity(n),
        };
        let keep_edge = self.config.mask_frac + self.config.keep_frac;
        for i in chosen {
            let u = unit_f64(rng);
            let action = if u < self.config.mask_frac {
                out.input_ids[i] = self.specials.mask;
                MaskAction::Mask
            } else if u < keep_edge {
                MaskAction::Keep
            } else {
                out.input_ids[i] = below_by_modulo(rng, u64::from(self.vocab_size)) as u32;
                MaskAction::Random
            };
            out.positions.push(i as u32);
            out.labels.push(ids[i]);
            out.actions.push(action);
        }
        out
    }
}
