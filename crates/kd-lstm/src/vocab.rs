//! A vocabulary of the student's own: the teacher's word pieces seen in the transfer set
//! (plus the special tokens) as rows of a smaller embedding table, and the map from teacher
//! ids to those rows that the model applies to its inputs (ids not kept read the `[UNK]` row).
//!
//! Saved beside `config.json` as `vocab_map.json`:
//!
//! ```json
//! {
//!   "teacher_vocab_size": 30522,   // ids the model accepts (the teacher tokenizer's)
//!   "unk_row": 1,                  // the row every id not kept reads ([UNK]'s)
//!   "piece_ids": [0, 100, 101, ...] // the teacher id of row 0, row 1, ... (ascending)
//! }
//! ```

use crate::config::{BiLstmConfig, Vocabulary};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file name of the map in a saved directory.
pub const VOCAB_MAP: &str = "vocab_map.json";

/// Teacher ids to rows of the student's embedding table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VocabMap {
    /// Ids the model accepts: the teacher tokenizer's vocabulary size.
    pub teacher_vocab_size: usize,
    /// The row of `[UNK]`, read by every id not in `piece_ids`.
    pub unk_row: u32,
    /// The teacher id of each row, strictly ascending.
    pub piece_ids: Vec<u32>,
}

impl VocabMap {
    /// The ids counted at least `min_count` times in `counts` (indexed by teacher id, length
    /// the teacher's vocabulary size), plus `specials`; rows in ascending teacher id, `unk`
    /// (one of `specials`) the row of every other id.
    pub fn from_counts(counts: &[u64], min_count: u64, specials: &[u32], unk: u32) -> Result<Self> {
        let n = counts.len();
        if let Some(&bad) = specials.iter().find(|&&s| s as usize >= n) {
            return Err(Error::Config(format!(
                "special token id {bad} is outside the teacher's vocabulary of {n}"
            )));
        }
        if !specials.contains(&unk) {
            return Err(Error::Config(format!(
                "the [UNK] id {unk} is not among the special tokens {specials:?}"
            )));
        }
        let piece_ids: Vec<u32> = (0..n as u32)
            .filter(|&id| counts[id as usize] >= min_count.max(1) || specials.contains(&id))
            .collect();
        let unk_row = piece_ids.binary_search(&unk).expect("specials are kept") as u32;
        Ok(Self {
            teacher_vocab_size: n,
            unk_row,
            piece_ids,
        })
    }

    /// Checks the map on its own and against `config` (`origin` names the file in errors):
    /// one id per row of the table, ids below `teacher_vocab_size`, unique and ascending,
    /// `unk_row` a row, the padding id a teacher id.
    pub fn validate(&self, config: &BiLstmConfig, origin: &str) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(format!("{origin}: {msg}")));
        if config.vocabulary != Vocabulary::TransferSet {
            return bad(format!(
                "a vocabulary map belongs to a model with vocabulary \"transfer_set\"; config.json \
                 says {:?}",
                config.vocabulary.name()
            ));
        }
        if self.piece_ids.len() != config.vocab_size {
            return bad(format!(
                "piece_ids has {} ids, config.json has vocab_size {}",
                self.piece_ids.len(),
                config.vocab_size
            ));
        }
        let n = self.teacher_vocab_size;
        if let Some((i, id)) = (self.piece_ids.iter().enumerate()).find(|(_, &id)| id as usize >= n)
        {
            return bad(format!(
                "piece_ids[{i}] = {id} is outside teacher_vocab_size {n}"
            ));
        }
        if let Some(i) =
            (1..self.piece_ids.len()).find(|&i| self.piece_ids[i - 1] >= self.piece_ids[i])
        {
            return bad(format!(
                "piece_ids must be unique and ascending: piece_ids[{}] = {} then piece_ids[{i}] = {}",
                i - 1,
                self.piece_ids[i - 1],
                self.piece_ids[i]
            ));
        }
        if self.unk_row as usize >= self.piece_ids.len() {
            return bad(format!(
                "unk_row {} is not a row of the {} in piece_ids",
                self.unk_row,
                self.piece_ids.len()
            ));
        }
        if config.pad_token_id as usize >= n {
            return bad(format!(
                "config.json's pad_token_id {} is outside teacher_vocab_size {n}",
                config.pad_token_id
            ));
        }
        Ok(())
    }

    /// Reads `path` and checks it against `config`; a missing, unreadable or inconsistent
    /// file is an error naming it and the field at fault.
    pub fn from_file(path: &Path, config: &BiLstmConfig) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let map: Self = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        map.validate(config, &path.display().to_string())?;
        Ok(map)
    }

    /// The map as JSON (one line: the id list is long).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("vocabulary map serialises")
    }

    /// The row of every teacher id (`teacher_vocab_size` entries).
    pub fn lookup(&self) -> Vec<u32> {
        let mut rows = vec![self.unk_row; self.teacher_vocab_size];
        for (row, &id) in self.piece_ids.iter().enumerate() {
            rows[id as usize] = row as u32;
        }
        rows
    }
}
