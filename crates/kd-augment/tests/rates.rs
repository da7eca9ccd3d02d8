//! The sampling rates of both families observed over many words, against binomial bounds.

mod common;

use common::assert_binomial;
use kd_augment::rng::copy_rng;
use kd_augment::tang::{plan_copy, TangSettings, WordAction, MASK};
use kd_augment::tinybert::{sample_picks, TinyBertText};
use kd_augment::words::split_words;

#[test]
fn tinybert_replaces_each_word_with_p_0_4_and_picks_candidates_uniformly() {
    let text: String = (0..50).map(|i| format!("w{i:02}x ")).collect();
    let words = split_words(&text);
    let cands: Vec<String> = ["alpha", "beta", "gamma"].map(String::from).to_vec();
    let slots: Vec<(usize, Vec<String>)> = (0..words.len()).map(|i| (i, cands.clone())).collect();
    let (mut replaced, mut draws, mut per_cand) = (0, 0, [0usize; 3]);
    for copy in 0..2000 {
        let mut rng = copy_rng(b"tinybert", 7, 0, copy);
        for pick in sample_picks(&slots, 0.4, &mut rng) {
            draws += 1;
            if let Some(c) = pick {
                replaced += 1;
                per_cand[c] += 1;
            }
        }
    }
    assert_binomial(replaced, draws, 0.4, "replacement rate");
    for (c, n) in per_cand.iter().enumerate() {
        assert_binomial(*n, replaced, 1.0 / 3.0, &format!("candidate {c}"));
    }
    // The same rate in rendered copies: every replaced word shows a candidate.
    let t = TinyBertText {
        text: text.clone(),
        words: words.clone(),
        slots,
    };
    let mut shown = 0;
    for copy in 0..400 {
        let out = t.augment(0.4, &mut copy_rng(b"tinybert", 8, 0, copy));
        shown += split_words(&out)
            .iter()
            .filter(|w| cands.iter().any(|c| c == w.of(&out)))
            .count();
    }
    assert_binomial(shown, 400 * words.len(), 0.4, "rendered replacement rate");
}

#[test]
fn tang_masks_and_swaps_with_p_0_1_and_samples_ngrams_with_p_0_25() {
    let s = TangSettings::default();
    let (mut mask, mut pos, mut words, mut ngram, mut copies) = (0, 0, 0, 0, 0);
    let mut lengths = [0usize; 6];
    for copy in 0..4000 {
        let plan = plan_copy(30, &s, &mut copy_rng(b"tang", 3, 1, copy));
        words += plan.actions.len();
        mask += plan
            .actions
            .iter()
            .filter(|a| **a == WordAction::Mask)
            .count();
        pos += plan
            .actions
            .iter()
            .filter(|a| **a == WordAction::Pos)
            .count();
        copies += 1;
        if plan.keep.len() < 30 {
            ngram += 1;
            lengths[plan.keep.len()] += 1;
            assert!(plan.keep.end <= 30 && (1..=5).contains(&plan.keep.len()));
        }
    }
    assert_binomial(mask, words, 0.1, "mask rate");
    assert_binomial(pos, words, 0.1, "POS replacement rate");
    assert_binomial(ngram, copies, 0.25, "n-gram rate");
    for (n, &count) in lengths.iter().enumerate().skip(1) {
        assert_binomial(count, ngram, 0.2, &format!("n-gram length {n}"));
    }
}

#[test]
fn tang_mask_rate_in_rendered_copies() {
    let lex = kd_augment::lexicon::Lexicon::load(&common::lexicon()).unwrap();
    let text: String = (0..40).map(|i| format!("zq{i:02}word ")).collect();
    let t = kd_augment::tang::TangText::new(&text, &lex);
    let s = TangSettings {
        ngram_prob: 0.0,
        ..TangSettings::default()
    };
    let mut masks = 0;
    for copy in 0..1000 {
        masks += t
            .augment(&lex, &s, &mut copy_rng(b"tang", 4, 0, copy))
            .matches(MASK)
            .count();
    }
    assert_binomial(masks, 40 * 1000, 0.1, "rendered mask rate");
}
