//! Weighted sums of named loss terms, with the term values for the metrics log.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

const WHAT: &str = "LossWeights";

/// Name of DistilBERT's soft-target term.
pub const CE: &str = "ce";
/// Name of DistilBERT's MLM term.
pub const MLM: &str = "mlm";
/// Name of DistilBERT's cosine term.
pub const COS: &str = "cos";

/// A weight per named loss term: `total = Σ_name weight[name] · term[name]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossWeights {
    weights: BTreeMap<String, f64>,
}

/// The combined loss of one step.
#[derive(Debug, Clone)]
pub struct WeightedLoss {
    /// `Σ weight · term`, a scalar to call `backward` on.
    pub total: Tensor,
    /// Each term's unweighted value, by name, for metrics (kd-train's `StepMetrics::terms`).
    pub terms: BTreeMap<String, f64>,
}

impl LossWeights {
    /// No weights.
    pub fn new() -> Self {
        Self::default()
    }

    /// DistilBERT's released weights: `ce` 5.0, `mlm` 2.0, `cos` 1.0 (use with
    /// [`SoftTargetConfig::DISTILBERT`](crate::SoftTargetConfig::DISTILBERT), `T = 2`).
    pub fn distilbert() -> Self {
        Self::new().with(CE, 5.0).with(MLM, 2.0).with(COS, 1.0)
    }

    /// Adds or replaces the weight of `name` (builder style). A non-finite weight is kept and
    /// rejected by [`LossWeights::combine`].
    pub fn with(mut self, name: impl Into<String>, weight: f64) -> Self {
        self.weights.insert(name.into(), weight);
        self
    }

    /// Adds or replaces the weight of `name`.
    pub fn set(&mut self, name: impl Into<String>, weight: f64) {
        self.weights.insert(name.into(), weight);
    }

    /// The weight of `name`, if any.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.weights.get(name).copied()
    }

    /// All weights by name.
    pub fn weights(&self) -> &BTreeMap<String, f64> {
        &self.weights
    }

    /// `Σ weight[name] · term` over `terms` (scalar tensors, each with a weight; weights
    /// without a term are skipped, so one set of weights serves steps that compute fewer
    /// terms). Terms of weight 0 are reported but left out of the total (a NaN in them does not
    /// reach it). Errors on an unweighted, repeated or non-scalar term, a non-finite weight, or
    /// no term at all.
    pub fn combine(&self, terms: &[(&str, Tensor)]) -> Result<WeightedLoss> {
        let mut total: Option<Tensor> = None;
        let mut values = BTreeMap::new();
        for (name, term) in terms {
            let weight = self.get(name).ok_or_else(|| {
                Error::invalid(
                    WHAT,
                    format!(
                        "no weight for loss term {name:?} (weights: {:?})",
                        self.weights.keys().collect::<Vec<_>>()
                    ),
                )
            })?;
            if !weight.is_finite() {
                return Err(Error::invalid(
                    WHAT,
                    format!("weight of {name:?} is {weight}"),
                ));
            }
            if term.elem_count() != 1 {
                return Err(Error::shape(
                    WHAT,
                    format!(
                        "loss term {name:?} is not a scalar: shape {:?}",
                        term.dims()
                    ),
                ));
            }
            let term = term.reshape(())?;
            let value = term.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if values.insert(name.to_string(), value).is_some() {
                return Err(Error::invalid(
                    WHAT,
                    format!("loss term {name:?} given twice"),
                ));
            }
            if weight == 0.0 {
                continue;
            }
            let weighted = term.affine(weight, 0.0)?;
            total = Some(match total {
                None => weighted,
                Some(t) => t.add(&weighted.to_dtype(t.dtype())?)?,
            });
        }
        let total = match (total, terms.first()) {
            (Some(t), _) => t,
            (None, Some((_, first))) => first.reshape(())?.affine(0.0, 0.0)?,
            (None, None) => return Err(Error::invalid(WHAT, "no loss terms to combine")),
        };
        Ok(WeightedLoss {
            total,
            terms: values,
        })
    }
}
