//! What a cache stores ([`TargetSpec`]) and the target-string syntax.
//!
//! # Target strings
//! A comma-separated list of targets; an item that does not start a new
//! target continues the arguments of the previous one:
//!
//! ```text
//! mlm-topk:k=32,t=1,2@f16   top-32 logits at temperatures 1 and 2, logits stored as f16
//! mlm-sampled:k=12,t=2      12 tokens sampled per masked position at T = 2
//! hidden:0,6@int8           hidden states of layers 0 (embeddings) and 6, int8
//! hidden:last / hidden:all  the last layer / layers 0..=N
//! attention:3,6             pre-softmax attention scores of encoder layers 3 and 6
//! attention-qk:3,6@int8     their query and key projections (scores recomputed by readers)
//! attention-input:3,6@int8  their input hidden states 2 and 5 (readers project them by the
//!                           teacher's query/key weights, stored once per cache)
//! logits                    classifier logits
//! ```
//!
//! Layers count like Hugging Face `hidden_states`: hidden layer 0 is the
//! embedding output and layer `l` (1..=N) the output of encoder layer `l`;
//! attention layers are encoder layers 1..=N. `last` is N, given by the caller.
//! A precision (`@f32`, `@f16`, `@bf16`, `@int8`) may follow any argument of
//! a target. Defaults: `mlm-topk` k = 32, t = 1, f16; `mlm-sampled` k = 12,
//! t = 1; `hidden`, `attention`, `attention-qk` and `attention-input` f16.

use std::fmt;

use crate::error::{CacheError, Result};
use crate::precision::Precision;

/// The target names of the string syntax.
pub const TARGET_NAMES: [&str; 7] = [
    "mlm-topk",
    "mlm-sampled",
    "hidden",
    "attention",
    "attention-qk",
    "attention-input",
    "logits",
];

/// Top-k teacher logits at masked positions (or at every token).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TopKSpec {
    /// Tokens kept per position.
    pub k: u32,
    /// Temperatures with a stored log-partition, in storage order.
    pub temperatures: Vec<f32>,
    /// How the top-k logits are stored (f32, f16 or bf16).
    pub logit_precision: Precision,
    /// Which positions have a row: the masked ones (absent in manifests: every cache before
    /// this option) or every token of the sequence.
    #[serde(default, skip_serializing_if = "TopKPositions::is_masked")]
    pub positions: TopKPositions,
}

/// The positions of a sequence that have top-k rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopKPositions {
    /// One row per masked position, in `mlm_positions` order.
    #[default]
    Masked,
    /// One row per token, in sequence order (for soft targets at every token, as DistilBERT's
    /// reference computes them by default).
    All,
}

impl TopKPositions {
    /// Whether rows are at masked positions only.
    pub fn is_masked(&self) -> bool {
        *self == TopKPositions::Masked
    }
}

/// Tokens sampled from the teacher distribution at masked positions.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampledSpec {
    /// Draws per masked position (the counts of a position sum to `k`).
    pub k: u32,
    /// Temperature of the sampled distribution.
    pub temperature: f32,
}

/// Per-layer tensors (hidden states or attention scores).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerSpec {
    /// Layers, ascending, without repeats.
    pub layers: Vec<u32>,
    /// Storage precision.
    pub precision: Precision,
}

/// The targets of a cache and their precisions.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct TargetSpec {
    /// Top-k MLM logits with log-partitions.
    #[serde(default)]
    pub mlm_topk: Option<TopKSpec>,
    /// Sampled MLM tokens with counts.
    #[serde(default)]
    pub mlm_sampled: Option<SampledSpec>,
    /// Hidden states.
    #[serde(default)]
    pub hidden: Option<LayerSpec>,
    /// Pre-softmax attention scores.
    #[serde(default)]
    pub attention: Option<LayerSpec>,
    /// Classifier logits.
    #[serde(default)]
    pub logits: bool,
    /// Query and key projections of encoder layers, from which readers recompute the
    /// pre-softmax scores (schema `kd-cache/2`; absent from every `kd-cache/1` manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_qk: Option<LayerSpec>,
    /// Encoder layers whose attention is stored as their input hidden state (hidden `l - 1`)
    /// plus the teacher's query/key weights once per cache (schema `kd-cache/3`; see
    /// [`crate::attention_input`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_input: Option<LayerSpec>,
}

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(CacheError::Target(msg.into()))
}

fn known() -> String {
    TARGET_NAMES.join(", ")
}

/// Arguments gathered for one target.
struct Item {
    name: &'static str,
    args: Vec<String>,
    precision: Option<Precision>,
}

impl Item {
    fn push_arg(&mut self, raw: &str) -> Result<()> {
        let (arg, prec) = match raw.split_once('@') {
            Some((a, p)) => (a.trim(), Some(p.parse::<Precision>()?)),
            None => (raw.trim(), None),
        };
        if let Some(p) = prec {
            match self.precision {
                Some(q) if q != p => {
                    return err(format!("{}: precisions {q} and {p} both given", self.name))
                }
                _ => self.precision = Some(p),
            }
        }
        if !arg.is_empty() {
            self.args.push(arg.to_string());
        } else if prec.is_none() {
            return err(format!("{}: empty argument", self.name));
        }
        Ok(())
    }
}

fn parse_u32(target: &str, key: &str, v: &str) -> Result<u32> {
    match v.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => err(format!(
            "{target}: {key} must be a positive integer, got `{v}`"
        )),
    }
}

fn parse_temp(target: &str, v: &str) -> Result<f32> {
    match v.parse::<f32>() {
        Ok(t) if t.is_finite() && t > 0.0 => Ok(t),
        _ => err(format!(
            "{target}: temperature must be a positive number, got `{v}`"
        )),
    }
}

fn parse_layers(item: &Item, first: u32, num_layers: u32) -> Result<Vec<u32>> {
    if item.args.is_empty() {
        return err(format!(
            "{} needs layers (e.g. `{0}:last` or `{0}:{1},{num_layers}`)",
            item.name, first
        ));
    }
    let mut layers = Vec::new();
    for a in &item.args {
        match a.as_str() {
            "last" => layers.push(num_layers),
            "all" => layers.extend(first..=num_layers),
            s => match s.parse::<u32>() {
                Ok(l) if (first..=num_layers).contains(&l) => layers.push(l),
                Ok(l) => {
                    return err(format!(
                        "{}: layer {l} out of range {first}..={num_layers}",
                        item.name
                    ))
                }
                Err(_) => {
                    return err(format!(
                        "{}: bad layer `{s}` (a number, `last` or `all`); unknown targets \
                         are not allowed either (known: {})",
                        item.name,
                        known()
                    ))
                }
            },
        }
    }
    layers.sort_unstable();
    layers.dedup();
    if layers.is_empty() {
        return err(format!("{}: no layer in 1..={num_layers}", item.name));
    }
    Ok(layers)
}

fn parse_topk(item: &Item) -> Result<TopKSpec> {
    let mut k = 32;
    let mut temps: Vec<f32> = Vec::new();
    let mut positions = TopKPositions::Masked;
    let mut last_key = "";
    for a in &item.args {
        match a.split_once('=') {
            Some(("k", v)) => {
                k = parse_u32(item.name, "k", v.trim())?;
                last_key = "k";
            }
            Some(("t", v)) => {
                temps.push(parse_temp(item.name, v.trim())?);
                last_key = "t";
            }
            Some(("positions", v)) => {
                positions = match v.trim() {
                    "masked" => TopKPositions::Masked,
                    "all" => TopKPositions::All,
                    other => {
                        return err(format!(
                            "mlm-topk: positions={other} (known: positions=masked, positions=all)"
                        ))
                    }
                };
                last_key = "positions";
            }
            None if last_key == "t" => temps.push(parse_temp(item.name, a)?),
            _ => {
                return err(format!(
                    "mlm-topk: unknown argument `{a}` (known: k=N, t=T, positions=masked|all)"
                ))
            }
        }
    }
    if temps.is_empty() {
        temps.push(1.0);
    }
    for (i, t) in temps.iter().enumerate() {
        if temps[..i].contains(t) {
            return err(format!("mlm-topk: temperature {t} given twice"));
        }
    }
    let logit_precision = item.precision.unwrap_or(Precision::F16);
    if logit_precision == Precision::Int8 {
        return err("mlm-topk: int8 logits are not supported (use f32, f16 or bf16)");
    }
    Ok(TopKSpec {
        k,
        temperatures: temps,
        logit_precision,
        positions,
    })
}

fn parse_sampled(item: &Item) -> Result<SampledSpec> {
    if item.precision.is_some() {
        return err("mlm-sampled: takes no precision (ids and counts are integers)");
    }
    let mut spec = SampledSpec {
        k: 12,
        temperature: 1.0,
    };
    for a in &item.args {
        match a.split_once('=') {
            Some(("k", v)) => spec.k = parse_u32(item.name, "k", v.trim())?,
            Some(("t", v)) => spec.temperature = parse_temp(item.name, v.trim())?,
            _ => {
                return err(format!(
                    "mlm-sampled: unknown argument `{a}` (known: k=N, t=T)"
                ))
            }
        }
    }
    if spec.k > u32::from(u16::MAX) {
        return err(format!("mlm-sampled: k = {} exceeds 65535", spec.k));
    }
    Ok(spec)
}

/// If `piece` starts a target: its name and what follows `name:` (or the
/// `@precision` of a bare `name@precision`). `None` for an argument of the
/// previous target; an error for something that looks like an unknown target.
fn start_of(piece: &str) -> Result<Option<(&'static str, Option<&str>)>> {
    let name_end = piece.find([':', '@']).unwrap_or(piece.len());
    let head = piece[..name_end].trim();
    let rest = &piece[name_end..];
    if let Some(name) = TARGET_NAMES.iter().find(|n| **n == head) {
        let rest = match rest.strip_prefix(':') {
            Some(r) => Some(r),
            None if rest.is_empty() => None,
            None => Some(rest),
        };
        return Ok(Some((name, rest)));
    }
    let word = head.starts_with(|c: char| c.is_ascii_alphabetic())
        && !head.contains('=')
        && head != "last"
        && head != "all";
    if rest.starts_with(':') || word {
        return err(format!("unknown target `{head}` (known: {})", known()));
    }
    Ok(None)
}

impl TargetSpec {
    /// Parses a target string (see the module doc); `last` and `all` resolve
    /// against `num_layers` encoder layers.
    pub fn parse(text: &str, num_layers: u32) -> Result<TargetSpec> {
        let mut items: Vec<Item> = Vec::new();
        for piece in text.split(',') {
            let piece = piece.trim();
            if piece.is_empty() {
                return err(format!("empty item in `{text}`"));
            }
            match start_of(piece)? {
                Some((name, rest)) => {
                    if items.iter().any(|i| i.name == name) {
                        return err(format!("target `{name}` given twice"));
                    }
                    let mut item = Item {
                        name,
                        args: Vec::new(),
                        precision: None,
                    };
                    if let Some(r) = rest {
                        item.push_arg(r)?;
                    }
                    items.push(item);
                }
                None => match items.last_mut() {
                    Some(item) => item.push_arg(piece)?,
                    None => return err(format!("`{piece}` is not a target (known: {})", known())),
                },
            }
        }
        let mut spec = TargetSpec::default();
        for item in &items {
            match item.name {
                "mlm-topk" => spec.mlm_topk = Some(parse_topk(item)?),
                "mlm-sampled" => spec.mlm_sampled = Some(parse_sampled(item)?),
                "hidden" => {
                    spec.hidden = Some(LayerSpec {
                        layers: parse_layers(item, 0, num_layers)?,
                        precision: item.precision.unwrap_or(Precision::F16),
                    })
                }
                "attention" => {
                    spec.attention = Some(LayerSpec {
                        layers: parse_layers(item, 1, num_layers)?,
                        precision: item.precision.unwrap_or(Precision::F16),
                    })
                }
                "attention-qk" => {
                    spec.attention_qk = Some(LayerSpec {
                        layers: parse_layers(item, 1, num_layers)?,
                        precision: item.precision.unwrap_or(Precision::F16),
                    })
                }
                "attention-input" => {
                    spec.attention_input = Some(LayerSpec {
                        layers: parse_layers(item, 1, num_layers)?,
                        precision: item.precision.unwrap_or(Precision::F16),
                    })
                }
                _ => {
                    if !item.args.is_empty() || item.precision.is_some() {
                        return err("logits takes no arguments (stored as f32)");
                    }
                    spec.logits = true;
                }
            }
        }
        if spec.is_empty() {
            return err(format!("no target given (known: {})", known()));
        }
        Ok(spec)
    }

    /// Whether no target is selected.
    pub fn is_empty(&self) -> bool {
        self.mlm_topk.is_none()
            && self.mlm_sampled.is_none()
            && self.hidden.is_none()
            && self.attention.is_none()
            && self.attention_qk.is_none()
            && self.attention_input.is_none()
            && !self.logits
    }

    /// Checks the invariants the parser guarantees (for specs built by hand or
    /// read from a manifest).
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = &self.mlm_topk {
            if t.k == 0 || t.temperatures.is_empty() || t.logit_precision == Precision::Int8 {
                return err("mlm_topk needs k > 0, a temperature, and f32/f16/bf16 logits");
            }
            if t.temperatures.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
                return err("mlm_topk temperatures must be positive");
            }
        }
        if let Some(s) = &self.mlm_sampled {
            if s.k == 0
                || s.k > u32::from(u16::MAX)
                || s.temperature.is_nan()
                || s.temperature <= 0.0
            {
                return err("mlm_sampled needs 0 < k <= 65535 and a positive temperature");
            }
        }
        for (name, l) in [
            ("hidden", &self.hidden),
            ("attention", &self.attention),
            ("attention_qk", &self.attention_qk),
            ("attention_input", &self.attention_input),
        ] {
            if let Some(l) = l {
                if l.layers.is_empty() || l.layers.windows(2).any(|w| w[0] >= w[1]) {
                    return err(format!("{name} layers must be non-empty and ascending"));
                }
                if name != "hidden" && l.layers.contains(&0) {
                    return err(format!("{name} layers start at 1"));
                }
            }
        }
        Ok(())
    }
}

fn join<T: fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for TargetSpec {
    /// The canonical target string (parses back to the same spec).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(t) = &self.mlm_topk {
            let at = if t.positions.is_masked() {
                ""
            } else {
                ",positions=all"
            };
            parts.push(format!(
                "mlm-topk:k={},t={}{at}@{}",
                t.k,
                join(&t.temperatures),
                t.logit_precision
            ));
        }
        if let Some(s) = &self.mlm_sampled {
            parts.push(format!("mlm-sampled:k={},t={}", s.k, s.temperature));
        }
        if let Some(h) = &self.hidden {
            parts.push(format!("hidden:{}@{}", join(&h.layers), h.precision));
        }
        if let Some(a) = &self.attention {
            parts.push(format!("attention:{}@{}", join(&a.layers), a.precision));
        }
        if let Some(a) = &self.attention_qk {
            parts.push(format!("attention-qk:{}@{}", join(&a.layers), a.precision));
        }
        if let Some(a) = &self.attention_input {
            parts.push(format!(
                "attention-input:{}@{}",
                join(&a.layers),
                a.precision
            ));
        }
        if self.logits {
            parts.push("logits".into());
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_examples() {
        let s = TargetSpec::parse("mlm-topk:k=32,hidden:last,attention:3,6", 12).unwrap();
        let t = s.mlm_topk.as_ref().unwrap();
        assert_eq!((t.k, t.temperatures.clone()), (32, vec![1.0]));
        assert_eq!(t.logit_precision, Precision::F16);
        assert_eq!(s.hidden.as_ref().unwrap().layers, vec![12]);
        assert_eq!(s.attention.as_ref().unwrap().layers, vec![3, 6]);
        assert!(!s.logits && s.mlm_sampled.is_none());

        let s = TargetSpec::parse("mlm-sampled:k=12,t=2,logits,hidden:0,6@int8", 6).unwrap();
        assert_eq!(s.mlm_sampled.as_ref().unwrap().k, 12);
        assert_eq!(s.mlm_sampled.as_ref().unwrap().temperature, 2.0);
        assert!(s.logits);
        let h = s.hidden.unwrap();
        assert_eq!((h.layers, h.precision), (vec![0, 6], Precision::Int8));

        let s = TargetSpec::parse("mlm-topk:k=8,t=1,2,4@bf16,hidden:all@f32", 3).unwrap();
        let t = s.mlm_topk.unwrap();
        assert_eq!(t.temperatures, vec![1.0, 2.0, 4.0]);
        assert_eq!(t.logit_precision, Precision::Bf16);
        assert_eq!(s.hidden.unwrap().layers, vec![0, 1, 2, 3]);

        let s = TargetSpec::parse("attention:all@int8", 4).unwrap();
        assert_eq!(s.attention.unwrap().layers, vec![1, 2, 3, 4]);
        let s = TargetSpec::parse("hidden:0,attention-qk:2,4,6,mlm-topk", 6).unwrap();
        let qk = s.attention_qk.unwrap();
        assert_eq!((qk.layers, qk.precision), (vec![2, 4, 6], Precision::F16));
        assert!(s.attention.is_none() && s.mlm_topk.is_some());
        let s = TargetSpec::parse("attention-qk:last@int8", 6).unwrap();
        let qk = s.attention_qk.unwrap();
        assert_eq!((qk.layers, qk.precision), (vec![6], Precision::Int8));
        assert!(TargetSpec::parse("logits", 4).unwrap().logits);
        assert!(TargetSpec::parse("mlm-topk", 4).unwrap().mlm_topk.is_some());
        assert_eq!(
            TargetSpec::parse("mlm-topk@f32", 4)
                .unwrap()
                .mlm_topk
                .unwrap()
                .logit_precision,
            Precision::F32
        );
    }

    #[test]
    fn display_parses_back() {
        let text = "mlm-topk:k=16,t=1,2.5@f16,mlm-sampled:k=12,t=2,hidden:0,3@int8,\
                    attention:1,3@bf16,attention-qk:2,3@int8,attention-input:1,3@int8,logits";
        let s = TargetSpec::parse(text, 3).unwrap();
        assert_eq!(TargetSpec::parse(&s.to_string(), 3).unwrap(), s);
        s.validate().unwrap();
        let all = TargetSpec::parse("mlm-topk:k=8,t=1,2,positions=all@f32", 3).unwrap();
        assert_eq!(all.mlm_topk.as_ref().unwrap().positions, TopKPositions::All);
        assert_eq!(all.mlm_topk.as_ref().unwrap().temperatures, [1.0, 2.0]);
        assert_eq!(TargetSpec::parse(&all.to_string(), 3).unwrap(), all);
        // Masked rows are the default and leave the manifest as before.
        let masked = TargetSpec::parse("mlm-topk:k=8,positions=masked", 3).unwrap();
        assert!(masked.mlm_topk.as_ref().unwrap().positions.is_masked());
        let json = serde_json::to_string(&masked.mlm_topk).unwrap();
        assert!(!json.contains("positions"), "{json}");
        assert!(TargetSpec::parse("mlm-topk:positions=some", 3).is_err());
    }

    #[test]
    fn clear_errors() {
        let cases = [
            ("mlm-topk:k=32,foo:3", "unknown target `foo`"),
            ("bogus", "unknown target `bogus`"),
            ("hidden:13", "out of range 0..=12"),
            ("attention:0", "out of range 1..=12"),
            ("attention-qk:0", "out of range 1..=12"),
            ("attention-qk", "needs layers"),
            ("attention-input:0", "out of range 1..=12"),
            ("hidden", "needs layers"),
            ("hidden:x7", "bad layer `x7`"),
            ("mlm-topk:k=0", "positive integer"),
            ("mlm-topk:q=3", "unknown argument `q=3`"),
            ("mlm-topk:k=4@int8", "int8 logits"),
            ("mlm-topk:t=-1", "temperature"),
            ("hidden:1@f8", "unknown precision `f8`"),
            ("hidden:1@f16,2@int8", "both given"),
            ("hidden:1,hidden:2", "given twice"),
            ("logits:3", "no arguments"),
            ("mlm-sampled:k=12@f16", "no precision"),
            ("hidden:1,,2", "empty item"),
            ("3,4", "not a target"),
        ];
        for (text, want) in cases {
            let e = TargetSpec::parse(text, 12).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = TargetSpec::parse("bogus", 12).unwrap_err().to_string();
        assert!(
            e.contains(
                "mlm-topk, mlm-sampled, hidden, attention, attention-qk, attention-input, logits"
            ),
            "{e}"
        );
    }
}
