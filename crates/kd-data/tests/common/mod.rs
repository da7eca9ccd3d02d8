//! Shared test fixtures: a tiny BERT WordPiece tokenizer built from an inline vocabulary.
#![allow(dead_code)]

use kd_data::TextEncoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// The vocabulary, id = index. Specials are deliberately not at BERT's ids.
pub const VOCAB: [&str; 36] = [
    "the", "[PAD]", "a", "[UNK]", "cat", "[CLS]", "dog", "[SEP]", "[MASK]", "sat", "on", "mat",
    "is", "big", "small", "and", "run", "##s", "##ing", "hello", "world", ".", ",", "red", "blue",
    "green", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
];

/// Builds the tokenizer (lower-casing BERT normalizer, BERT pre-tokenizer,
/// WordPiece, BERT post-processor, special tokens registered).
pub fn tokenizer() -> Tokenizer {
    let vocab: [(String, u32); VOCAB.len()] =
        std::array::from_fn(|i| (VOCAB[i].to_string(), i as u32));
    let wp = WordPiece::builder()
        .vocab(vocab)
        .unk_token("[UNK]".to_string())
        .build()
        .expect("wordpiece");
    let id = |t: &str| VOCAB.iter().position(|v| *v == t).unwrap() as u32;
    let mut tk = Tokenizer::new(wp);
    tk.with_normalizer(Some(BertNormalizer::default()));
    tk.with_pre_tokenizer(Some(BertPreTokenizer));
    tk.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".to_string(), id("[SEP]")),
        ("[CLS]".to_string(), id("[CLS]")),
    )));
    let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    tk.add_special_tokens(&specials);
    tk
}

/// A prepared encoder over [`tokenizer`].
pub fn encoder() -> TextEncoder {
    TextEncoder::new(&tokenizer()).expect("encoder")
}

/// Id of `token` in [`VOCAB`].
pub fn id(token: &str) -> u32 {
    VOCAB
        .iter()
        .position(|v| *v == token)
        .expect("token in vocab") as u32
}

/// A text of `n` in-vocabulary words (each one token), cycling through a word list.
pub fn words(n: usize, offset: usize) -> String {
    const W: &[&str] = &[
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    (0..n)
        .map(|i| W[(i + offset) % W.len()])
        .collect::<Vec<_>>()
        .join(" ")
}
