//! One cached record: what the teacher saw and produced for one
//! (epoch, sequence), and its check against a [`TargetSpec`].

use std::sync::Arc;

use crate::attention_input::AttentionWeights;
use crate::error::{CacheError, Result};
use crate::precision::Precision;
use crate::quant::Quantized;
use crate::targets::TargetSpec;

/// Top-k teacher logits at each masked position, with log-partitions.
///
/// `ids` and `logits` are `[n_mask, k]` row-major, each row sorted by
/// descending logit; `log_partition` is `[n_mask, n_temps]` with
/// `log Σ_v exp(z_v / T)` over the full vocabulary, in the same frame as
/// `logits` (see `schemas/cache-v2.md`: any per-position shift of the logits
/// is allowed as long as the log-partitions use it too;
/// [`TopK::from_vocab_logits`] stores `z - max z`).
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    /// Token ids, `[n_mask, k]`.
    pub ids: Vec<u32>,
    /// Logits of `ids`, `[n_mask, k]` (`cols() == k`).
    pub logits: Quantized,
    /// Log-partition per masked position and temperature, `[n_mask, n_temps]`.
    pub log_partition: Vec<f32>,
}

/// Tokens drawn from the teacher distribution at each masked position.
///
/// Position `m` owns `ids[offsets[m]..offsets[m + 1]]` (distinct ids) and the
/// matching `counts`, which sum to `k`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sampled {
    /// `n_mask + 1` offsets into `ids`/`counts`, starting at 0.
    pub offsets: Vec<u32>,
    /// Distinct sampled ids per position.
    pub ids: Vec<u32>,
    /// How often each id was drawn.
    pub counts: Vec<u16>,
}

/// The tensor of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerValues {
    /// Layer index (hidden: 0 = embeddings; attention: 1..=N).
    pub layer: u32,
    /// Hidden: `[n, H]`; attention: `[heads * n, n]` (i.e. `[heads, n, n]`).
    pub values: Quantized,
}

/// A task label.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Label {
    /// A class id.
    Class(u32),
    /// A regression target.
    Value(f32),
}

/// One record per (epoch, sequence).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    /// Sequence id (see `kd_data::packing::sequence_id`).
    pub seq_id: u64,
    /// Masked epoch.
    pub epoch: u32,
    /// The masked input the teacher saw: real tokens only, length n.
    pub input_ids: Vec<u32>,
    /// Segment ids, length n, if the model uses them.
    pub token_type_ids: Option<Vec<u32>>,
    /// Masked positions, ascending, each `< n`.
    pub mlm_positions: Vec<u32>,
    /// Original ids at `mlm_positions`.
    pub mlm_labels: Vec<u32>,
    /// Top-k logits (when the cache has `mlm_topk`).
    pub mlm_topk: Option<TopK>,
    /// Sampled tokens (when the cache has `mlm_sampled`).
    pub mlm_sampled: Option<Sampled>,
    /// Hidden states, one per layer of the spec, in its order.
    pub hidden: Vec<LayerValues>,
    /// Pre-softmax attention scores, one per layer of the spec, in its order.
    pub attention: Vec<LayerValues>,
    /// Classifier logits (when the cache has `logits`).
    pub logits: Option<Vec<f32>>,
    /// Task label, if any.
    pub label: Option<Label>,
    /// Query and key projections, one per `attention_qk` layer of the spec, in its order
    /// (layout in [`crate::qk`]).
    pub attention_qk: Vec<LayerValues>,
    /// Input hidden states (hidden `l - 1`) of the `attention_input` layers whose input the
    /// records store ([`crate::attention_input::stored_layers`]), keyed by the encoder layer
    /// `l`, in its order (layout in [`crate::attention_input`]).
    pub attention_input: Vec<LayerValues>,
    /// The cache's query/key weights of its `attention_input` layers, shared by all its
    /// records (set by readers and by an online teacher; not part of the stored record).
    pub attention_weights: Option<Arc<AttentionWeights>>,
}

fn bad<T>(msg: String) -> Result<T> {
    Err(CacheError::Invalid(msg))
}

impl Sampled {
    /// Ids and counts of masked position `m`.
    pub fn position(&self, m: usize) -> Option<(&[u32], &[u16])> {
        let a = *self.offsets.get(m)? as usize;
        let b = *self.offsets.get(m + 1)? as usize;
        Some((self.ids.get(a..b)?, self.counts.get(a..b)?))
    }
}

impl Record {
    /// Number of real tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether the record has no token.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Hidden state of `layer`, if stored.
    pub fn hidden_layer(&self, layer: u32) -> Option<&Quantized> {
        self.hidden
            .iter()
            .find(|l| l.layer == layer)
            .map(|l| &l.values)
    }

    /// Attention scores of `layer`, if stored.
    pub fn attention_layer(&self, layer: u32) -> Option<&Quantized> {
        self.attention
            .iter()
            .find(|l| l.layer == layer)
            .map(|l| &l.values)
    }

    /// Query/key projections of `layer`, if stored.
    pub fn attention_qk_layer(&self, layer: u32) -> Option<&Quantized> {
        self.attention_qk
            .iter()
            .find(|l| l.layer == layer)
            .map(|l| &l.values)
    }

    /// The input hidden state of encoder layer `layer` (hidden `layer - 1`) for the
    /// `attention_input` target: its own tensor, else the hidden target's layer `layer - 1`
    /// (reused, see [`crate::attention_input`]); `None` when the record has no query/key
    /// weights for `layer`.
    pub fn attention_input_layer(&self, layer: u32) -> Option<&Quantized> {
        self.attention_weights.as_ref()?.layer(layer)?;
        self.attention_input
            .iter()
            .find(|l| l.layer == layer)
            .map(|l| &l.values)
            .or_else(|| self.hidden_layer(layer.checked_sub(1)?))
    }

    /// The pre-softmax scores `[heads, n, n]` of encoder layer `layer` over the real block:
    /// the stored map, else recomputed from the stored query/key projections (for a teacher
    /// of width `hidden` with `heads` heads, the manifest's), else from the stored input and
    /// the cache's query/key weights; `None` when none is stored.
    pub fn attention_scores(
        &self,
        layer: u32,
        hidden: usize,
        heads: usize,
    ) -> Result<Option<Vec<f32>>> {
        if let Some(map) = self.attention_layer(layer) {
            return Ok(Some(map.decode()));
        }
        match self.attention_qk_layer(layer) {
            Some(qk) => crate::qk::scores(qk, self.len(), hidden, heads)
                .map(Some)
                .map_err(|e| {
                    CacheError::Invalid(format!(
                        "record {}: attention_qk layer {layer}: {e}",
                        self.seq_id
                    ))
                }),
            None => match self.attention_input_layer(layer) {
                Some(x) => {
                    let w = self.attention_weights.as_deref().ok_or_else(|| {
                        CacheError::Invalid("attention input without weights".into())
                    })?;
                    crate::attention_input::scores(x, self.len(), layer, w, heads)
                        .map(Some)
                        .map_err(|e| {
                            CacheError::Invalid(format!(
                                "record {}: attention_input layer {layer}: {e}",
                                self.seq_id
                            ))
                        })
                }
                None => Ok(None),
            },
        }
    }

    /// Converts every tensor to the precision of `spec` (a no-op when they
    /// already match), so producers may hand over f32 values.
    pub fn conform(&mut self, spec: &TargetSpec) -> Result<()> {
        if let (Some(t), Some(s)) = (&mut self.mlm_topk, &spec.mlm_topk) {
            if t.logits.precision() != s.logit_precision {
                t.logits = t.logits.to_precision(s.logit_precision)?;
            }
        }
        for (layers, s) in [
            (&mut self.hidden, &spec.hidden),
            (&mut self.attention, &spec.attention),
        ] {
            if let Some(s) = s {
                for l in layers.iter_mut() {
                    if l.values.precision() != s.precision {
                        l.values = l.values.to_precision(s.precision)?;
                    }
                }
            }
        }
        if let Some(s) = &spec.attention_qk {
            let n = self.input_ids.len();
            for l in self.attention_qk.iter_mut() {
                if l.values.precision() != s.precision {
                    // One row per token, except int8 (which keeps the rows it is given).
                    let cols = match crate::qk::width(&l.values, n) {
                        Ok(w) if s.precision != Precision::Int8 => w,
                        _ => l.values.cols(),
                    };
                    l.values = Quantized::encode(&l.values.decode(), cols, s.precision)?;
                }
            }
        }
        if let Some(s) = &spec.attention_input {
            let n = self.input_ids.len();
            for l in self.attention_input.iter_mut() {
                if l.values.precision() != s.precision {
                    // One row per token, except int8 (which keeps the rows it is given).
                    let cols = match crate::attention_input::width(&l.values, n) {
                        Ok(w) if s.precision != Precision::Int8 => w,
                        _ => l.values.cols(),
                    };
                    l.values = Quantized::encode(&l.values.decode(), cols, s.precision)?;
                }
            }
        }
        Ok(())
    }

    /// Checks that the record has exactly the targets of `spec`, at its
    /// precisions, with consistent shapes.
    pub fn validate(&self, spec: &TargetSpec) -> Result<()> {
        let n = self.input_ids.len();
        let m = self.mlm_positions.len();
        if self.mlm_labels.len() != m {
            return bad(format!(
                "{} mlm_positions but {} mlm_labels",
                m,
                self.mlm_labels.len()
            ));
        }
        if let Some(p) = self.mlm_positions.iter().find(|&&p| p as usize >= n) {
            return bad(format!("mlm position {p} outside the {n} tokens"));
        }
        if self.mlm_positions.windows(2).any(|w| w[0] >= w[1]) {
            return bad("mlm_positions are not strictly ascending".into());
        }
        if let Some(t) = &self.token_type_ids {
            if t.len() != n {
                return bad(format!("{} token_type_ids for {n} tokens", t.len()));
            }
        }
        self.validate_topk(spec, m)?;
        self.validate_sampled(spec, m)?;
        validate_layers("hidden", &self.hidden, spec.hidden.as_ref(), |q| {
            if q.rows() != n {
                return bad(format!(
                    "has {} rows, expected {n} (one per token)",
                    q.rows()
                ));
            }
            Ok(())
        })?;
        validate_layers("attention", &self.attention, spec.attention.as_ref(), |q| {
            if q.cols() != n || (n > 0 && q.rows() % n != 0) || (n == 0 && q.rows() != 0) {
                return bad(format!(
                    "is {}x{}, expected [heads * {n}, {n}]",
                    q.rows(),
                    q.cols()
                ));
            }
            Ok(())
        })?;
        validate_layers(
            "attention_qk",
            &self.attention_qk,
            spec.attention_qk.as_ref(),
            |q| {
                crate::qk::width(q, n)
                    .map(|_| ())
                    .map_err(CacheError::Invalid)
            },
        )?;
        let stored = spec
            .attention_input
            .as_ref()
            .map(|a| crate::targets::LayerSpec {
                layers: crate::attention_input::stored_layers(spec),
                precision: a.precision,
            });
        validate_layers(
            "attention_input",
            &self.attention_input,
            stored.as_ref(),
            |q| {
                crate::attention_input::width(q, n)
                    .map(|_| ())
                    .map_err(CacheError::Invalid)
            },
        )?;
        match (&self.logits, spec.logits) {
            (None, true) => return bad("the cache stores logits; the record has none".into()),
            (Some(_), false) => return bad("the record has logits the cache does not store".into()),
            (Some(l), true) if l.iter().any(|v| !v.is_finite()) => {
                return bad("non-finite classifier logit".into())
            }
            _ => {}
        }
        Ok(())
    }

    fn validate_topk(&self, spec: &TargetSpec, m: usize) -> Result<()> {
        match (&self.mlm_topk, &spec.mlm_topk) {
            (None, None) => Ok(()),
            (None, Some(_)) => bad("the cache stores mlm_topk; the record has none".into()),
            (Some(_), None) => bad("the record has mlm_topk the cache does not store".into()),
            (Some(t), Some(s)) => {
                // Rows at the masked positions, or at every token.
                let m = if s.positions.is_masked() {
                    m
                } else {
                    self.input_ids.len()
                };
                let k = s.k as usize;
                let nt = s.temperatures.len();
                if t.logits.precision() != s.logit_precision {
                    return bad(format!(
                        "mlm_topk logits are {}, the cache stores {}",
                        t.logits.precision(),
                        s.logit_precision
                    ));
                }
                if t.ids.len() != m * k || t.logits.len() != m * k || t.logits.rows() != m {
                    return bad(format!(
                        "mlm_topk has {} ids and {}x{} logits, expected [{m}, {k}]",
                        t.ids.len(),
                        t.logits.rows(),
                        t.logits.cols()
                    ));
                }
                if t.log_partition.len() != m * nt {
                    return bad(format!(
                        "mlm_topk has {} log-partitions, expected {m} x {nt}",
                        t.log_partition.len()
                    ));
                }
                if t.log_partition.iter().any(|v| !v.is_finite()) {
                    return bad("non-finite log-partition".into());
                }
                Ok(())
            }
        }
    }

    fn validate_sampled(&self, spec: &TargetSpec, m: usize) -> Result<()> {
        match (&self.mlm_sampled, &spec.mlm_sampled) {
            (None, None) => Ok(()),
            (None, Some(_)) => bad("the cache stores mlm_sampled; the record has none".into()),
            (Some(_), None) => bad("the record has mlm_sampled the cache does not store".into()),
            (Some(s), Some(spec)) => {
                if s.offsets.len() != m + 1 || s.offsets.first() != Some(&0) {
                    return bad(format!(
                        "mlm_sampled has {} offsets, expected {} starting at 0",
                        s.offsets.len(),
                        m + 1
                    ));
                }
                if s.offsets.windows(2).any(|w| w[0] > w[1])
                    || s.offsets.last().map(|&o| o as usize) != Some(s.ids.len())
                    || s.counts.len() != s.ids.len()
                {
                    return bad("mlm_sampled offsets, ids and counts do not agree".into());
                }
                for p in 0..m {
                    let counts = s.position(p).map(|(_, c)| c).unwrap_or(&[]);
                    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
                    if total != u64::from(spec.k) {
                        return bad(format!(
                            "mlm_sampled counts of position {p} sum to {total}, expected k = {}",
                            spec.k
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

fn validate_layers(
    what: &str,
    layers: &[LayerValues],
    spec: Option<&crate::targets::LayerSpec>,
    shape: impl Fn(&Quantized) -> Result<()>,
) -> Result<()> {
    let want: &[u32] = spec.map(|s| s.layers.as_slice()).unwrap_or(&[]);
    let have: Vec<u32> = layers.iter().map(|l| l.layer).collect();
    if have != want {
        return bad(format!(
            "{what} layers {have:?} differ from the cache's {want:?}"
        ));
    }
    let precision = spec.map(|s| s.precision).unwrap_or(Precision::F32);
    for l in layers {
        if l.values.precision() != precision {
            return bad(format!(
                "{what} layer {} is {}, the cache stores {precision}",
                l.layer,
                l.values.precision()
            ));
        }
        shape(&l.values)
            .map_err(|e| CacheError::Invalid(format!("{what} layer {}: {e}", l.layer)))?;
    }
    Ok(())
}
