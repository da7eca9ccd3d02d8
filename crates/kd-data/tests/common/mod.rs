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

/// The offline asset `rel` under `KD_ASSETS` (default: the workspace's `assets/`). A missing
/// asset fails the test with the fetch command, unless `KD_SKIP_ASSETS=1` asks to skip the
/// tests that need assets: then `None` (and a note).
pub fn asset(rel: &str) -> Option<std::path::PathBuf> {
    let root = std::env::var_os("KD_ASSETS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(
                &std::env::var("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("../../assets")
        });
    let p = root.join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("KD_SKIP_ASSETS").is_some_and(|v| v == "1") {
        println!("note: {} absent, KD_SKIP_ASSETS=1: skipped", p.display());
        return None;
    }
    panic!(
        "{} is missing: run scripts/fetch-assets.sh (or set KD_ASSETS to the asset folder, or \
         KD_SKIP_ASSETS=1 to skip the tests that need assets)",
        p.display()
    );
}
