//! Loading a model directory's tokenizer: `tokenizer.json`, or a BERT WordPiece tokenizer built
//! from `vocab.txt` with the casing of `tokenizer_config.json`.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// The file a directory's tokenizer is read from (`tokenizer.json`, else `vocab.txt`).
pub fn tokenizer_source(dir: &Path) -> Result<PathBuf> {
    for f in ["tokenizer.json", "vocab.txt"] {
        let p = dir.join(f);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::Tokenizer {
        path: dir.to_path_buf(),
        msg: "no tokenizer.json or vocab.txt".into(),
    })
}

/// BERT's special tokens.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Loads the tokenizer of a model directory. BERT's special tokens present in the vocabulary
/// are matched whole in input text (`"a [MASK] b"` keeps `[MASK]`), as in transformers.
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let mut tok = load_raw(dir)?;
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .filter(|t| tok.token_to_id(t).is_some())
        .map(|t| AddedToken::from(*t, true))
        .collect();
    tok.add_special_tokens(&specials);
    Ok(tok)
}

fn load_raw(dir: &Path) -> Result<Tokenizer> {
    let src = tokenizer_source(dir)?;
    let err = |msg: String| Error::Tokenizer {
        path: src.clone(),
        msg,
    };
    if src.file_name().is_some_and(|n| n == "tokenizer.json") {
        // Padding and truncation stored in the file are request-time options in transformers;
        // kd pads and truncates its batches itself.
        let mut tok = Tokenizer::from_file(&src).map_err(|e| err(e.to_string()))?;
        tok.with_padding(None);
        tok.with_truncation(None).map_err(|e| err(e.to_string()))?;
        return Ok(tok);
    }
    let lowercase = lowercase_setting(dir)?;
    let vocab = src
        .to_str()
        .ok_or_else(|| err("path is not UTF-8".into()))?;
    let wordpiece = WordPiece::from_file(vocab)
        .unk_token("[UNK]".into())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let mut tok = Tokenizer::new(wordpiece);
    let id = |t: &str| {
        tok.token_to_id(t)
            .ok_or_else(|| err(format!("vocab has no {t} token")))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    tok.with_decoder(Some(WordPieceDecoder::default()));
    Ok(tok)
}

/// `do_lower_case` from `tokenizer_config.json` (default true, like `BertTokenizer`).
fn lowercase_setting(dir: &Path) -> Result<bool> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(true);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Tokenizer {
        path: path.clone(),
        msg: format!("invalid JSON: {e}"),
    })?;
    match v.get("do_lower_case") {
        None => Ok(true),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Error::Tokenizer {
            path,
            msg: format!("field do_lower_case: expected true/false, got {other}"),
        }),
    }
}
