//! Special-token lookup and plain (special-token-free) tokenization.

use tokenizers::models::ModelWrapper;
use tokenizers::Tokenizer;

use crate::error::{DataError, Result};

/// Ids of the BERT special tokens, looked up by their token strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecialTokens {
    /// `[CLS]`.
    pub cls: u32,
    /// `[SEP]`.
    pub sep: u32,
    /// `[MASK]`.
    pub mask: u32,
    /// `[PAD]`.
    pub pad: u32,
    /// `[UNK]`.
    pub unk: u32,
}

impl SpecialTokens {
    /// Looks up `[CLS]`, `[SEP]`, `[MASK]`, `[PAD]` and `[UNK]` in `tokenizer`.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Self> {
        let id = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| DataError::MissingToken(t.to_string()))
        };
        Ok(SpecialTokens {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            mask: id("[MASK]")?,
            pad: id("[PAD]")?,
            unk: id("[UNK]")?,
        })
    }

    /// All five ids, in the order cls, sep, mask, pad, unk.
    pub fn ids(&self) -> [u32; 5] {
        [self.cls, self.sep, self.mask, self.pad, self.unk]
    }

    /// Whether `id` is one of the five special tokens.
    pub fn is_special(&self, id: u32) -> bool {
        self.ids().contains(&id)
    }
}

/// A tokenizer prepared for plain encoding: a clone of the given one with its
/// own truncation and padding switched off, so that packing and pair encoding
/// in this crate see whole paragraphs and do their own truncation.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    specials: SpecialTokens,
    vocab_size: usize,
    boundaries: WordBoundaries,
}

impl TextEncoder {
    /// Prepares `tokenizer` (cloned; the original is not changed).
    pub fn new(tokenizer: &Tokenizer) -> Result<Self> {
        let specials = SpecialTokens::from_tokenizer(tokenizer)?;
        let mut tokenizer = tokenizer.clone();
        tokenizer
            .with_truncation(None)
            .map_err(|e| DataError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let vocab_size = tokenizer.get_vocab_size(true);
        let boundaries = WordBoundaries::from_tokenizer(&tokenizer);
        Ok(TextEncoder {
            tokenizer,
            specials,
            vocab_size,
            boundaries,
        })
    }

    /// Token ids of `text` without any special token added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| DataError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The special-token ids.
    pub fn specials(&self) -> SpecialTokens {
        self.specials
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Word and sentence boundaries of the vocabulary.
    pub fn boundaries(&self) -> &WordBoundaries {
        &self.boundaries
    }

    /// The prepared tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

/// Where a token sequence may be cut without splitting a word: which ids
/// continue a word (WordPiece pieces with the continuing-subword prefix, `##`
/// for BERT) and which end a sentence (`.`, `!`, `?`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WordBoundaries {
    continuation: Vec<bool>,
    sentence_end: Vec<bool>,
}

impl WordBoundaries {
    /// Classifies every id of `tokenizer`'s vocabulary (added tokens included).
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Self {
        let prefix = match tokenizer.get_model() {
            ModelWrapper::WordPiece(wp) => wp.continuing_subword_prefix.clone(),
            _ => "##".to_string(),
        };
        let vocab = tokenizer.get_vocab(true);
        let size = vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0);
        let mut b = WordBoundaries {
            continuation: vec![false; size],
            sentence_end: vec![false; size],
        };
        for (token, &id) in &vocab {
            let id = id as usize;
            b.continuation[id] = !prefix.is_empty() && token.starts_with(&prefix);
            b.sentence_end[id] = matches!(token.as_str(), "." | "!" | "?");
        }
        b
    }

    /// How good a cut before position `at` of `ids` is: 2 at a sentence start
    /// (or `at == 0`), 1 at any other word start, 0 inside a word. Unknown ids
    /// count as word starts that end no sentence.
    pub fn cut_score(&self, ids: &[u32], at: usize) -> u8 {
        if at == 0 {
            return 2;
        }
        let Some(&id) = ids.get(at) else {
            return 2;
        };
        if self.continuation.get(id as usize).copied().unwrap_or(false) {
            return 0;
        }
        let prev = ids[at - 1] as usize;
        if self.sentence_end.get(prev).copied().unwrap_or(false) {
            2
        } else {
            1
        }
    }
}
