//! BERT configuration, read from and written to Hugging Face `config.json`.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The feed-forward activation (`hidden_act` in `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// Exact GELU with the error function (`gelu`).
    #[serde(rename = "gelu")]
    Gelu,
    /// Tanh approximation of GELU (`gelu_new`, also `gelu_pytorch_tanh`).
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    /// Rectified linear unit (`relu`).
    #[serde(rename = "relu")]
    Relu,
}

impl Activation {
    /// Parses a `hidden_act` string, naming the accepted values on error.
    pub fn parse(name: &str) -> std::result::Result<Self, String> {
        match name {
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Self::GeluNew),
            "relu" => Ok(Self::Relu),
            other => Err(format!(
                "unknown hidden_act {other:?} (supported: gelu, gelu_new, gelu_pytorch_tanh, relu)"
            )),
        }
    }
}

/// Architecture of a whole model: which heads sit on the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Encoder (+ pooler) only: `BertModel`.
    Base,
    /// Encoder + MLM head: `BertForMaskedLM`.
    MaskedLm,
    /// Encoder + pooler + classifier: `BertForSequenceClassification`.
    SequenceClassification,
}

impl Architecture {
    /// The Hugging Face class name written to `architectures`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Base => "BertModel",
            Self::MaskedLm => "BertForMaskedLM",
            Self::SequenceClassification => "BertForSequenceClassification",
        }
    }

    /// Recognises a Hugging Face class name.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "BertModel" => Some(Self::Base),
            "BertForMaskedLM" | "BertForPreTraining" => Some(Self::MaskedLm),
            "BertForSequenceClassification" => Some(Self::SequenceClassification),
            _ => None,
        }
    }
}

/// BERT hyper-parameters with Hugging Face field names and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Feed-forward activation name (validated by [`BertConfig::activation`]).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Dropout on embeddings and sub-layer outputs.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Number of learned positions.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Padding token id.
    #[serde(default)]
    pub pad_token_id: u32,
    /// Dropout before the classifier (falls back to `hidden_dropout_prob`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_dropout: Option<f64>,
    /// Class names by id, for classification heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
    /// `single_label_classification` or `regression`, for classification heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<String>,
    /// Hugging Face class names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    /// Always `bert`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_model_type() -> String {
    "bert".into()
}

/// The field behind an `invalid type` / `invalid value` error, which serde reports with a
/// position only: the one field whose removal changes the error.
fn blame_field(text: &str) -> Option<String> {
    let serde_json::Value::Object(obj) = serde_json::from_str(text).ok()? else {
        return None;
    };
    let error = |m: serde_json::Map<String, serde_json::Value>| {
        serde_json::from_value::<BertConfig>(serde_json::Value::Object(m))
            .err()
            .map(|e| e.to_string())
    };
    let first = error(obj.clone())?;
    if !(first.starts_with("invalid type") || first.starts_with("invalid value")) {
        return None;
    }
    obj.keys()
        .find(|k| {
            let mut without = obj.clone();
            without.remove(k.as_str());
            error(without).as_ref() != Some(&first)
        })
        .cloned()
}

/// Largest `config.json` read.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Largest value accepted for each size field (vocabulary, widths, positions, token types,
/// labels); far above any BERT, far below what would exhaust memory on its own.
pub const MAX_SIZE: usize = 1 << 24;

/// Most encoder layers accepted.
pub const MAX_LAYERS: usize = 1024;

/// Most parameters a config may describe (all heads counted): 2 Gi, 8 GiB as f32.
pub const MAX_PARAMETERS: u64 = 1 << 31;

impl BertConfig {
    /// Reads and validates a `config.json`, naming the file and field on error.
    pub fn from_file(path: &Path) -> Result<Self> {
        let cfg = Self::read_unvalidated(path)?;
        cfg.validate().map_err(|msg| Error::Config {
            path: path.to_path_buf(),
            msg,
        })?;
        Ok(cfg)
    }

    /// Reads a `config.json` (a regular file of bounded size) and parses its fields, without
    /// the checks of [`BertConfig::validate`].
    pub(crate) fn read_unvalidated(path: &Path) -> Result<Self> {
        let err = |msg: String| Error::Config {
            path: path.to_path_buf(),
            msg,
        };
        crate::files::regular_file_len(path, MAX_CONFIG_BYTES).map_err(err)?;
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text).map_err(err)
    }

    /// Parses and validates config JSON; the error names the field.
    pub fn from_json_str(text: &str) -> std::result::Result<Self, String> {
        let cfg = Self::parse(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn parse(text: &str) -> std::result::Result<Self, String> {
        serde_json::from_str(text).map_err(|e| match blame_field(text) {
            Some(field) => format!("field {field}: {e}"),
            None => e.to_string(),
        })
    }

    /// Checks field values that serde cannot (divisibility, ranges, activation name).
    pub fn validate(&self) -> std::result::Result<(), String> {
        Activation::parse(&self.hidden_act).map_err(|e| format!("field hidden_act: {e}"))?;
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("field {name}: must be > 0"));
            }
        }
        let capped = [
            ("vocab_size", self.vocab_size, MAX_SIZE),
            ("hidden_size", self.hidden_size, MAX_SIZE),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("intermediate_size", self.intermediate_size, MAX_SIZE),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_SIZE,
            ),
            ("type_vocab_size", self.type_vocab_size, MAX_SIZE),
            ("id2label", self.num_labels(), MAX_SIZE),
        ];
        for (name, v, max) in capped {
            if v > max {
                return Err(format!("field {name}: {v} is more than the {max} accepted"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "field num_attention_heads: hidden_size {} is not a multiple of {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
            ("classifier_dropout", self.classifier_dropout.unwrap_or(0.0)),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("field {name}: {p} is not in [0, 1)"));
            }
        }
        if self.layer_norm_eps <= 0.0 {
            return Err("field layer_norm_eps: must be > 0".into());
        }
        self.check_parameter_count()
    }

    /// Number of parameters of a model with every head (pooler, MLM head, classifier), in
    /// checked arithmetic; `None` if it does not fit in a `u64`.
    pub fn parameter_count(&self) -> Option<u64> {
        let (h, v, i) = (
            self.hidden_size as u64,
            self.vocab_size as u64,
            self.intermediate_size as u64,
        );
        let (p, t, n, l) = (
            self.max_position_embeddings as u64,
            self.type_vocab_size as u64,
            self.num_hidden_layers as u64,
            self.num_labels() as u64,
        );
        let hh = h.checked_mul(h)?;
        let hi = h.checked_mul(i)?;
        let embeddings = v
            .checked_add(p)?
            .checked_add(t)?
            .checked_mul(h)?
            .checked_add(h.checked_mul(2)?)?;
        // Attention (4 dense + LayerNorm), feed-forward (2 dense + LayerNorm).
        let layer = hh
            .checked_add(h)?
            .checked_mul(4)?
            .checked_add(hi.checked_mul(2)?)?
            .checked_add(i)?
            .checked_add(h.checked_mul(5)?)?;
        let heads = hh
            .checked_mul(2)?
            .checked_add(h.checked_mul(4)?)?
            .checked_add(v)?
            .checked_add(l.checked_mul(h)?.checked_add(l)?)?;
        embeddings
            .checked_add(layer.checked_mul(n)?)?
            .checked_add(heads)
    }

    /// Refuses configs whose models would exceed [`MAX_PARAMETERS`], naming the size field
    /// furthest above BERT-large's.
    fn check_parameter_count(&self) -> std::result::Result<(), String> {
        let count = self.parameter_count();
        if count.is_some_and(|c| c <= MAX_PARAMETERS) {
            return Ok(());
        }
        // Blame the size furthest above BERT-large's.
        let fields = [
            ("vocab_size", self.vocab_size, 30522),
            ("hidden_size", self.hidden_size, 1024),
            ("num_hidden_layers", self.num_hidden_layers, 24),
            ("intermediate_size", self.intermediate_size, 4096),
            ("max_position_embeddings", self.max_position_embeddings, 512),
            ("type_vocab_size", self.type_vocab_size, 2),
            ("id2label", self.num_labels(), 2),
        ];
        let (name, value, _) = fields
            .into_iter()
            .max_by(|a, b| (a.1 as f64 / a.2 as f64).total_cmp(&(b.1 as f64 / b.2 as f64)))
            .expect("fields");
        let size = match count {
            Some(c) => format!(
                "{c} parameters ({:.1} GiB as f32)",
                c as f64 * 4.0 / 1073741824.0
            ),
            None => "more parameters than fit in 64 bits".into(),
        };
        Err(format!(
            "field {name}: with {name} = {value} the model would have {size}, more than the \
             {MAX_PARAMETERS} accepted"
        ))
    }

    /// The validated activation.
    pub fn activation(&self) -> Activation {
        Activation::parse(&self.hidden_act).unwrap_or(Activation::Gelu)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Number of classifier outputs (from `id2label`, default 2).
    pub fn num_labels(&self) -> usize {
        self.id2label.as_ref().map(|m| m.len()).unwrap_or(2)
    }

    /// Sets `id2label` for `n` classes with the given names (or `LABEL_i`).
    pub fn set_labels(&mut self, names: Option<&[String]>, n: usize) {
        let map = (0..n)
            .map(|i| {
                let name = names
                    .and_then(|v| v.get(i).cloned())
                    .unwrap_or_else(|| format!("LABEL_{i}"));
                (i.to_string(), name)
            })
            .collect();
        self.id2label = Some(map);
    }

    /// The architecture named in `architectures`, if recognised.
    pub fn architecture(&self) -> Option<Architecture> {
        self.architectures
            .as_ref()?
            .iter()
            .find_map(|n| Architecture::from_hf_name(n))
    }

    /// A small random-init config, handy for tests.
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 37,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 64,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            classifier_dropout: None,
            id2label: None,
            problem_type: None,
            architectures: None,
            model_type: "bert".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hf_fields_with_defaults() {
        let cfg = BertConfig::from_json_str(
            r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu_new"}"#,
        )
        .unwrap();
        assert_eq!(cfg.activation(), Activation::GeluNew);
        assert_eq!(cfg.layer_norm_eps, 1e-12);
        assert_eq!(cfg.type_vocab_size, 2);
        assert_eq!(cfg.head_dim(), 4);
    }

    #[test]
    fn sizes_are_bounded_one_by_one_and_together() {
        let mut cfg = BertConfig::tiny(99);
        cfg.vocab_size = 1_000_000_000_000;
        let err = cfg.validate().unwrap_err();
        assert!(err.contains("field vocab_size: 1000000000000"), "{err}");
        // Each size within its bound, the product far beyond the parameter bound.
        cfg.vocab_size = MAX_SIZE;
        cfg.hidden_size = 4096;
        cfg.num_attention_heads = 16;
        let err = cfg.validate().unwrap_err();
        assert!(err.starts_with("field vocab_size:"), "{err}");
        assert!(err.contains("parameters"), "{err}");
        cfg.vocab_size = 30522;
        cfg.num_hidden_layers = MAX_LAYERS;
        cfg.intermediate_size = MAX_SIZE;
        let err = cfg.validate().unwrap_err();
        assert!(err.starts_with("field intermediate_size:"), "{err}");
        assert_eq!(BertConfig::tiny(99).validate(), Ok(()));
    }

    #[test]
    fn errors_name_the_field() {
        let missing = BertConfig::from_json_str(r#"{"vocab_size": 10}"#).unwrap_err();
        assert!(missing.contains("hidden_size"), "{missing}");
        let act = BertConfig::from_json_str(
            r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "swish"}"#,
        )
        .unwrap_err();
        assert!(act.contains("hidden_act") && act.contains("swish"), "{act}");
        let heads = BertConfig::from_json_str(
            r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 3, "intermediate_size": 16}"#,
        )
        .unwrap_err();
        assert!(heads.contains("num_attention_heads"), "{heads}");
        let ty = BertConfig::from_json_str(
            r#"{"vocab_size": "ten", "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 16}"#,
        )
        .unwrap_err();
        assert!(
            ty.contains("field vocab_size") && ty.contains("line 1"),
            "{ty}"
        );
    }
}
