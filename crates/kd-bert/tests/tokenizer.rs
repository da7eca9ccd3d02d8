//! Tokenizer loading: `tokenizer.json` and `vocab.txt` alone give the ids transformers gives
//! (tests/fixtures/tokenizer_expected.json); `do_lower_case: false` keeps case; file hashes.

mod common;

use common::*;
use kd_bert::tokenizer::{load_tokenizer, tokenizer_source};
use kd_bert::Error;
use kd_core::fs::sha256_file;
use serde_json::Value;
use std::path::Path;
use tokenizers::{EncodeInput, Tokenizer};

fn expected_json() -> Value {
    let path = fixture("tokenizer_expected.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A temporary directory holding a copy of MiniLM's `vocab.txt` and, optionally, a
/// `tokenizer_config.json`.
fn vocab_only_dir(tokenizer_config: Option<&str>) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        asset("minilm").join("vocab.txt"),
        tmp.path().join("vocab.txt"),
    )
    .unwrap();
    if let Some(cfg) = tokenizer_config {
        std::fs::write(tmp.path().join("tokenizer_config.json"), cfg).unwrap();
    }
    tmp
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Encodes every single and pair of a section of the expected file and compares ids, token
/// types and tokens. Returns the number of cases checked.
fn check_section(tok: &Tokenizer, section: &Value, what: &str) -> usize {
    let mut cases: Vec<(EncodeInput, &Value)> = Vec::new();
    for e in section["singles"].as_array().unwrap() {
        cases.push((e["text"].as_str().unwrap().into(), e));
    }
    for e in section["pairs"].as_array().unwrap() {
        let (a, b) = (e["text_a"].as_str().unwrap(), e["text_b"].as_str().unwrap());
        cases.push(((a, b).into(), e));
    }
    assert!(cases.len() >= 10, "{what}: only {} cases", cases.len());
    let n = cases.len();
    for (input, e) in cases {
        let text = e.get("text").or_else(|| e.get("text_a")).unwrap().clone();
        let enc = tok.encode(input, true).unwrap();
        assert_eq!(enc.get_ids(), u32s(&e["input_ids"]), "{what} ids: {text}");
        assert_eq!(
            enc.get_type_ids(),
            u32s(&e["token_type_ids"]),
            "{what} token types: {text}"
        );
        assert_eq!(
            enc.get_tokens(),
            strings(&e["tokens"]),
            "{what} tokens: {text}"
        );
        assert!(
            enc.get_attention_mask().iter().all(|&m| m == 1),
            "{what}: padded {text}"
        );
    }
    n
}

#[test]
fn minilm_tokenizer_json_matches_transformers() {
    let dir = asset("minilm");
    assert_eq!(tokenizer_source(&dir).unwrap(), dir.join("tokenizer.json"));
    let tok = load_tokenizer(&dir).unwrap();
    // The stored Fixed(128) padding and 128-token truncation are switched off.
    assert!(tok.get_padding().is_none());
    assert!(tok.get_truncation().is_none());
    let n = check_section(
        &tok,
        &expected_json()["minilm_tokenizer_json"],
        "tokenizer.json",
    );
    println!("tokenizer.json: {n} cases match");
}

#[test]
fn vocab_txt_alone_matches_transformers_and_tokenizer_json() {
    let tmp = vocab_only_dir(None);
    assert_eq!(
        tokenizer_source(tmp.path()).unwrap(),
        tmp.path().join("vocab.txt")
    );
    let from_vocab = load_tokenizer(tmp.path()).unwrap();
    let exp = expected_json();
    let n = check_section(&from_vocab, &exp["vocab_txt_lowercase"], "vocab.txt");
    println!("vocab.txt: {n} cases match");
    assert_eq!(from_vocab.get_vocab_size(true), 30522);

    // Both sources agree with each other on every case, token types included.
    let from_json = load_tokenizer(&asset("minilm")).unwrap();
    let section = &exp["vocab_txt_lowercase"];
    for e in section["singles"].as_array().unwrap() {
        let text = e["text"].as_str().unwrap();
        let (a, b) = (
            from_json.encode(text, true).unwrap(),
            from_vocab.encode(text, true).unwrap(),
        );
        assert_eq!(a.get_ids(), b.get_ids(), "{text}");
        assert_eq!(a.get_type_ids(), b.get_type_ids(), "{text}");
        assert_eq!(a.get_tokens(), b.get_tokens(), "{text}");
    }
    for e in section["pairs"].as_array().unwrap() {
        let pair = (e["text_a"].as_str().unwrap(), e["text_b"].as_str().unwrap());
        let (a, b) = (
            from_json.encode(pair, true).unwrap(),
            from_vocab.encode(pair, true).unwrap(),
        );
        assert_eq!(a.get_ids(), b.get_ids(), "{pair:?}");
        assert_eq!(a.get_type_ids(), b.get_type_ids(), "{pair:?}");
        assert_eq!(a.get_tokens(), b.get_tokens(), "{pair:?}");
    }
}

#[test]
fn special_ids_match_transformers() {
    let exp = expected_json();
    let vocab_dir = vocab_only_dir(None);
    for dir in [asset("minilm"), vocab_dir.path().to_path_buf()] {
        let tok = load_tokenizer(&dir).unwrap();
        for (token, id) in exp["special_ids"].as_object().unwrap() {
            assert_eq!(
                tok.token_to_id(token),
                Some(id.as_u64().unwrap() as u32),
                "{token} in {}",
                dir.display()
            );
        }
    }
}

fn ids(tok: &Tokenizer, text: &str) -> Vec<u32> {
    tok.encode(text, true).unwrap().get_ids().to_vec()
}

/// Ids below from transformers' `BertTokenizer.from_pretrained(dir, do_lower_case=False)` on a
/// directory holding only MiniLM's (uncased) `vocab.txt`.
#[test]
fn do_lower_case_false_keeps_case() {
    let cased_dir = vocab_only_dir(Some(r#"{"do_lower_case": false}"#));
    let cased = load_tokenizer(cased_dir.path()).unwrap();
    let lower_dir = vocab_only_dir(Some(r#"{"do_lower_case": true}"#));
    let lower = load_tokenizer(lower_dir.path()).unwrap();

    assert_eq!(
        ids(&cased, "hello, world!"),
        [101, 7592, 1010, 2088, 999, 102]
    );
    // Capitalised words are absent from the uncased vocabulary.
    assert_eq!(
        ids(&cased, "Hello, World!"),
        [101, 100, 1010, 100, 999, 102]
    );
    assert_ne!(ids(&cased, "Hello"), ids(&cased, "hello"));
    assert_eq!(
        cased.encode("Hello, World!", true).unwrap().get_tokens(),
        ["[CLS]", "[UNK]", ",", "[UNK]", "!", "[SEP]"]
    );
    assert_eq!(
        ids(&cased, "the UNITED states"),
        [101, 1996, 100, 2163, 102]
    );
    // Accents are kept too (no lower-casing, strip_accents unset).
    assert_eq!(ids(&cased, "Café naïve"), [101, 100, 100, 102]);
    assert_eq!(ids(&cased, "café"), [101, 100, 102]);
    let pair = cased.encode(("Is it?", "yes it is"), true).unwrap();
    assert_eq!(
        pair.get_ids(),
        [101, 100, 2009, 1029, 102, 2748, 2009, 2003, 102]
    );
    assert_eq!(pair.get_type_ids(), [0, 0, 0, 0, 0, 1, 1, 1, 1]);

    // With do_lower_case true (also the default) case and accents fold away.
    assert_eq!(
        ids(&lower, "Hello, World!"),
        [101, 7592, 1010, 2088, 999, 102]
    );
    assert_eq!(ids(&lower, "Hello"), ids(&lower, "hello"));
    assert_eq!(ids(&lower, "café"), ids(&lower, "cafe"));
    // A tokenizer_config.json without do_lower_case lower-cases, like BertTokenizer.
    let unset_dir = vocab_only_dir(Some(r#"{"model_max_length": 512}"#));
    let unset = load_tokenizer(unset_dir.path()).unwrap();
    assert_eq!(ids(&unset, "Hello, World!"), ids(&lower, "Hello, World!"));
}

#[test]
fn tokenizer_json_wins_over_vocab_txt() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&asset("minilm"), tmp.path());
    // A cased tokenizer_config.json applies to vocab.txt only; tokenizer.json keeps its own
    // normalizer.
    std::fs::write(
        tmp.path().join("tokenizer_config.json"),
        r#"{"do_lower_case": false}"#,
    )
    .unwrap();
    let tok = load_tokenizer(tmp.path()).unwrap();
    assert_eq!(
        ids(&tok, "Hello, World!"),
        [101, 7592, 1010, 2088, 999, 102]
    );
}

#[test]
fn invalid_tokenizer_json_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tokenizer.json");
    std::fs::write(&path, r#"{"model": 3}"#).unwrap();
    let err = expect_err("bad tokenizer.json", || load_tokenizer(tmp.path()));
    assert!(
        matches!(&err, Error::Tokenizer { path: p, .. } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn vocab_without_special_tokens_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vocab.txt");
    std::fs::write(&path, "[PAD]\n[UNK]\nhello\nworld\n").unwrap();
    let err = expect_err("vocab lacking [CLS]", || load_tokenizer(tmp.path()));
    match &err {
        Error::Tokenizer { path: p, msg } => {
            assert_eq!(p, &path);
            assert!(msg.contains("[CLS]"), "{err}");
        }
        other => panic!("expected Error::Tokenizer, got {other:?}"),
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn sha256_of_files() {
    // `sha256sum assets/minilm/vocab.txt` (the bert-base-uncased vocabulary).
    assert_eq!(
        sha256_file(&asset("minilm").join("vocab.txt")).unwrap(),
        "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
    );
    // `sha256sum tests/fixtures/tiny_cls/pytorch_model.bin`.
    assert_eq!(
        sha256_file(&fixture("tiny_cls/pytorch_model.bin")).unwrap(),
        "237ed707cf15164dd3a84f8cdc146b1152345d407cac206cba20703455e95330"
    );
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(
        sha256_file(&write(tmp.path(), "empty", b"")).unwrap(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_file(&write(tmp.path(), "abc", b"abc")).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let missing = tmp.path().join("missing.bin");
    let err = expect_err("missing file", || {
        sha256_file(&missing).map_err(Error::from)
    });
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing.bin"), "{err}");
}
