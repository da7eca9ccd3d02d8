//! Which student layer learns from which teacher layer: one named pair (`student_layer`,
//! `teacher_layer`), or a `map` for many, as TinyBERT's `n = g(m)`.
//!
//! Layers count like Hugging Face `hidden_states`: hidden layer 0 is the embedding output,
//! layer `l` in `1..=N` the output of encoder layer `l`. Attention layers are `1..=N`.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// One layer, by number or as the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LayerRef {
    /// Layer number (0 = embeddings for hidden states).
    Number(usize),
    /// `"last"`: the model's last layer.
    Named(LastLayer),
}

/// The spelling `"last"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastLayer {
    /// The last layer.
    Last,
}

impl LayerRef {
    /// The last layer.
    pub const LAST: LayerRef = LayerRef::Named(LastLayer::Last);

    /// The layer number in a model of `layers` layers.
    pub fn resolve(self, layers: usize) -> usize {
        match self {
            LayerRef::Number(n) => n,
            LayerRef::Named(LastLayer::Last) => layers,
        }
    }
}

/// A rule for many layer pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LayerMap {
    /// `"uniform"`: TinyBERT's `g(m) = m * N / M` for student layers `m = 1..=M`.
    Rule(MapRule),
    /// Explicit `[student, teacher]` pairs, e.g. `[[1, 2], [2, 4]]`.
    Pairs(Vec<[usize; 2]>),
}

/// Named layer-map rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapRule {
    /// Student layer `m` learns from teacher layer `m * N / M` (requires `M` to divide `N`
    /// evenly only for exact spacing; otherwise the product is floored).
    Uniform,
}

/// Where a loss applies: one pair of layers or a map (exactly one of the two forms).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayerMatch {
    /// The teacher layer of a single pair (default: the last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher_layer: Option<LayerRef>,
    /// The student layer of a single pair (default: the last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub student_layer: Option<LayerRef>,
    /// Or a rule or list for many pairs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map: Option<LayerMap>,
}

impl LayerMatch {
    /// The last student layer against the last teacher layer.
    pub fn last() -> Self {
        Self::default()
    }

    /// The `(student, teacher)` layer pairs for a student of `student_layers` and a teacher of
    /// `teacher_layers` encoder layers. `first` is the lowest layer the loss may name (0 for
    /// hidden states, 1 for attention). `what` names the loss in errors.
    pub fn pairs(
        &self,
        student_layers: usize,
        teacher_layers: usize,
        first: usize,
        what: &str,
    ) -> Result<Vec<(usize, usize)>> {
        let pairs = match (&self.map, self.teacher_layer, self.student_layer) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(Error::Config(format!(
                    "{what}: give either map or teacher_layer/student_layer, not both"
                )))
            }
            (Some(LayerMap::Rule(MapRule::Uniform)), None, None) => (1..=student_layers)
                .map(|m| (m, m * teacher_layers / student_layers.max(1)))
                .collect(),
            (Some(LayerMap::Pairs(p)), None, None) => p.iter().map(|&[s, t]| (s, t)).collect(),
            (None, t, s) => vec![(
                s.unwrap_or(LayerRef::LAST).resolve(student_layers),
                t.unwrap_or(LayerRef::LAST).resolve(teacher_layers),
            )],
        };
        if pairs.is_empty() {
            return Err(Error::Config(format!("{what}: the layer map is empty")));
        }
        for &(s, t) in &pairs {
            if s < first || s > student_layers || t < first || t > teacher_layers {
                return Err(Error::Config(format!(
                    "{what}: the pair student layer {s} -> teacher layer {t} is out of range: \
                     the student has {student_layers} layers and the teacher \
                     {teacher_layers} (layers {first}..={student_layers} and \
                     {first}..={teacher_layers} can be named)"
                )));
            }
        }
        Ok(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> LayerMatch {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn uniform_is_tinyberts_g_and_single_pairs_default_to_the_last_layers() {
        let m = parse(r#"{"map": "uniform"}"#);
        assert_eq!(
            m.pairs(4, 12, 0, "x").unwrap(),
            [(1, 3), (2, 6), (3, 9), (4, 12)]
        );
        assert_eq!(m.pairs(3, 6, 1, "x").unwrap(), [(1, 2), (2, 4), (3, 6)]);
        assert_eq!(LayerMatch::last().pairs(3, 6, 0, "x").unwrap(), [(3, 6)]);
        let one = parse(r#"{"teacher_layer": 0, "student_layer": 0}"#);
        assert_eq!(one.pairs(3, 6, 0, "x").unwrap(), [(0, 0)]);
        let last = parse(r#"{"teacher_layer": "last", "student_layer": 2}"#);
        assert_eq!(last.pairs(3, 6, 0, "x").unwrap(), [(2, 6)]);
        let list = parse(r#"{"map": [[1, 2], [3, 5]]}"#);
        assert_eq!(list.pairs(3, 6, 1, "x").unwrap(), [(1, 2), (3, 5)]);
    }

    #[test]
    fn pairs_past_either_model_are_refused_naming_both_counts() {
        let list = parse(r#"{"map": [[1, 2], [4, 5]]}"#);
        let e = list.pairs(3, 6, 1, "hidden_mse").unwrap_err().to_string();
        assert!(
            e.contains("hidden_mse") && e.contains("student layer 4"),
            "{e}"
        );
        assert!(e.contains("student has 3 layers and the teacher 6"), "{e}");
        let e = parse(r#"{"map": [[1, 7]]}"#)
            .pairs(3, 6, 1, "attention_mse")
            .unwrap_err()
            .to_string();
        assert!(e.contains("teacher layer 7"), "{e}");
        let e = parse(r#"{"map": [[0, 0]]}"#)
            .pairs(3, 6, 1, "attention_mse")
            .unwrap_err()
            .to_string();
        assert!(e.contains("1..=3"), "{e}");
        let both = parse(r#"{"map": "uniform", "teacher_layer": 2}"#);
        assert!(both.pairs(3, 6, 0, "x").is_err());
        assert!(serde_json::from_str::<LayerMatch>(r#"{"map": "unifrom"}"#).is_err());
    }
}
