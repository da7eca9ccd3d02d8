//! Tang et al. (2019)'s augmentation: for each word independently, draw `x ~ U[0, 1)`; with
//! `x < p_mask` the word becomes `[MASK]`, with `p_mask <= x < p_mask + p_pos` it becomes a
//! random lexicon word with the same most likely POS tag (see [`crate::pos`]); then, with
//! probability `p_ng`, only a random n-gram of the whole example is kept (`n` uniform in
//! `1..=max_ngram`, its start uniform among the places it fits).

use crate::lexicon::Lexicon;
use crate::pos::tag_sentence;
use crate::rng::{index, unit};
use crate::words::{match_case, render, split_words, Word};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// The token masked words become.
pub const MASK: &str = "[MASK]";

/// Probabilities of Tang et al.'s rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TangSettings {
    /// Probability that a word is replaced by `[MASK]` (paper: 0.1).
    pub mask_prob: f64,
    /// Probability that a word is replaced by another word of its POS tag (paper: 0.1).
    pub pos_prob: f64,
    /// Probability that a copy keeps only a random n-gram (paper: 0.25).
    pub ngram_prob: f64,
    /// Longest n-gram kept (paper: 5).
    pub max_ngram: usize,
}

impl Default for TangSettings {
    fn default() -> Self {
        Self {
            mask_prob: 0.1,
            pos_prob: 0.1,
            ngram_prob: 0.25,
            max_ngram: 5,
        }
    }
}

impl TangSettings {
    /// Checks the probabilities (each in [0, 1], mask + pos at most 1) and `max_ngram >= 1`.
    pub fn check(&self) -> Result<(), String> {
        for (name, p) in [
            ("tang.mask_prob", self.mask_prob),
            ("tang.pos_prob", self.pos_prob),
            ("tang.ngram_prob", self.ngram_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} = {p}: a probability must be in [0, 1]"));
            }
        }
        if self.mask_prob + self.pos_prob > 1.0 {
            return Err("tang.mask_prob + tang.pos_prob must not exceed 1".into());
        }
        if self.max_ngram == 0 {
            return Err("tang.max_ngram must be at least 1".into());
        }
        Ok(())
    }
}

/// What happens to one word of a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordAction {
    /// Kept as it is.
    Keep,
    /// Replaced by `[MASK]`.
    Mask,
    /// Replaced by a word of the same POS tag.
    Pos,
}

/// The draws of one copy: an action per word and the words kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    /// One action per word.
    pub actions: Vec<WordAction>,
    /// The words kept: all, or the sampled n-gram.
    pub keep: Range<usize>,
}

/// Draws the plan of a copy of `n` words: one uniform per word, then one for the n-gram
/// decision and, when it is taken, the n-gram's length and start.
pub fn plan_copy(n: usize, s: &TangSettings, rng: &mut impl RngCore) -> CopyPlan {
    let actions = (0..n)
        .map(|_| {
            let x = unit(rng);
            if x < s.mask_prob {
                WordAction::Mask
            } else if x < s.mask_prob + s.pos_prob {
                WordAction::Pos
            } else {
                WordAction::Keep
            }
        })
        .collect();
    let mut keep = 0..n;
    if n > 0 && unit(rng) < s.ngram_prob {
        let len = (1 + index(rng, s.max_ngram)).min(n);
        let start = index(rng, n - len + 1);
        keep = start..start + len;
    }
    CopyPlan { actions, keep }
}

/// One text prepared for Tang's rules: its words and their POS tags.
#[derive(Debug, Clone)]
pub struct TangText {
    text: String,
    words: Vec<Word>,
    tags: Vec<String>,
}

impl TangText {
    /// Splits and tags `text`.
    pub fn new(text: &str, lexicon: &Lexicon) -> Self {
        let words = split_words(text);
        let strs: Vec<&str> = words.iter().map(|w| w.of(text)).collect();
        let tags = tag_sentence(lexicon, &strs);
        TangText {
            text: text.to_string(),
            words,
            tags,
        }
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether the text has no words.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The POS tags, one per word.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// Whether word `i` is the tail of a contraction (`s` of `it's`, `t` of `doesn't`): it
    /// directly follows an apostrophe that directly follows a word.
    fn is_clitic(&self, i: usize) -> bool {
        i >= 2 && {
            let (prev, w) = (self.words[i - 1], self.words[i]);
            matches!(prev.of(&self.text), "'" | "\u{2019}")
                && prev.end == w.start
                && self.words[i - 2].end == prev.start
        }
    }

    /// One augmented copy: draws the plan, then (in word order) the replacement of every word
    /// planned for POS replacement: a uniform pick among the lexicon's other plain words with
    /// its tag ([`Lexicon::replacements`]), capitalised like the word. Words without a letter
    /// (punctuation, numbers), the tails of contractions and words whose tag has no other word
    /// stay.
    pub fn augment(&self, lexicon: &Lexicon, s: &TangSettings, rng: &mut impl RngCore) -> String {
        let plan = plan_copy(self.words.len(), s, rng);
        let mut new: Vec<Option<String>> = vec![None; self.words.len()];
        for (i, action) in plan.actions.iter().enumerate() {
            match action {
                WordAction::Keep => {}
                WordAction::Mask => new[i] = Some(MASK.to_string()),
                WordAction::Pos => {
                    let word = self.words[i].of(&self.text);
                    if word.bytes().any(|b| b.is_ascii_alphabetic()) && !self.is_clitic(i) {
                        let pick = pick_other(lexicon.replacements(&self.tags[i]), word, rng);
                        new[i] = pick.map(|w| match_case(word, &w));
                    }
                }
            }
        }
        render(&self.text, &self.words, &new, plan.keep)
    }
}

/// A uniform pick among `words` (sorted) other than `word`; `None` when there is no other.
fn pick_other(words: &[String], word: &str, rng: &mut impl RngCore) -> Option<String> {
    let own = words.binary_search_by(|w| w.as_str().cmp(word)).ok();
    let n = words.len() - usize::from(own.is_some());
    if n == 0 {
        return None;
    }
    let mut i = index(rng, n);
    if own.is_some_and(|o| i >= o) {
        i += 1;
    }
    Some(words[i].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_other_never_returns_the_word() {
        let words: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let mut rng = crate::rng::copy_rng(b"t", 0, 0, 0);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(pick_other(&words, "b", &mut rng).unwrap());
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(pick_other(&words[1..2], "b", &mut rng), None);
        assert_eq!(pick_other(&[], "b", &mut rng), None);
    }

    #[test]
    fn plan_without_ngram_keeps_all_words() {
        let s = TangSettings {
            ngram_prob: 0.0,
            ..TangSettings::default()
        };
        let mut rng = crate::rng::copy_rng(b"t", 1, 2, 3);
        let p = plan_copy(7, &s, &mut rng);
        assert_eq!(p.keep, 0..7);
        assert_eq!(p.actions.len(), 7);
        let all = TangSettings {
            ngram_prob: 1.0,
            max_ngram: 1,
            ..TangSettings::default()
        };
        let p = plan_copy(7, &all, &mut rng);
        assert_eq!(p.keep.len(), 1);
    }
}
