//! Special-token lookup and plain (special-token-free) tokenization.

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
        Ok(TextEncoder {
            tokenizer,
            specials,
            vocab_size,
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

    /// The prepared tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}
