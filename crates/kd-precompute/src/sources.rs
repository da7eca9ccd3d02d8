//! The sequences a precompute run covers: a packed text corpus (optionally one side of a
//! held-out split, optionally sampled) or a split of a task dataset.

use crate::{Error, Result};
use kd_core::rng::{below_by_canon, shuffle_with, SeedHash};
use kd_data::{
    encode_dataset, pack_corpus, Corpus, CorpusFormat, PackConfig, TaskData, TaskSplit, TextEncoder,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One sequence to run the teacher on.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// Stable id (packing id for corpora, example index for task data).
    pub id: u64,
    /// Token ids with [CLS]/[SEP].
    pub input_ids: Vec<u32>,
    /// Segment ids for sentence pairs.
    pub token_type_ids: Option<Vec<u32>>,
    /// Task label.
    pub label: Option<kd_data::Label>,
}

/// Which documents of a corpus to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocSplit {
    /// Every document.
    All,
    /// All but the last `heldout_docs` documents.
    Train,
    /// Only the last `heldout_docs` documents.
    Heldout,
}

/// Where the sequences come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// Corpus files or folders (one paragraph per line; JSONL with `text_field`).
    pub corpus: Vec<PathBuf>,
    /// JSONL text field.
    pub text_field: Option<String>,
    /// Parquet text column (reads `*.parquet` corpora).
    pub text_column: Option<String>,
    /// Documents held out at the end of the corpus (in file order).
    pub heldout_docs: usize,
    /// Which side of the held-out split to use.
    pub split: DocSplit,
    /// Keep a seeded sample of at most this many sequences.
    pub max_sequences: Option<usize>,
    /// Task data instead of a corpus.
    pub task: Option<TaskData>,
    /// Which task split: `train`, `dev` or `test`.
    pub task_split: TaskSplit,
    /// Longest sequence.
    pub max_len: usize,
    /// Write the sequences in a seeded random order (the default) rather than in file order.
    /// Training streams contiguous windows of a cache, so a file sorted by label or topic
    /// (review sets often list one class first) would otherwise feed one class for hundreds
    /// of steps; each record keeps its file position as its id.
    pub shuffle: bool,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            corpus: Vec::new(),
            text_field: None,
            text_column: None,
            heldout_docs: 0,
            split: DocSplit::All,
            max_sequences: None,
            task: None,
            task_split: TaskSplit::Train,
            max_len: 128,
            shuffle: true,
        }
    }
}

impl SourceConfig {
    /// The input files in reading order (for the manifest).
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        if let Some(task) = &self.task {
            return Ok(task.files());
        }
        let format = self.format();
        Ok(kd_data::corpus::list_files(
            &self.corpus,
            format.extension(),
        )?)
    }

    fn format(&self) -> CorpusFormat {
        match (&self.text_column, &self.text_field) {
            (Some(c), _) => CorpusFormat::Parquet {
                text_column: c.clone(),
            },
            (None, Some(f)) => CorpusFormat::Jsonl {
                text_field: f.clone(),
            },
            (None, None) => CorpusFormat::Text,
        }
    }

    /// Loads, tokenizes and selects the sequences, in the order the cache stores them. With
    /// `classes` (a classifier teacher's class names in id order) task labels are checked
    /// against them and named labels take the teacher's ids.
    pub fn load(
        &self,
        encoder: &TextEncoder,
        seed: u64,
        classes: Option<&[String]>,
    ) -> Result<Vec<Sequence>> {
        let mut seqs = match &self.task {
            Some(task) => self.load_task(task, encoder, classes)?,
            None => self.load_corpus(encoder)?,
        };
        if let Some(max) = self.max_sequences {
            if seqs.len() > max {
                let order = kd_train::epoch_order(seed, u64::MAX, seqs.len());
                let mut keep: Vec<usize> = order.into_iter().take(max).collect();
                keep.sort_unstable();
                seqs = keep.into_iter().map(|i| seqs[i].clone()).collect();
            }
        }
        if seqs.is_empty() {
            return Err(Error::Config("no sequence to precompute".into()));
        }
        if self.shuffle {
            let mut rng = SeedHash::tagged(b"kd-precompute/order/v1\0")
                .u64(seed)
                .rng();
            shuffle_with(&mut seqs, &mut rng, below_by_canon);
        }
        Ok(seqs)
    }

    fn load_corpus(&self, encoder: &TextEncoder) -> Result<Vec<Sequence>> {
        if self.corpus.is_empty() {
            return Err(Error::Config("no corpus and no task data given".into()));
        }
        let corpus = Corpus::load(&self.corpus, &self.format())?;
        let n_docs = corpus.documents.len();
        if self.split != DocSplit::All && self.heldout_docs >= n_docs {
            return Err(Error::Config(format!(
                "heldout_docs = {} but the corpus has {n_docs} documents",
                self.heldout_docs
            )));
        }
        let first_heldout = (n_docs - self.heldout_docs.min(n_docs)) as u32;
        let pack = PackConfig {
            max_len: self.max_len,
            ..PackConfig::default()
        };
        let packed = pack_corpus(&corpus, encoder, &pack)?;
        Ok(packed
            .sequences
            .into_iter()
            .filter(|s| match self.split {
                DocSplit::All => true,
                DocSplit::Train => s.doc < first_heldout,
                DocSplit::Heldout => s.doc >= first_heldout,
            })
            .map(|s| Sequence {
                id: s.id,
                input_ids: s.input_ids,
                token_type_ids: None,
                label: None,
            })
            .collect())
    }

    fn load_task(
        &self,
        task: &TaskData,
        encoder: &TextEncoder,
        classes: Option<&[String]>,
    ) -> Result<Vec<Sequence>> {
        let mut data = task
            .load()
            .and_then(|splits| splits.take(self.task_split))
            .map_err(|e| Error::Config(e.to_string()))?;
        if let Some(classes) = classes {
            crate::labels::align_to_teacher(&mut data, classes)?;
        }
        let encoded = encode_dataset(&data, encoder, self.max_len)?;
        Ok(encoded
            .into_iter()
            .enumerate()
            .map(|(i, e)| Sequence {
                id: i as u64,
                token_type_ids: Some(e.token_type_ids),
                input_ids: e.input_ids,
                label: Some(e.label),
            })
            .collect())
    }
}
