//! Distillation described as data: a list of loss entries, each naming its kind, its weight
//! and where it applies, as TextBrewer's `intermediate_matches` does.
//!
//! ```toml
//! [[steps.loss]]
//! kind = "soft_ce"
//! weight = 5.0
//! temperature = 2.0
//!
//! [[steps.loss]]
//! kind = "mlm_ce"
//! weight = 2.0
//!
//! [[steps.loss]]
//! kind = "hidden_cos"
//! weight = 1.0
//!
//! [[steps.loss]]
//! kind = "hidden_mse"
//! map = "uniform"
//! projection = "linear"
//! ```
//!
//! The DistilBERT shorthand of earlier versions, a table `{ce, mlm, cos, temperature, ...}`,
//! is read as the three-entry list it stands for ([`LossList`]).

use crate::layer_map::LayerMatch;
use crate::{Error, Result};
use kd_cache::TopKPositions;
use kd_distill::TailMode;
use serde::{Deserialize, Serialize};

/// Where the soft targets come from in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SoftTargetSource {
    /// The stored top-k logits and log-partitions (`mlm-topk` targets).
    #[default]
    Topk,
    /// The stored draws from the teacher's distribution (`mlm-sampled` targets).
    Sampled,
}

/// A learned map from the student's width to the teacher's, for losses between states of
/// different widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionKind {
    /// `x W^T + b`, one per mapped student layer (TinyBERT's `W_h`, `W_e`), initialised as
    /// BERT's linear layers from the run's seed, trained with the student, saved beside it.
    Linear,
}

/// DistilBERT's soft-target cross-entropy at temperature T over the cached teacher
/// distribution, at the masked positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SoftCe {
    /// Weight in the total loss.
    pub weight: f64,
    /// Temperature (stored in the cache for top-k targets with the rest bucket).
    pub temperature: f32,
    /// Multiply by T^2 (Hinton; DistilBERT does).
    pub t2_scaling: bool,
    /// Mass outside the cached top-k: `rest_bucket` or `renormalize`.
    pub tail: TailMode,
    /// `topk` or `sampled` records.
    pub source: SoftTargetSource,
    /// Where the loss applies: the masked positions (`masked`), or every real token (`all`,
    /// the DistilBERT reference's default; needs a cache made with
    /// `mlm-topk:...,positions=all`).
    #[serde(default, skip_serializing_if = "TopKPositions::is_masked")]
    pub positions: TopKPositions,
}

impl Default for SoftCe {
    fn default() -> Self {
        Self {
            weight: 5.0,
            temperature: 2.0,
            t2_scaling: true,
            tail: TailMode::RestBucket,
            source: SoftTargetSource::Topk,
            positions: TopKPositions::Masked,
        }
    }
}

/// Soft cross-entropy between the student's class logits and the cached teacher logits at
/// temperature T: DistilBERT-style task distillation (with `T²`) or TinyBERT's prediction
/// layer (`t2_scaling = false`, T = 1), summed over classes and averaged over examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassSoftCe {
    /// Weight in the total loss.
    pub weight: f64,
    /// Temperature of both softmaxes.
    pub temperature: f32,
    /// Multiply by T^2 (Hinton; DistilBERT does, TinyBERT does not).
    pub t2_scaling: bool,
}

impl Default for ClassSoftCe {
    fn default() -> Self {
        Self {
            weight: 1.0,
            temperature: 1.0,
            t2_scaling: true,
        }
    }
}

/// A weight alone, for losses without settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weighted {
    /// Weight in the total loss.
    pub weight: f64,
}

impl Default for Weighted {
    fn default() -> Self {
        Self { weight: 1.0 }
    }
}

/// A loss between student and teacher states of mapped layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayerLoss {
    /// Weight in the total loss (each mapped pair adds its term).
    pub weight: f64,
    /// The teacher layer of a single pair (default: the last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher_layer: Option<crate::layer_map::LayerRef>,
    /// The student layer of a single pair (default: the last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub student_layer: Option<crate::layer_map::LayerRef>,
    /// Or a rule (`"uniform"`) or list of `[student, teacher]` pairs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map: Option<crate::layer_map::LayerMap>,
    /// A learned projection of the student's states to the teacher's width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projection: Option<ProjectionKind>,
}

impl Default for LayerLoss {
    fn default() -> Self {
        Self {
            weight: 1.0,
            teacher_layer: None,
            student_layer: None,
            map: None,
            projection: None,
        }
    }
}

impl LayerLoss {
    /// The layer match of this entry.
    pub fn layers(&self) -> LayerMatch {
        LayerMatch {
            teacher_layer: self.teacher_layer,
            student_layer: self.student_layer,
            map: self.map.clone(),
        }
    }
}

/// One entry of a loss list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LossSpec {
    /// Soft-target cross-entropy over the cached teacher distribution (DistilBERT's L_ce).
    SoftCe(SoftCe),
    /// Cross-entropy against the original tokens at masked positions (L_mlm).
    MlmCe(Weighted),
    /// Cross-entropy against the records' class labels.
    HardCe(Weighted),
    /// `1 - cos` between student and teacher hidden states over real tokens (L_cos).
    HiddenCos(LayerLoss),
    /// MSE between (projected) student and teacher hidden states over real tokens, summed
    /// over the mapped pairs (TinyBERT's L_hidn).
    HiddenMse(LayerLoss),
    /// MSE between (projected) student and teacher embedding outputs over real tokens
    /// (TinyBERT's L_embd).
    EmbeddingMse(LayerLoss),
    /// MSE between student and teacher pre-softmax attention scores over the real
    /// (query, key) entries of each sequence, summed over the mapped pairs (TinyBERT's L_attn;
    /// the reference also averages in padded entries, which a cache does not hold).
    AttentionMse(LayerLoss),
    /// MSE between student and teacher class logits (Tang et al.).
    LogitMse(Weighted),
    /// Soft cross-entropy on class logits against the cached teacher logits.
    ClassSoftCe(ClassSoftCe),
}

impl LossSpec {
    /// The kind as written in settings.
    pub fn kind(&self) -> &'static str {
        match self {
            LossSpec::SoftCe(_) => "soft_ce",
            LossSpec::MlmCe(_) => "mlm_ce",
            LossSpec::HardCe(_) => "hard_ce",
            LossSpec::HiddenCos(_) => "hidden_cos",
            LossSpec::HiddenMse(_) => "hidden_mse",
            LossSpec::EmbeddingMse(_) => "embedding_mse",
            LossSpec::AttentionMse(_) => "attention_mse",
            LossSpec::LogitMse(_) => "logit_mse",
            LossSpec::ClassSoftCe(_) => "class_soft_ce",
        }
    }

    /// The name of the entry's term in the metrics log: DistilBERT's `ce`, `mlm`, `cos` for
    /// its three kinds, the kind otherwise.
    pub fn term_name(&self) -> &'static str {
        match self {
            LossSpec::SoftCe(_) => "ce",
            LossSpec::MlmCe(_) => "mlm",
            LossSpec::HiddenCos(_) => "cos",
            other => other.kind(),
        }
    }

    /// Sets the entry's weight.
    pub fn set_weight(&mut self, weight: f64) {
        match self {
            LossSpec::SoftCe(s) => s.weight = weight,
            LossSpec::ClassSoftCe(s) => s.weight = weight,
            LossSpec::MlmCe(w) | LossSpec::HardCe(w) | LossSpec::LogitMse(w) => w.weight = weight,
            LossSpec::HiddenCos(l)
            | LossSpec::HiddenMse(l)
            | LossSpec::EmbeddingMse(l)
            | LossSpec::AttentionMse(l) => l.weight = weight,
        }
    }

    /// The entry's weight.
    pub fn weight(&self) -> f64 {
        match self {
            LossSpec::SoftCe(s) => s.weight,
            LossSpec::ClassSoftCe(s) => s.weight,
            LossSpec::MlmCe(w) | LossSpec::HardCe(w) | LossSpec::LogitMse(w) => w.weight,
            LossSpec::HiddenCos(l)
            | LossSpec::HiddenMse(l)
            | LossSpec::EmbeddingMse(l)
            | LossSpec::AttentionMse(l) => l.weight,
        }
    }
}

/// The losses of a run, in order. Deserialises from a list of entries, or from the DistilBERT
/// shorthand table `{temperature, ce, mlm, cos, t2_scaling, tail, soft_targets}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct LossList(pub Vec<LossSpec>);

/// DistilBERT's shorthand (DistilBERT's released model: ce 5, mlm 2, cos 1, T 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistilLoss {
    /// Soft-target temperature.
    pub temperature: f32,
    /// Weight of `soft_ce`.
    pub ce: f64,
    /// Weight of `mlm_ce`.
    pub mlm: f64,
    /// Weight of `hidden_cos` on the last layer.
    pub cos: f64,
    /// `soft_ce`'s T^2 scaling.
    pub t2_scaling: bool,
    /// `soft_ce`'s tail handling.
    pub tail: TailMode,
    /// `soft_ce`'s source.
    pub soft_targets: SoftTargetSource,
}

impl Default for DistilLoss {
    fn default() -> Self {
        let s = SoftCe::default();
        Self {
            temperature: s.temperature,
            ce: 5.0,
            mlm: 2.0,
            cos: 1.0,
            t2_scaling: s.t2_scaling,
            tail: s.tail,
            soft_targets: s.source,
        }
    }
}

impl From<DistilLoss> for LossList {
    fn from(d: DistilLoss) -> Self {
        let mut v = Vec::new();
        if d.ce != 0.0 {
            v.push(LossSpec::SoftCe(SoftCe {
                weight: d.ce,
                temperature: d.temperature,
                t2_scaling: d.t2_scaling,
                tail: d.tail,
                source: d.soft_targets,
                positions: TopKPositions::Masked,
            }));
        }
        if d.mlm != 0.0 {
            v.push(LossSpec::MlmCe(Weighted { weight: d.mlm }));
        }
        if d.cos != 0.0 {
            v.push(LossSpec::HiddenCos(LayerLoss {
                weight: d.cos,
                ..LayerLoss::default()
            }));
        }
        LossList(v)
    }
}

impl Default for LossList {
    fn default() -> Self {
        DistilLoss::default().into()
    }
}

impl<'de> Deserialize<'de> for LossList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(d)?;
        match value {
            serde_json::Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    serde_json::from_value::<LossSpec>(item)
                        .map_err(|e| D::Error::custom(format!("loss entry {}: {e}", i + 1)))
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(LossList),
            serde_json::Value::Object(_) => serde_json::from_value::<DistilLoss>(value)
                .map(LossList::from)
                .map_err(|e| {
                    D::Error::custom(format!(
                        "{e} (the table form takes temperature, ce, mlm, cos, t2_scaling, tail \
                         and soft_targets; the list form is [[loss]] entries with kind = \
                         \"soft_ce\" | \"mlm_ce\" | \"hard_ce\" | \"hidden_cos\" | \
                         \"hidden_mse\" | \"embedding_mse\" | \"attention_mse\" | \
                         \"logit_mse\" | \"class_soft_ce\")"
                    ))
                }),
            other => Err(D::Error::custom(format!(
                "loss: expected a list of [[loss]] entries or a table, found {other}"
            ))),
        }
    }
}

impl LossList {
    /// Fails, naming the entry and key, on a weight that is not a finite number >= 0, on a
    /// list whose weights are all 0, or on a temperature that is not a finite number > 0.
    pub fn validate(&self) -> Result<()> {
        if self.0.is_empty() {
            return Err(Error::Config(
                "loss: the list is empty: nothing would be trained".into(),
            ));
        }
        for (i, l) in self.0.iter().enumerate() {
            let w = l.weight();
            if !w.is_finite() || w < 0.0 {
                return Err(Error::Config(format!(
                    "loss entry {} ({}): weight = {w}: a loss weight must be a finite number >= 0",
                    i + 1,
                    l.kind()
                )));
            }
            let temperature = match l {
                LossSpec::SoftCe(s) => Some(s.temperature),
                LossSpec::ClassSoftCe(s) => Some(s.temperature),
                _ => None,
            };
            if let Some(t) = temperature.filter(|t| !t.is_finite() || *t <= 0.0) {
                return Err(Error::Config(format!(
                    "loss entry {} ({}): temperature = {t}: the temperature must be a finite \
                     number > 0",
                    i + 1,
                    l.kind()
                )));
            }
        }
        if self.0.iter().all(|l| l.weight() == 0.0) {
            return Err(Error::Config(
                "loss: every weight is 0: nothing would be trained".into(),
            ));
        }
        Ok(())
    }

    /// The first entry of `kind`, mutably.
    pub fn entry_mut(&mut self, kind: &str) -> Option<&mut LossSpec> {
        self.0.iter_mut().find(|l| l.kind() == kind)
    }

    /// Sets DistilBERT's three weights: `soft_ce`, `mlm_ce`, `hidden_cos` on the last layers,
    /// adding the entries that are missing and dropping those set to 0.
    pub fn set_distil_weights(&mut self, ce: f64, mlm: f64, cos: f64) {
        let defaults = LossList::from(DistilLoss {
            ce: 1.0,
            mlm: 1.0,
            cos: 1.0,
            ..DistilLoss::default()
        });
        let mut list = Vec::with_capacity(self.0.len() + 3);
        for (default, w) in defaults.0.into_iter().zip([ce, mlm, cos]) {
            // An entry the list already has keeps its settings; a missing one takes the
            // shorthand's. Weight 0 drops it; a NaN or negative weight is kept for `validate`.
            let at = self.0.iter().position(|l| l.kind() == default.kind());
            let mut entry = at.map_or(default, |i| self.0.remove(i));
            entry.set_weight(w);
            if w != 0.0 {
                list.push(entry);
            }
        }
        list.append(&mut self.0);
        self.0 = list;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(json: &str) -> LossList {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn distil_weights_keep_entry_settings_and_the_canonical_order() {
        let mut l = list(
            r#"[{"kind": "hidden_mse", "map": "uniform"},
                {"kind": "mlm_ce", "weight": 3.0},
                {"kind": "soft_ce", "temperature": 4.0, "positions": "all"}]"#,
        );
        l.set_distil_weights(5.0, 2.0, 1.0);
        let kinds: Vec<&str> = l.0.iter().map(LossSpec::kind).collect();
        assert_eq!(kinds, ["soft_ce", "mlm_ce", "hidden_cos", "hidden_mse"]);
        let weights: Vec<f64> = l.0.iter().map(LossSpec::weight).collect();
        assert_eq!(weights, [5.0, 2.0, 1.0, 1.0]);
        match &l.0[0] {
            LossSpec::SoftCe(s) => {
                assert_eq!((s.temperature, s.positions), (4.0, TopKPositions::All))
            }
            other => panic!("{other:?}"),
        }
        l.set_distil_weights(0.0, f64::NAN, 0.0);
        let kinds: Vec<&str> = l.0.iter().map(LossSpec::kind).collect();
        assert_eq!(kinds, ["mlm_ce", "hidden_mse"]);
        assert!(l.validate().is_err());
    }
}
