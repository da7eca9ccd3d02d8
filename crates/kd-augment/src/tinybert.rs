//! TinyBERT's augmentation (Jiao et al. 2020, `data_augmentation.py`): for each alphabetic
//! non-stopword, candidates come from the teacher's MLM head when the word is one word piece
//! (input `[CLS] masked sentence [SEP] original sentence [SEP]`, top M, `##` pieces and
//! special tokens dropped, and, unlike the reference, punctuation and digits too) and from its embedding neighbours when it is several pieces
//! ([`crate::neighbours`]). Each copy replaces each such word with probability p by a uniform
//! pick among its candidates.
//!
//! The masked inputs of many texts run through the teacher together, `batch_size` at a time;
//! a text's candidates depend only on the text, so any batch size gives the same candidates up
//! to float rounding of the forward pass.

use crate::error::{AugmentError, Result};
use crate::neighbours::Neighbours;
use crate::rng::{index, unit};
use crate::stopwords::is_stopword;
use crate::teacher::{top_k, MlmQuery, MlmTeacher};
use crate::words::{is_alphabetic, match_case, render, split_words, Word};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Settings of TinyBERT's rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TinyBertSettings {
    /// Probability that a candidate word is replaced in a copy (reference: 0.4).
    pub replace_prob: f64,
    /// Top MLM predictions kept before `##` pieces and specials are dropped (reference: 15).
    pub top_m: usize,
    /// Embedding neighbours of a multi-piece word (reference: 15).
    pub neighbours: usize,
}

impl Default for TinyBertSettings {
    fn default() -> Self {
        Self {
            replace_prob: 0.4,
            top_m: 15,
            neighbours: 15,
        }
    }
}

impl TinyBertSettings {
    /// Checks `replace_prob` in [0, 1] and `top_m`, `neighbours` at least 1.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(0.0..=1.0).contains(&self.replace_prob) {
            return Err(format!(
                "tinybert.replace_prob = {}: a probability must be in [0, 1]",
                self.replace_prob
            ));
        }
        if self.top_m == 0 || self.neighbours == 0 {
            return Err("tinybert.top_m and tinybert.neighbours must be at least 1".into());
        }
        Ok(())
    }
}

/// A text with the candidates of its replaceable words.
#[derive(Debug, Clone, PartialEq)]
pub struct TinyBertText {
    /// The text.
    pub text: String,
    /// Its words.
    pub words: Vec<Word>,
    /// `(word index, candidates)` for every word with at least one candidate, in word order.
    pub slots: Vec<(usize, Vec<String>)>,
}

impl TinyBertText {
    /// One copy: each slot's word replaced with probability `p` by a uniform pick among its
    /// candidates (one uniform per slot, then one index when replacing).
    pub fn augment(&self, p: f64, rng: &mut impl RngCore) -> String {
        let picks = sample_picks(&self.slots, p, rng);
        let mut new: Vec<Option<String>> = vec![None; self.words.len()];
        for ((word, cands), pick) in self.slots.iter().zip(picks) {
            if let Some(c) = pick {
                new[*word] = Some(cands[c].clone());
            }
        }
        render(&self.text, &self.words, &new, 0..self.words.len())
    }
}

/// The draws of one copy: for each slot, the candidate picked, or `None` when kept.
pub fn sample_picks(
    slots: &[(usize, Vec<String>)],
    p: f64,
    rng: &mut impl RngCore,
) -> Vec<Option<usize>> {
    slots
        .iter()
        .map(|(_, cands)| (unit(rng) < p).then(|| index(rng, cands.len())))
        .collect()
}

/// Where a word's candidates come from.
enum Source {
    /// Row of the MLM query list.
    Mlm(usize),
    /// Embedding neighbours, already ranked.
    Neighbours(Vec<u32>),
}

/// A text's words and where each replaceable word's candidates come from.
type Plan = (Vec<Word>, Vec<(usize, Source)>);

/// Finds the candidates of every replaceable word of `texts`, with one teacher pass over all
/// their masked inputs, `batch_size` inputs per forward. `cache` keeps neighbour lists by
/// lower-case word across calls.
pub fn prepare(
    teacher: &MlmTeacher,
    neighbours: &Neighbours,
    cache: &mut HashMap<String, Vec<u32>>,
    texts: &[&str],
    s: &TinyBertSettings,
    batch_size: usize,
) -> Result<Vec<TinyBertText>> {
    let mut queries: Vec<MlmQuery> = Vec::new();
    let mut plans: Vec<Plan> = Vec::with_capacity(texts.len());
    for text in texts {
        let words = split_words(text);
        let pieces = teacher.pieces(text)?;
        let by_word = pieces_by_word(&words, &pieces.offsets);
        let mut sources = Vec::new();
        for (i, w) in words.iter().enumerate() {
            let word = w.of(text);
            if !is_alphabetic(word) || is_stopword(word) {
                continue;
            }
            let range = &by_word[i];
            match range.len() {
                0 => {}
                1 => {
                    if let Some(q) = teacher.query(&pieces.ids, range.start) {
                        sources.push((i, Source::Mlm(queries.len())));
                        queries.push(q);
                    }
                }
                _ => {
                    let lower = word.to_lowercase();
                    let ids = match cache.get(&lower) {
                        Some(ids) => ids.clone(),
                        None => {
                            let ids = neighbours.nearest(
                                &pieces.ids[range.clone()],
                                s.neighbours,
                                |id| teacher.token(id) == lower,
                            );
                            cache.insert(lower, ids.clone());
                            ids
                        }
                    };
                    sources.push((i, Source::Neighbours(ids)));
                }
            }
        }
        plans.push((words, sources));
    }
    let logits = teacher.mask_logits(&queries, batch_size)?;
    if logits.len() != queries.len() {
        return Err(AugmentError::Setting(format!(
            "the teacher returned {} MLM rows for {} masked inputs",
            logits.len(),
            queries.len()
        )));
    }
    let out = texts
        .iter()
        .zip(plans)
        .map(|(text, (words, sources))| {
            let slots = sources
                .into_iter()
                .filter_map(|(i, source)| {
                    let ids = match source {
                        Source::Mlm(row) => mlm_candidates(teacher, &logits[row], s.top_m),
                        Source::Neighbours(ids) => ids,
                    };
                    let original = words[i].of(text);
                    let cands: Vec<String> = ids
                        .iter()
                        .map(|&id| match_case(original, teacher.token(id)))
                        .collect();
                    (!cands.is_empty()).then_some((i, cands))
                })
                .collect();
            TinyBertText {
                text: text.to_string(),
                words,
                slots,
            }
        })
        .collect();
    Ok(out)
}

/// The top `m` tokens of an MLM row with `##` pieces, special tokens and non-words dropped
/// ([`MlmTeacher::is_replacement`]), best first.
pub fn mlm_candidates(teacher: &MlmTeacher, row: &[f32], m: usize) -> Vec<u32> {
    top_k(row, m)
        .into_iter()
        .filter(|&id| teacher.is_replacement(id))
        .collect()
}

/// For each word, the range of pieces whose first byte lies inside it.
fn pieces_by_word(words: &[Word], offsets: &[(usize, usize)]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::with_capacity(words.len());
    let mut j = 0;
    for w in words {
        while j < offsets.len() && offsets[j].0 < w.start {
            j += 1;
        }
        let start = j;
        while j < offsets.len() && offsets[j].0 < w.end {
            j += 1;
        }
        out.push(start..j);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_map_to_words() {
        let words = split_words("an unwatchable, film");
        // an | un ##watch ##able | , | film
        let offsets = [(0, 2), (3, 5), (5, 10), (10, 14), (14, 15), (16, 20)];
        assert_eq!(pieces_by_word(&words, &offsets), [0..1, 1..4, 4..5, 5..6]);
    }
}
