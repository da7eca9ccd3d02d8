//! Checks on the real assets (State of the Union corpus, MiniLM tokenizer), found under
//! `KD_ASSETS` (default `assets/`); a missing asset fails the test unless `KD_SKIP_ASSETS=1`.

mod common;

use common::asset;
use std::path::PathBuf;

use kd_data::packing::CutRule;
use kd_data::{pack_corpus, Corpus, CorpusFormat, PackConfig, TextEncoder, TokenCounts};
use tokenizers::Tokenizer;

#[test]
fn sotu_packs_with_minilm_tokenizer() {
    let (Some(sotu), Some(tok)) = (asset("sotu"), asset("minilm/tokenizer.json")) else {
        return;
    };
    let tokenizer = Tokenizer::from_file(&tok).unwrap();
    let enc = TextEncoder::new(&tokenizer).unwrap();
    let s = enc.specials();
    assert_eq!(
        (s.pad, s.unk, s.cls, s.sep, s.mask),
        (0, 100, 101, 102, 103)
    );
    let corpus = Corpus::load(&[sotu], &CorpusFormat::Text).unwrap();
    assert_eq!(corpus.documents.len(), 233);
    let packed = pack_corpus(&corpus, &enc, &PackConfig::default()).unwrap();
    let st = packed.stats;
    println!("sotu: {st:?}");
    assert_eq!(st.docs, 233);
    assert!(st.sequences > 10_000, "{st:?}");
    for q in &packed.sequences {
        assert!(q.input_ids.len() > 11 && q.input_ids.len() <= 128);
        assert_eq!((q.input_ids[0], *q.input_ids.last().unwrap()), (101, 102));
        assert!(
            !q.input_ids[1..q.input_ids.len() - 1].contains(&0),
            "no padding inside"
        );
    }
    let counts = TokenCounts::from_sequences(&packed.sequences, enc.vocab_size()).unwrap();
    assert_eq!(counts.total as usize, st.tokens);
    assert_eq!(counts.get(101) as usize, st.sequences);
    let dot = tokenizer.token_to_id(".").unwrap();
    let ends_dot = packed
        .sequences
        .iter()
        .filter(|q| q.input_ids[q.input_ids.len() - 2] == dot)
        .count();
    assert!(
        ends_dot * 10 > st.sequences * 9,
        "{ends_dot} of {}",
        st.sequences
    );
    for cut in [CutRule::Word, CutRule::Exact] {
        let cfg = PackConfig {
            cut,
            ..PackConfig::default()
        };
        let other = pack_corpus(&corpus, &enc, &cfg).unwrap().stats;
        println!("sotu {cut:?}: {other:?}");
        assert!(other.sequences < st.sequences);
    }
}

#[test]
fn sotu_packing_independent_of_threads() {
    let (Some(sotu), Some(tok)) = (asset("sotu"), asset("minilm/tokenizer.json")) else {
        return;
    };
    let enc = TextEncoder::new(&Tokenizer::from_file(&tok).unwrap()).unwrap();
    let files: Vec<PathBuf> = kd_data::corpus::list_files(&[sotu], "txt").unwrap()[..12].to_vec();
    let corpus = Corpus::load(&files, &CorpusFormat::Text).unwrap();
    let run = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
            .install(|| pack_corpus(&corpus, &enc, &PackConfig::default()).unwrap())
    };
    assert_eq!(run(1), run(2));
}
