//! Tokenization of a corpus and document-aware packing into sequences.
//!
//! Each sequence is `[CLS]`, then as many whole paragraphs of one document as
//! fit, then `[SEP]`; it never crosses a document boundary. A paragraph longer
//! than `room = max_len - 2` tokens is cut into chunks of at most `room`
//! tokens, which are then packed like paragraphs (so the last, shorter chunk
//! can share a sequence with the next paragraph). Where the cuts go is set by
//! [`CutRule`]: at the last sentence start in the second half of the window
//! (the default), at the last word start there, or at exactly `room` tokens
//! (the reference behaviour). Sequences of at most `drop_max_len` tokens and
//! sequences with at least `max_unk_ratio` `[UNK]` tokens (both counted with
//! the special tokens) are dropped, as in the DistilBERT data preparation.

use rayon::prelude::*;

use crate::corpus::Corpus;
use crate::error::{DataError, Result};
use crate::tokens::{SpecialTokens, TextEncoder, WordBoundaries};

/// Packing settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PackConfig {
    /// Longest sequence, special tokens included (default 128; at least 3).
    pub max_len: usize,
    /// Sequences with at most this many tokens are dropped (default 11).
    pub drop_max_len: usize,
    /// Sequences whose share of `[UNK]` is at least this are dropped (default 0.5).
    pub max_unk_ratio: f64,
    /// Where long paragraphs are cut (default [`CutRule::Sentence`]).
    pub cut: CutRule,
}

/// Where a paragraph longer than `max_len - 2` tokens is cut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CutRule {
    /// Every `max_len - 2` tokens, even inside a word (DistilBERT reference).
    Exact,
    /// At the last word start in the second half of each window (chunks keep
    /// nearly full length).
    Word,
    /// At the last sentence start in the second half of each window, else as
    /// [`CutRule::Word`] (chunks are whole sentences where possible, on average
    /// somewhat shorter).
    #[default]
    Sentence,
}

impl CutRule {
    fn max_score(self) -> u8 {
        match self {
            CutRule::Exact => 0,
            CutRule::Word => 1,
            CutRule::Sentence => 2,
        }
    }
}

impl Default for PackConfig {
    fn default() -> Self {
        PackConfig {
            max_len: 128,
            drop_max_len: 11,
            max_unk_ratio: 0.5,
            cut: CutRule::Sentence,
        }
    }
}

impl PackConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.max_len < 3 {
            return Err(DataError::Invalid(format!(
                "max_len must be at least 3, got {}",
                self.max_len
            )));
        }
        if !(self.max_unk_ratio > 0.0 && self.max_unk_ratio <= 1.0) {
            return Err(DataError::Invalid(format!(
                "max_unk_ratio must be in (0, 1], got {}",
                self.max_unk_ratio
            )));
        }
        Ok(())
    }
}

/// One packed sequence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackedSequence {
    /// Stable id, see [`sequence_id`].
    pub id: u64,
    /// Id of the document it comes from.
    pub doc: u32,
    /// Token ids, `[CLS] ... [SEP]`.
    pub input_ids: Vec<u32>,
}

/// The id of the sequence at `position` (0-based, counted before the drop
/// rules) within document `doc`: `(doc << 32) | position`. It depends only on
/// the corpus, the tokenizer and `max_len`, never on the thread count.
pub fn sequence_id(doc: u32, position: u32) -> u64 {
    (u64::from(doc) << 32) | u64::from(position)
}

/// Counts gathered while packing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackStats {
    /// Documents read (including those without paragraphs).
    pub docs: usize,
    /// Non-blank paragraphs read.
    pub paragraphs: usize,
    /// Sequences kept.
    pub sequences: usize,
    /// Sequences dropped as too short.
    pub dropped_short: usize,
    /// Sequences dropped for too many `[UNK]`.
    pub dropped_unk: usize,
    /// Tokens in the kept sequences, special tokens included.
    pub tokens: usize,
}

impl PackStats {
    fn add(&mut self, other: &PackStats) {
        self.docs += other.docs;
        self.paragraphs += other.paragraphs;
        self.sequences += other.sequences;
        self.dropped_short += other.dropped_short;
        self.dropped_unk += other.dropped_unk;
        self.tokens += other.tokens;
    }
}

/// The packed corpus.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Packed {
    /// Kept sequences, ordered by document then position.
    pub sequences: Vec<PackedSequence>,
    /// Counts.
    pub stats: PackStats,
}

/// Cut points of a paragraph of `ids` into chunks of at most `room` tokens:
/// the returned ends (exclusive), the last one `ids.len()`. Each cut is the
/// best-scoring position in the second half of the window, the later one on a
/// tie, the score being [`WordBoundaries::cut_score`] capped by `rule`
/// ([`CutRule::Exact`]: always at `room` tokens).
pub fn chunk_ends(
    ids: &[u32],
    room: usize,
    boundaries: &WordBoundaries,
    rule: CutRule,
) -> Vec<usize> {
    let room = room.max(1);
    let mut ends = Vec::with_capacity(ids.len() / room + 1);
    let mut start = 0;
    while ids.len() - start > room {
        let hi = start + room;
        let cap = rule.max_score();
        let cut = if cap == 0 {
            hi
        } else {
            (start + room.div_ceil(2).max(1)..=hi)
                .max_by_key(|&c| boundaries.cut_score(ids, c).min(cap))
                .unwrap_or(hi)
        };
        ends.push(cut);
        start = cut;
    }
    if start < ids.len() || ids.is_empty() {
        ends.push(ids.len());
    }
    ends
}

/// Packs the already tokenized paragraphs (no special tokens) of document
/// `doc`. Pure and deterministic; see the module doc for the rules.
/// `boundaries` places the cuts in long paragraphs (see [`CutRule`]).
pub fn pack_document(
    doc: u32,
    paragraphs: &[Vec<u32>],
    specials: &SpecialTokens,
    boundaries: &WordBoundaries,
    config: &PackConfig,
) -> Result<Packed> {
    config.validate()?;
    let room = config.max_len - 2;
    let mut bodies: Vec<Vec<u32>> = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    for paragraph in paragraphs {
        let mut start = 0;
        for end in chunk_ends(paragraph, room, boundaries, config.cut) {
            let chunk = &paragraph[start..end];
            start = end;
            if chunk.is_empty() {
                continue;
            }
            if !current.is_empty() && current.len() + chunk.len() > room {
                bodies.push(std::mem::take(&mut current));
            }
            current.extend_from_slice(chunk);
        }
    }
    if !current.is_empty() {
        bodies.push(current);
    }
    let mut out = Packed {
        sequences: Vec::with_capacity(bodies.len()),
        stats: PackStats {
            docs: 1,
            paragraphs: paragraphs.len(),
            ..PackStats::default()
        },
    };
    for (position, body) in bodies.into_iter().enumerate() {
        let len = body.len() + 2;
        let unk = body.iter().filter(|&&t| t == specials.unk).count();
        if len <= config.drop_max_len {
            out.stats.dropped_short += 1;
            continue;
        }
        if unk as f64 / len as f64 >= config.max_unk_ratio {
            out.stats.dropped_unk += 1;
            continue;
        }
        let position = u32::try_from(position)
            .map_err(|_| DataError::Invalid(format!("document {doc}: too many sequences")))?;
        let mut input_ids = Vec::with_capacity(len);
        input_ids.push(specials.cls);
        input_ids.extend(body);
        input_ids.push(specials.sep);
        out.stats.sequences += 1;
        out.stats.tokens += len;
        out.sequences.push(PackedSequence {
            id: sequence_id(doc, position),
            doc,
            input_ids,
        });
    }
    Ok(out)
}

/// Tokenizes every paragraph (no special tokens), in parallel over documents
/// on the current rayon pool; `result[d][p]` holds paragraph `p` of document
/// `d`.
pub fn tokenize_corpus(corpus: &Corpus, encoder: &TextEncoder) -> Result<Vec<Vec<Vec<u32>>>> {
    corpus
        .documents
        .par_iter()
        .map(|doc| {
            doc.paragraphs
                .iter()
                .map(|p| encoder.encode(&p.text))
                .collect::<Result<Vec<_>>>()
        })
        .collect()
}

/// Tokenizes and packs the whole corpus, in parallel over documents on the
/// current rayon pool. The output is the same for any number of threads.
pub fn pack_corpus(corpus: &Corpus, encoder: &TextEncoder, config: &PackConfig) -> Result<Packed> {
    config.validate()?;
    let specials = encoder.specials();
    let boundaries = encoder.boundaries();
    let per_doc = corpus
        .documents
        .par_iter()
        .map(|doc| {
            let paragraphs = doc
                .paragraphs
                .iter()
                .map(|p| encoder.encode(&p.text))
                .collect::<Result<Vec<_>>>()?;
            pack_document(doc.id, &paragraphs, &specials, boundaries, config)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut packed = Packed::default();
    for doc in per_doc {
        packed.stats.add(&doc.stats);
        packed.sequences.extend(doc.sequences);
    }
    Ok(packed)
}
