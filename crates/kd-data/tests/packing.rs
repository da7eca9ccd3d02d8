//! Packing: document boundaries, long paragraphs, drop rules, thread-count independence.

mod common;

use common::{encoder, id, words};
use kd_data::packing::{chunk_ends, pack_document, sequence_id, CutRule};
use kd_data::tokens::WordBoundaries;
use kd_data::{pack_corpus, Corpus, PackConfig, SpecialTokens};

fn specials() -> SpecialTokens {
    encoder().specials()
}

fn toks(n: usize, tok: u32) -> Vec<u32> {
    vec![tok; n]
}

#[test]
fn special_ids_are_looked_up_by_string() {
    let s = specials();
    assert_eq!(
        (s.cls, s.sep, s.mask, s.pad, s.unk),
        (
            id("[CLS]"),
            id("[SEP]"),
            id("[MASK]"),
            id("[PAD]"),
            id("[UNK]")
        )
    );
    assert_eq!(encoder().vocab_size(), common::VOCAB.len());
}

#[test]
fn whole_paragraphs_fill_sequences() {
    let s = specials();
    let cfg = PackConfig {
        max_len: 32,
        drop_max_len: 0,
        ..PackConfig::default()
    };
    let w = id("cat");
    // room = 30: 10 + 15 fit, 10 more would not; 20 + 10 = 30 fits exactly.
    let paras = vec![toks(10, w), toks(15, w), toks(20, w), toks(10, w)];
    let out = pack_document(3, &paras, &s, &WordBoundaries::default(), &cfg).unwrap();
    let lens: Vec<usize> = out.sequences.iter().map(|q| q.input_ids.len()).collect();
    assert_eq!(lens, [27, 32]);
    for q in &out.sequences {
        assert_eq!(q.input_ids[0], s.cls);
        assert_eq!(*q.input_ids.last().unwrap(), s.sep);
        assert_eq!(q.doc, 3);
    }
    assert_eq!(out.sequences[1].id, sequence_id(3, 1));
    assert_eq!(out.stats.tokens, 59);
    assert_eq!(out.stats.paragraphs, 4);
}

#[test]
fn long_paragraph_is_split_into_chunks() {
    let s = specials();
    let cfg = PackConfig {
        max_len: 16,
        drop_max_len: 0,
        ..PackConfig::default()
    };
    let long: Vec<u32> = (0..33).map(|i| 100 + i).collect();
    let out = pack_document(
        0,
        &[long.clone(), vec![7, 7]],
        &s,
        &WordBoundaries::default(),
        &cfg,
    )
    .unwrap();
    let bodies: Vec<Vec<u32>> = out
        .sequences
        .iter()
        .map(|q| q.input_ids[1..q.input_ids.len() - 1].to_vec())
        .collect();
    assert_eq!(bodies.len(), 3);
    assert_eq!(bodies[0], long[0..14]);
    assert_eq!(bodies[1], long[14..28]);
    // the 5-token tail is packed with the next paragraph
    let mut tail = long[28..].to_vec();
    tail.extend([7, 7]);
    assert_eq!(bodies[2], tail);
    assert!(out.sequences.iter().all(|q| q.input_ids.len() <= 16));
}

#[test]
fn drop_rules_short_and_unk() {
    let s = specials();
    let cfg = PackConfig {
        max_len: 14,
        ..PackConfig::default()
    };
    let w = id("dog");
    // 9 tokens + 2 specials = 11 -> dropped; 10 + 2 = 12 -> kept.
    let out = pack_document(0, &[toks(9, w)], &s, &WordBoundaries::default(), &cfg).unwrap();
    assert_eq!((out.stats.sequences, out.stats.dropped_short), (0, 1));
    let out = pack_document(0, &[toks(10, w)], &s, &WordBoundaries::default(), &cfg).unwrap();
    assert_eq!((out.stats.sequences, out.stats.dropped_short), (1, 0));
    // 12 tokens: 6 UNK of 14 (< 50%) kept; 7 UNK of 14 (= 50%) dropped.
    let mut six = toks(6, s.unk);
    six.extend(toks(6, w));
    let out = pack_document(0, &[six], &s, &WordBoundaries::default(), &cfg).unwrap();
    assert_eq!((out.stats.sequences, out.stats.dropped_unk), (1, 0));
    let mut seven = toks(7, s.unk);
    seven.extend(toks(5, w));
    let out = pack_document(0, &[seven], &s, &WordBoundaries::default(), &cfg).unwrap();
    assert_eq!((out.stats.sequences, out.stats.dropped_unk), (0, 1));
}

#[test]
fn ids_count_dropped_positions() {
    let s = specials();
    let cfg = PackConfig {
        max_len: 14,
        ..PackConfig::default()
    };
    let w = id("dog");
    let paras = vec![toks(12, w), toks(12, s.unk), toks(12, w)];
    let out = pack_document(5, &paras, &s, &WordBoundaries::default(), &cfg).unwrap();
    let ids: Vec<u64> = out.sequences.iter().map(|q| q.id).collect();
    assert_eq!(ids, [sequence_id(5, 0), sequence_id(5, 2)]);
    assert_eq!(out.stats.dropped_unk, 1);
}

fn sample_corpus() -> Corpus {
    let docs: Vec<Vec<String>> = (0..40)
        .map(|d| {
            (0..(d % 7 + 1))
                .map(|p| {
                    if (d + p) % 5 == 0 {
                        format!("{} zzz qqq", words(3 + (d * 13 + p * 7) % 150, d))
                    } else {
                        words(3 + (d * 13 + p * 7) % 150, d + p)
                    }
                })
                .collect()
        })
        .collect();
    Corpus::from_texts(&docs).unwrap()
}

#[test]
fn packing_never_crosses_documents() {
    let corpus = sample_corpus();
    let enc = encoder();
    let keep_all = PackConfig {
        max_len: 64,
        drop_max_len: 0,
        max_unk_ratio: 1.0,
        cut: CutRule::Exact,
    };
    let packed = pack_corpus(&corpus, &enc, &keep_all).unwrap();
    for doc in &corpus.documents {
        let paras: Vec<Vec<u32>> = doc
            .paragraphs
            .iter()
            .map(|p| enc.encode(&p.text).unwrap())
            .collect();
        // Paragraph boundaries (cumulative token offsets) of the document.
        let mut bounds = vec![0usize];
        for p in &paras {
            bounds.push(bounds.last().unwrap() + p.len());
        }
        let mut got = Vec::new();
        for (k, q) in packed
            .sequences
            .iter()
            .filter(|q| q.doc == doc.id)
            .enumerate()
        {
            assert_eq!(q.id, sequence_id(doc.id, k as u32));
            assert!(q.input_ids.len() <= 64);
            let body = &q.input_ids[1..q.input_ids.len() - 1];
            // A sequence starts on a paragraph boundary unless it continues a
            // paragraph longer than 62 tokens.
            let start = got.len();
            let inside_long = paras
                .iter()
                .zip(&bounds)
                .any(|(p, &b)| p.len() > 62 && start > b && start < b + p.len());
            assert!(
                bounds.contains(&start) || inside_long,
                "doc {} seq {k}",
                doc.id
            );
            got.extend_from_slice(body);
        }
        assert_eq!(got, paras.concat(), "doc {}", doc.id);
    }
    assert_eq!(packed.stats.docs, 40);
    assert_eq!(packed.stats.paragraphs, corpus.num_paragraphs());

    let packed = pack_corpus(&corpus, &enc, &PackConfig::default()).unwrap();
    let s = packed.stats;
    assert_eq!(s.sequences, packed.sequences.len());
    assert!(s.dropped_short > 0, "{s:?}");
    assert_eq!(
        s.tokens,
        packed
            .sequences
            .iter()
            .map(|q| q.input_ids.len())
            .sum::<usize>()
    );
    assert!(packed.sequences.iter().all(|q| q.input_ids.len() > 11));
    assert!(packed.sequences.windows(2).all(|w| w[0].id < w[1].id));
}

#[test]
fn unk_heavy_text_is_dropped_end_to_end() {
    let corpus = Corpus::from_texts(&[vec![
        "xx yy zz ww vv uu tt ss one two three four".to_string(),
        words(20, 0),
    ]])
    .unwrap();
    let cfg = PackConfig {
        max_len: 16,
        ..PackConfig::default()
    };
    let packed = pack_corpus(&corpus, &encoder(), &cfg).unwrap();
    // [12 tokens, 8 UNK] dropped for UNK; 20 words -> 14 + 6, the 6 too short.
    let s = packed.stats;
    assert_eq!(
        (s.dropped_unk, s.dropped_short, s.sequences),
        (1, 1, 1),
        "{s:?}"
    );
}

#[test]
fn same_output_on_one_and_two_threads() {
    let corpus = sample_corpus();
    let enc = encoder();
    let cfg = PackConfig::default();
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| pack_corpus(&corpus, &enc, &cfg).unwrap())
    };
    let one = run(1);
    let two = run(2);
    let four = run(4);
    assert!(!one.sequences.is_empty());
    assert_eq!(one, two);
    assert_eq!(one, four);
}

#[test]
fn bad_config_is_an_error() {
    let s = specials();
    let cfg = PackConfig {
        max_len: 2,
        ..PackConfig::default()
    };
    assert!(pack_document(0, &[vec![1]], &s, &WordBoundaries::default(), &cfg).is_err());
}

#[test]
fn tokenizer_truncation_is_ignored() {
    let mut tk = common::tokenizer();
    tk.with_truncation(Some(tokenizers::TruncationParams {
        max_length: 4,
        ..Default::default()
    }))
    .unwrap();
    let enc = kd_data::TextEncoder::new(&tk).unwrap();
    assert_eq!(enc.encode(&words(10, 0)).unwrap().len(), 10);
}

#[test]
fn long_paragraphs_cut_at_sentence_then_word_starts() {
    let enc = encoder();
    let b = enc.boundaries();
    // "run ##s" pairs must never be split; sentences end with ".".
    let text = "one runs two . three runs four five . six runs . seven eight runs nine ten .";
    let ids = enc.encode(text).unwrap();
    assert_eq!(ids.len(), 22);
    let dot = id(".");
    let ends = chunk_ends(&ids, 8, b, CutRule::Sentence);
    assert_eq!(ends, [5, 11, 15, 22]);
    assert_eq!(*ends.last().unwrap(), ids.len());
    let mut start = 0;
    for &e in &ends {
        assert!(e - start <= 8 && e > start);
        if e < ids.len() {
            assert_ne!(ids[e], id("##s"), "cut inside a word at {e}");
            assert_eq!(ids[e - 1], dot, "cut after a sentence end at {e}: {ends:?}");
        }
        start = e;
    }
    // Without boundaries: exact windows.
    assert_eq!(chunk_ends(&ids, 8, b, CutRule::Exact), [8, 16, 22]);
    // Word rule: the latest word start in each window of 7 (positions 7 and
    // 13 are "##s", so the cuts go one earlier).
    assert_eq!(chunk_ends(&ids, 7, b, CutRule::Exact), [7, 14, 21, 22]);
    assert_eq!(chunk_ends(&ids, 7, b, CutRule::Word), [6, 12, 19, 22]);
    // No sentence end in the window: fall back to a word start.
    let ids = enc
        .encode("one runs two runs three runs four runs five runs")
        .unwrap();
    for e in chunk_ends(&ids, 4, b, CutRule::Sentence) {
        assert!(e == ids.len() || ids[e] != id("##s"));
    }
    assert_eq!(b.cut_score(&ids, 0), 2);
    assert_eq!(b.cut_score(&ids, 2), 0, "before ##s");
    assert_eq!(b.cut_score(&ids, 3), 1);
}

#[test]
fn boundary_aware_packing_keeps_all_tokens() {
    let text = (0..30)
        .map(|i| format!("{} runs .", words(2 + i % 9, i)))
        .collect::<Vec<_>>()
        .join(" ");
    let corpus = Corpus::from_texts(&[vec![text.clone()]]).unwrap();
    let enc = encoder();
    let cfg = PackConfig {
        max_len: 32,
        drop_max_len: 0,
        ..PackConfig::default()
    };
    let packed = pack_corpus(&corpus, &enc, &cfg).unwrap();
    let body: Vec<u32> = packed
        .sequences
        .iter()
        .flat_map(|q| q.input_ids[1..q.input_ids.len() - 1].to_vec())
        .collect();
    assert_eq!(body, enc.encode(&text).unwrap());
    for q in &packed.sequences[..packed.sequences.len() - 1] {
        assert_eq!(
            q.input_ids[q.input_ids.len() - 2],
            id("."),
            "ends on a sentence"
        );
        assert!(q.input_ids.len() > 16);
    }
}
