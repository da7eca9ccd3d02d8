//! Batching: padding to the longest sequence, attention masks, token types,
//! MLM label positions, and length-grouped batch order.

use kd_core::rng::{below_by_modulo, shuffle_with, SeedHash};

use crate::encode::EncodedExample;
use crate::error::{DataError, Result};
use crate::masking::MaskedSequence;
use crate::packing::PackedSequence;
use crate::task::Label;

/// One sequence to put in a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchItem<'a> {
    /// Sequence id, carried through to [`Batch::ids`].
    pub id: u64,
    /// Token ids.
    pub input_ids: &'a [u32],
    /// Token types (all 0 when `None`).
    pub token_type_ids: Option<&'a [u32]>,
    /// Masked positions within the sequence.
    pub mlm_positions: &'a [u32],
    /// Original ids at `mlm_positions`.
    pub mlm_labels: &'a [u32],
    /// Task label, if any (all items of a batch must agree on having one).
    pub label: Option<Label>,
}

impl<'a> BatchItem<'a> {
    /// A packed sequence, unmasked.
    pub fn packed(seq: &'a PackedSequence) -> Self {
        BatchItem {
            id: seq.id,
            input_ids: &seq.input_ids,
            token_type_ids: None,
            mlm_positions: &[],
            mlm_labels: &[],
            label: None,
        }
    }

    /// A masked sequence with id `id`.
    pub fn masked(id: u64, seq: &'a MaskedSequence) -> Self {
        BatchItem {
            id,
            input_ids: &seq.input_ids,
            token_type_ids: None,
            mlm_positions: &seq.positions,
            mlm_labels: &seq.labels,
            label: None,
        }
    }

    /// An encoded task example with id `id` (e.g. its index).
    pub fn task(id: u64, ex: &'a EncodedExample) -> Self {
        BatchItem {
            id,
            input_ids: &ex.input_ids,
            token_type_ids: Some(&ex.token_type_ids),
            mlm_positions: &[],
            mlm_labels: &[],
            label: Some(ex.label),
        }
    }
}

/// A padded batch; every 2-D field is row-major `batch_size x seq_len`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Rows.
    pub batch_size: usize,
    /// Length of the longest sequence.
    pub seq_len: usize,
    /// Sequence id of each row.
    pub ids: Vec<u64>,
    /// Token ids, padded with the pad id.
    pub input_ids: Vec<u32>,
    /// 1 on real tokens, 0 on padding.
    pub attention_mask: Vec<u32>,
    /// Token types, 0 on padding.
    pub token_type_ids: Vec<u32>,
    /// Masked positions as flat indices `row * seq_len + position`, ascending.
    pub mlm_positions: Vec<u32>,
    /// Original ids at `mlm_positions`.
    pub mlm_labels: Vec<u32>,
    /// Task labels, one per row (empty without labels).
    pub labels: Vec<Label>,
}

impl Batch {
    /// MLM labels as a dense `batch_size x seq_len` array with `ignore`
    /// everywhere except the masked positions.
    pub fn mlm_labels_dense(&self, ignore: i64) -> Vec<i64> {
        let mut dense = vec![ignore; self.batch_size * self.seq_len];
        for (&p, &l) in self.mlm_positions.iter().zip(&self.mlm_labels) {
            dense[p as usize] = i64::from(l);
        }
        dense
    }

    /// Number of real (non-padding) tokens.
    pub fn num_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m == 1).count()
    }

    /// Flat indices `row * seq_len + position` of the real (non-padding) tokens, in order.
    pub fn real_positions(&self) -> Vec<u32> {
        (0..self.attention_mask.len() as u32)
            .filter(|&i| self.attention_mask[i as usize] != 0)
            .collect()
    }
}

/// Pads `items` to the longest one with `pad_id`. Errors on an empty batch,
/// token types or MLM labels whose length does not match, MLM positions
/// outside their sequence, and batches mixing items with and without label.
pub fn collate(items: &[BatchItem<'_>], pad_id: u32) -> Result<Batch> {
    let invalid = |i: usize, what: &str| DataError::Invalid(format!("batch item {i}: {what}"));
    if items.is_empty() {
        return Err(DataError::Invalid("empty batch".into()));
    }
    let b = items.len();
    let l = items.iter().map(|it| it.input_ids.len()).max().unwrap_or(0);
    let with_labels = items[0].label.is_some();
    let mut batch = Batch {
        batch_size: b,
        seq_len: l,
        ids: Vec::with_capacity(b),
        input_ids: vec![pad_id; b * l],
        attention_mask: vec![0; b * l],
        token_type_ids: vec![0; b * l],
        mlm_positions: Vec::new(),
        mlm_labels: Vec::new(),
        labels: Vec::new(),
    };
    for (r, it) in items.iter().enumerate() {
        let n = it.input_ids.len();
        let row = r * l;
        batch.ids.push(it.id);
        batch.input_ids[row..row + n].copy_from_slice(it.input_ids);
        batch.attention_mask[row..row + n].fill(1);
        if let Some(tt) = it.token_type_ids {
            if tt.len() != n {
                return Err(invalid(r, "token_type_ids length differs from input_ids"));
            }
            batch.token_type_ids[row..row + n].copy_from_slice(tt);
        }
        if it.mlm_positions.len() != it.mlm_labels.len() {
            return Err(invalid(r, "mlm_positions and mlm_labels differ in length"));
        }
        let mut sorted: Vec<(u32, u32)> = it
            .mlm_positions
            .iter()
            .copied()
            .zip(it.mlm_labels.iter().copied())
            .collect();
        sorted.sort_unstable();
        for (p, lab) in sorted {
            if p as usize >= n {
                return Err(invalid(r, "mlm position outside the sequence"));
            }
            batch.mlm_positions.push((row + p as usize) as u32);
            batch.mlm_labels.push(lab);
        }
        match (with_labels, it.label) {
            (true, Some(lab)) => batch.labels.push(lab),
            (false, None) => {}
            _ => return Err(invalid(r, "items mix with and without labels")),
        }
    }
    Ok(batch)
}

/// Length-grouped batching settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupConfig {
    /// Sequences per batch.
    pub batch_size: usize,
    /// Batches per sorting window (default 100).
    pub window_batches: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            batch_size: 32,
            window_batches: 100,
        }
    }
}

/// Domain tag of the batch-order generator, see [`length_grouped_batches`].
pub const BATCH_RNG_TAG: &[u8] = b"kd-data/batches/v1\0";

/// Splits indices `0..lengths.len()` into batches of similar length.
///
/// With `ChaCha8Rng::from_seed(SHA-256(BATCH_RNG_TAG || seed || epoch))`
/// (little-endian `u64`s): shuffle all indices (Fisher–Yates from the end,
/// `j = below_by_modulo(i + 1)` of [`kd_core::rng`]), cut the order into windows of
/// `batch_size * window_batches`, sort each window by length (stable), cut it
/// into batches of `batch_size`, then shuffle the list of batches the same way.
/// Every index appears exactly once; only the last window's last batch can be
/// short. Returns an empty list for no sequences; a zero size is an error.
pub fn length_grouped_batches(
    lengths: &[usize],
    config: &GroupConfig,
    seed: u64,
    epoch: u64,
) -> Result<Vec<Vec<usize>>> {
    if config.batch_size == 0 || config.window_batches == 0 {
        return Err(DataError::Invalid(
            "batch_size and window_batches must be positive".into(),
        ));
    }
    let mut rng = SeedHash::tagged(BATCH_RNG_TAG).u64(seed).u64(epoch).rng();
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    shuffle_with(&mut order, &mut rng, below_by_modulo);
    let window = config.batch_size.saturating_mul(config.window_batches);
    let mut batches = Vec::with_capacity(lengths.len().div_ceil(config.batch_size));
    for w in order.chunks_mut(window) {
        w.sort_by_key(|&i| lengths[i]);
        batches.extend(w.chunks(config.batch_size).map(<[usize]>::to_vec));
    }
    shuffle_with(&mut batches, &mut rng, below_by_modulo);
    Ok(batches)
}
