//! `config.json` of a BiLSTM student.
//!
//! ```json
//! {
//!   "model_type": "kd-bilstm",   // always this value: marks the directory as a kd BiLSTM
//!   "vocab_size": 30522,         // rows of the embedding table
//!   "vocabulary": "teacher",     // the rows: "teacher" (every word piece of the teacher) or
//!                                // "transfer_set" (the pieces seen in the transfer set and the
//!                                // special tokens; vocab_map.json maps teacher ids to rows,
//!                                // others read the [UNK] row: see crate::vocab)
//!   "embedding_size": 384,       // E: the teacher's hidden size when copied from it
//!   "hidden_size": 150,          // H: LSTM units per direction
//!   "mlp_hidden_size": 200,      // width of the ReLU layer before the logits
//!   "num_labels": 2,             // classes
//!   "siamese": false,            // sentence pairs: encode both sides, features [h1, h2, h1*h2, |h1-h2|]
//!   "dropout": 0.1,              // on the embeddings and the pooled features, in training only
//!   "pad_token_id": 0            // the id padded rows use (a teacher id)
//! }
//! ```
//!
//! The weights (`model.safetensors`, f32) are, with `F = 2H` (or `8H` when siamese):
//! `embedding.weight [V, E]`; `lstm.weight_ih_l0 [4H, E]`, `lstm.weight_hh_l0 [4H, H]`,
//! `lstm.bias_ih_l0 [4H]`, `lstm.bias_hh_l0 [4H]` and the same with `_reverse`;
//! `mlp.weight [M, F]`, `mlp.bias [M]`; `classifier.weight [C, M]`, `classifier.bias [C]`:
//! the state dict of the PyTorch module in `tests/fixtures/kd_bilstm.py`.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The value of `model_type`.
pub const MODEL_TYPE: &str = "kd-bilstm";

/// Which word pieces the embedding table has rows for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vocabulary {
    /// Every word piece of the teacher's tokenizer; input ids are rows.
    #[default]
    Teacher,
    /// The pieces of the transfer set and the special tokens; `vocab_map.json` maps input ids
    /// to rows (see [`crate::vocab`]).
    TransferSet,
}

impl Vocabulary {
    /// The name in `config.json` and in training settings.
    pub fn name(self) -> &'static str {
        match self {
            Vocabulary::Teacher => "teacher",
            Vocabulary::TransferSet => "transfer_set",
        }
    }

    /// The choice named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        [Vocabulary::Teacher, Vocabulary::TransferSet]
            .into_iter()
            .find(|v| v.name() == name)
    }
}

/// Sizes and settings of a BiLSTM student (see the module docs for the JSON form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BiLstmConfig {
    /// Always [`MODEL_TYPE`].
    pub model_type: String,
    /// Rows of the embedding table.
    pub vocab_size: usize,
    /// Which pieces the rows are (the teacher's, or the transfer set's through a map).
    pub vocabulary: Vocabulary,
    /// Embedding width `E`.
    pub embedding_size: usize,
    /// LSTM units per direction `H` (Tang et al.: 150).
    pub hidden_size: usize,
    /// Width of the ReLU layer.
    pub mlp_hidden_size: usize,
    /// Number of classes.
    pub num_labels: usize,
    /// Sentence pairs, encoded side by side by the shared BiLSTM.
    pub siamese: bool,
    /// Dropout on the embeddings and the pooled features during training.
    pub dropout: f64,
    /// The padding id (an input id: the teacher tokenizer's).
    pub pad_token_id: u32,
    /// Class names by id (the task teacher's), as in a Hugging Face config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id2label: Option<std::collections::BTreeMap<String, String>>,
}

impl Default for BiLstmConfig {
    fn default() -> Self {
        Self {
            model_type: MODEL_TYPE.into(),
            vocab_size: 30522,
            vocabulary: Vocabulary::Teacher,
            embedding_size: 300,
            hidden_size: 150,
            mlp_hidden_size: 200,
            num_labels: 2,
            siamese: false,
            dropout: 0.1,
            pad_token_id: 0,
            id2label: None,
        }
    }
}

impl BiLstmConfig {
    /// Width of the features the ReLU layer reads.
    pub fn feature_size(&self) -> usize {
        if self.siamese {
            8 * self.hidden_size
        } else {
            2 * self.hidden_size
        }
    }

    /// Refuses sizes that cannot make a model; `origin` names where they came from.
    pub fn validate(&self, origin: &str) -> Result<()> {
        if self.model_type != MODEL_TYPE {
            return Err(Error::Config(format!(
                "{origin}: model_type is {:?}, not {MODEL_TYPE:?}",
                self.model_type
            )));
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("embedding_size", self.embedding_size),
            ("hidden_size", self.hidden_size),
            ("mlp_hidden_size", self.mlp_hidden_size),
            ("num_labels", self.num_labels),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{origin}: {name} must be positive")));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!(
                "{origin}: dropout {} is outside [0, 1)",
                self.dropout
            )));
        }
        if self.vocabulary == Vocabulary::Teacher && self.pad_token_id as usize >= self.vocab_size {
            return Err(Error::Config(format!(
                "{origin}: pad_token_id {} is outside the vocabulary of {}",
                self.pad_token_id, self.vocab_size
            )));
        }
        Ok(())
    }

    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let cfg: Self = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    /// The config as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serialises")
    }
}
