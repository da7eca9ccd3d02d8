//! MLM masking: counts, determinism, 80/10/10 proportions, specials, smoothing.

mod common;

use common::{encoder, id};
use kd_core::rng::below_by_modulo;
use kd_data::masking::{unit_f64, MASK_RNG_TAG};
use kd_data::{mask_rng, MaskAction, MaskConfig, Masker, PackedSequence, TokenCounts};
use rand::RngCore;

fn masker(config: MaskConfig, counts: Option<&TokenCounts>) -> Masker {
    let enc = encoder();
    Masker::new(config, enc.specials(), enc.vocab_size(), counts).unwrap()
}

/// `[CLS]` + n tokens cycling over ordinary words + `[SEP]` + `pad` paddings.
fn seq(n: usize, pad: usize) -> Vec<u32> {
    let words = ["the", "cat", "sat", "on", "mat", "red", "blue", "dog"];
    let mut v = vec![id("[CLS]")];
    v.extend((0..n).map(|i| id(words[i % words.len()])));
    v.push(id("[SEP]"));
    v.extend(std::iter::repeat_n(id("[PAD]"), pad));
    v
}

/// Binomial 4-sigma check: |k - n p| <= 4 sqrt(n p (1 - p)).
fn within_4_sigma(k: usize, n: usize, p: f64) -> bool {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (k as f64 - mean).abs() <= 4.0 * sd
}

#[test]
fn exact_mask_count() {
    let m = masker(MaskConfig::default(), None);
    for (n, expected) in [
        (1, 1),
        (3, 1),
        (6, 1),
        (10, 2),
        (20, 3),
        (100, 15),
        (126, 19),
    ] {
        let out = m.mask(&seq(n, 5), 1, 0, n as u64);
        assert_eq!(out.positions.len(), expected, "n = {n}");
        assert_eq!(out.labels.len(), expected);
        assert_eq!(out.actions.len(), expected);
        assert!(out.positions.windows(2).all(|w| w[0] < w[1]), "sorted");
    }
    // no maskable token: nothing masked
    let only_specials = vec![id("[CLS]"), id("[UNK]"), id("[SEP]"), id("[PAD]")];
    assert!(m.mask(&only_specials, 1, 0, 0).positions.is_empty());
}

#[test]
fn labels_and_inputs_are_consistent() {
    let m = masker(MaskConfig::default(), None);
    for sid in 0..200u64 {
        let ids = seq(60, 3);
        let out = m.mask(&ids, 9, 1, sid);
        assert_eq!(out.input_ids.len(), ids.len());
        for (k, &p) in out.positions.iter().enumerate() {
            let p = p as usize;
            assert_eq!(out.labels[k], ids[p]);
            match out.actions[k] {
                MaskAction::Mask => assert_eq!(out.input_ids[p], id("[MASK]")),
                MaskAction::Keep => assert_eq!(out.input_ids[p], ids[p]),
                MaskAction::Random => assert!((out.input_ids[p] as usize) < common::VOCAB.len()),
            }
        }
        for (p, (&got, &orig)) in out.input_ids.iter().zip(&ids).enumerate() {
            if !out.positions.contains(&(p as u32)) {
                assert_eq!(got, orig);
            }
        }
    }
}

#[test]
fn deterministic_per_seed_epoch_and_id() {
    let m = masker(MaskConfig::default(), None);
    let ids = seq(100, 0);
    let a = m.mask(&ids, 42, 3, 7);
    assert_eq!(a, m.mask(&ids, 42, 3, 7));
    assert_ne!(a.positions, m.mask(&ids, 42, 4, 7).positions, "other epoch");
    assert_ne!(a.positions, m.mask(&ids, 42, 3, 8).positions, "other id");
    assert_ne!(a.positions, m.mask(&ids, 43, 3, 7).positions, "other seed");
}

#[test]
fn rng_derivation_is_pinned() {
    // Part of the cache contract: changing the derivation changes every mask.
    assert_eq!(MASK_RNG_TAG, b"kd-data/mlm-mask/v1\0");
    // SHA-256(tag || 1u64 LE || 2u64 LE || 3u64 LE), computed independently.
    let seed: [u8; 32] = mask_rng(1, 2, 3).get_seed();
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "36b7630f9f0e26223be465df323ca44d7e415c91bbf075f3e4e850003bc771ee"
    );
    let mut r = mask_rng(1, 2, 3);
    let first = r.next_u64();
    let mut again = mask_rng(1, 2, 3);
    assert_eq!(first, again.next_u64());
    assert_eq!(first, PINNED_FIRST_U64);
    let m = masker(MaskConfig::default(), None);
    let out = m.mask(&seq(40, 0), 1, 2, 3);
    assert_eq!(out.positions, PINNED_POSITIONS);
}

const PINNED_FIRST_U64: u64 = 10_721_387_330_369_097_162;
const PINNED_POSITIONS: [u32; 6] = [6, 7, 19, 26, 30, 39];

#[test]
fn special_tokens_never_masked() {
    let m = masker(
        MaskConfig {
            mask_prob: 1.0,
            ..MaskConfig::default()
        },
        None,
    );
    let mut ids = seq(30, 4);
    ids[5] = id("[UNK]");
    ids[9] = id("[MASK]");
    let specials = [
        id("[CLS]"),
        id("[SEP]"),
        id("[PAD]"),
        id("[UNK]"),
        id("[MASK]"),
    ];
    for sid in 0..300 {
        let out = m.mask(&ids, 0, 0, sid);
        assert_eq!(out.positions.len(), 28);
        for &p in &out.positions {
            assert!(!specials.contains(&ids[p as usize]));
        }
    }
}

#[test]
fn split_80_10_10_within_4_sigma() {
    let m = masker(MaskConfig::default(), None);
    let (mut mask, mut keep, mut random, mut total) = (0, 0, 0, 0);
    let mut random_same = 0;
    for sid in 0..4000u64 {
        let ids = seq(100, 0);
        let out = m.mask(&ids, 5, 0, sid);
        for (k, a) in out.actions.iter().enumerate() {
            total += 1;
            match a {
                MaskAction::Mask => mask += 1,
                MaskAction::Keep => keep += 1,
                MaskAction::Random => {
                    random += 1;
                    let p = out.positions[k] as usize;
                    random_same += usize::from(out.input_ids[p] == ids[p]);
                }
            }
        }
    }
    assert_eq!(total, 4000 * 15);
    assert!(within_4_sigma(mask, total, 0.8), "mask {mask}/{total}");
    assert!(within_4_sigma(keep, total, 0.1), "keep {keep}/{total}");
    assert!(
        within_4_sigma(random, total, 0.1),
        "random {random}/{total}"
    );
    // Random tokens are uniform over the whole vocabulary, the original included.
    let p_same = 1.0 / common::VOCAB.len() as f64;
    assert!(
        within_4_sigma(random_same, random, p_same),
        "{random_same}/{random}"
    );
}

#[test]
fn positions_uniform_without_smoothing() {
    let m = masker(MaskConfig::default(), None);
    let n = 20;
    let mut hits = vec![0usize; n + 2];
    let trials = 5000;
    for sid in 0..trials {
        for p in m.mask(&seq(n, 0), 3, 0, sid).positions {
            hits[p as usize] += 1;
        }
    }
    // 3 of 20 positions per sequence: each position with probability 3/20.
    for &h in &hits[1..=n] {
        assert!(within_4_sigma(h, trials as usize, 3.0 / 20.0), "{hits:?}");
    }
    assert_eq!(hits[0] + hits[n + 1], 0);
}

#[test]
fn smoothing_favours_rare_tokens() {
    let cat = id("cat");
    let the = id("the");
    let mut counts = TokenCounts::new(common::VOCAB.len());
    counts.add(&vec![the; 1000]).unwrap();
    counts.add(&[cat; 10]).unwrap();
    let cfg = MaskConfig {
        smoothing: Some(0.7),
        ..MaskConfig::default()
    };
    let m = masker(cfg, Some(&counts));
    // One pick among 1 rare and 5 frequent tokens: P(rare) = w_r / (w_r + 5 w_f),
    // w = count^-0.7 (weighted sampling without replacement, first draw).
    let ids = vec![id("[CLS]"), cat, the, the, the, the, the, id("[SEP]")];
    let w_r = 10f64.powf(-0.7);
    let w_f = 1000f64.powf(-0.7);
    let p_rare = w_r / (w_r + 5.0 * w_f);
    let trials = 4000;
    let mut rare = 0;
    for sid in 0..trials {
        let out = m.mask(&ids, 11, 0, sid);
        assert_eq!(out.positions.len(), 1);
        rare += usize::from(out.labels[0] == cat);
    }
    assert!(
        within_4_sigma(rare, trials as usize, p_rare),
        "{rare}/{trials} vs {p_rare}"
    );
    // Per-token rate ratio rare/frequent, measured against the uniform masker.
    let rate_ratio = (rare as f64) / ((trials as usize - rare) as f64 / 5.0);
    assert!(rate_ratio > 20.0, "smoothed ratio {rate_ratio}");
    let uniform = masker(MaskConfig::default(), None);
    let rare_u: usize = (0..trials)
        .map(|sid| usize::from(uniform.mask(&ids, 11, 0, sid).labels[0] == cat))
        .sum();
    assert!(
        within_4_sigma(rare_u, trials as usize, 1.0 / 6.0),
        "uniform {rare_u}"
    );
}

#[test]
fn token_counts_from_sequences_and_json() {
    let seqs = vec![
        PackedSequence {
            id: 0,
            doc: 0,
            input_ids: vec![1, 2, 2, 3],
        },
        PackedSequence {
            id: 1,
            doc: 0,
            input_ids: vec![2, 5],
        },
    ];
    let c = TokenCounts::from_sequences(&seqs, 8).unwrap();
    assert_eq!(c.counts, [0, 1, 3, 1, 0, 1, 0, 0]);
    assert_eq!(c.total, 6);
    let back = TokenCounts::from_json(&c.to_json().unwrap()).unwrap();
    assert_eq!(back, c);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("counts.json");
    c.save(&p).unwrap();
    assert_eq!(TokenCounts::load(&p).unwrap(), c);
    assert!(
        TokenCounts::from_sequences(&seqs, 4).is_err(),
        "id 5 outside vocab 4"
    );
    assert!(TokenCounts::from_json("{\"vocab_size\":2,\"total\":1,\"counts\":[1]}").is_err());
    let w = c.smoothing_weights(0.7);
    assert_eq!(w[0], 1.0);
    assert!((w[2] - 3f64.powf(-0.7)).abs() < 1e-12);
}

#[test]
fn config_errors() {
    let enc = encoder();
    let bad = MaskConfig {
        mask_frac: 0.9,
        ..MaskConfig::default()
    };
    assert!(Masker::new(bad, enc.specials(), enc.vocab_size(), None).is_err());
    let smooth = MaskConfig {
        smoothing: Some(0.7),
        ..MaskConfig::default()
    };
    assert!(Masker::new(smooth, enc.specials(), enc.vocab_size(), None).is_err());
    let c = TokenCounts::new(3);
    assert!(Masker::new(smooth, enc.specials(), enc.vocab_size(), Some(&c)).is_err());
}

#[test]
fn helpers_are_in_range() {
    let mut r = mask_rng(0, 0, 0);
    for _ in 0..10_000 {
        let u = unit_f64(&mut r);
        assert!(u > 0.0 && u < 1.0);
        assert!(below_by_modulo(&mut r, 7) < 7);
    }
}
