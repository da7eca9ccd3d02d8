//! Attention as query/key projections on the real MiniLM teacher: the scores recomputed from
//! the cached f32 Q/K equal the teacher's own scores (its attention maps, cached beside them
//! in the same run) to float rounding; f16 and int8 Q/K stay within the error their storage
//! allows, bounded entry by entry from the f32 projections and the stored int8 scales; both
//! backends write the same records.

mod common;

use candle_core::Device;
use common::*;
use kd_cache::{qk, CacheReader, Precision, Quantized, Record};
use kd_precompute::run_precompute;
use std::path::Path;

const LAYERS: [u32; 3] = [2, 4, 6];
/// MiniLM: width 384, 12 heads of 32.
const HIDDEN: usize = 384;
const HEADS: usize = 12;
const D: usize = HIDDEN / HEADS;

fn precompute(corpus: &Path, out: &Path, targets: &str, backend: &str) -> Vec<Record> {
    let mut cfg = small_run(&asset("minilm"), corpus, out, targets, 6);
    cfg.backend = backend.parse().unwrap();
    run_precompute(&cfg, &Device::Cpu).expect("precompute");
    let reader = CacheReader::open(out).expect("open");
    assert_eq!(reader.manifest().schema_version, "kd-cache/2");
    reader.iter().map(|r| r.expect("record")).collect()
}

/// Per-entry bound of `|s' - s|` for the score of head `h`, query `i`, key `j` from stored
/// Q/K values whose elements are within `delta` of the exact ones `qk` (`[n, 2H]` rows).
fn bound(qk: &[f32], delta: &[f64], h: usize, i: usize, j: usize) -> f64 {
    let w = 2 * HIDDEN;
    let mut b = 0f64;
    for x in 0..D {
        let (qi, kj) = (i * w + h * D + x, j * w + HIDDEN + h * D + x);
        let (a, c) = (f64::from(qk[qi]).abs(), f64::from(qk[kj]).abs());
        b += delta[qi] * c + a * delta[kj] + delta[qi] * delta[kj];
    }
    b / (D as f64).sqrt()
}

/// The storage error bound of each element of `stored` (f16: relative; int8: half its row's
/// scale), indexed like the decoded tensor.
fn element_bounds(stored: &Quantized, exact: &[f32]) -> Vec<f64> {
    match stored.precision() {
        Precision::Int8 => (0..exact.len())
            .map(|e| f64::from(stored.scales()[e / stored.cols()]) / 2.0 * (1.0 + 1e-6))
            .collect(),
        Precision::F16 => exact
            .iter()
            .map(|x| f64::from(x.abs()) * 2f64.powi(-11) + 2f64.powi(-25))
            .collect(),
        p => panic!("no bound for {p}"),
    }
}

#[test]
fn minilm_scores_from_cached_qk_equal_the_teachers_own() {
    let tmp = speech_corpus(2);
    let corpus = tmp.path().join("corpus");
    let exact = precompute(
        &corpus,
        &tmp.path().join("f32"),
        "attention:2,4,6@f32,attention-qk:2,4,6@f32",
        "mmap",
    );
    assert!(exact.iter().any(|r| r.len() < 64), "no padded record");
    let mut worst = 0f64;
    for r in &exact {
        let n = r.len();
        for &layer in &LAYERS {
            let map = r.attention_layer(layer).unwrap().decode();
            let from_qk =
                qk::scores(r.attention_qk_layer(layer).unwrap(), n, HIDDEN, HEADS).unwrap();
            assert_eq!(map.len(), HEADS * n * n);
            for (a, b) in from_qk.iter().zip(&map) {
                let err = f64::from((a - b).abs());
                assert!(
                    err <= 1e-5 * (1.0 + f64::from(b.abs())),
                    "layer {layer}: {a} vs {b}"
                );
                worst = worst.max(err);
            }
        }
    }
    println!("f32 Q/K: max |score error| {worst:.2e}");

    for (p, backend) in [
        (Precision::F16, "parquet"),
        (Precision::Int8, "mmap"),
        (Precision::Int8, "parquet"),
    ] {
        let out = tmp.path().join(format!("{p}-{backend}"));
        let stored = precompute(&corpus, &out, &format!("attention-qk:2,4,6@{p}"), backend);
        assert_eq!(stored.len(), exact.len());
        let (mut worst, mut ratio) = (0f64, 0f64);
        for (r, e) in stored.iter().zip(&exact) {
            assert_eq!((r.seq_id, &r.input_ids), (e.seq_id, &e.input_ids));
            let n = r.len();
            for &layer in &LAYERS {
                let s = r.attention_qk_layer(layer).unwrap();
                assert_eq!(s.precision(), p);
                if p == Precision::Int8 {
                    // One scale per (token, q|k, head).
                    assert_eq!((s.rows(), s.cols()), (n * 2 * HEADS, D));
                }
                let exact_qk = e.attention_qk_layer(layer).unwrap().decode();
                let db = element_bounds(s, &exact_qk);
                let map = e.attention_layer(layer).unwrap().decode();
                let got = r.attention_scores(layer, HIDDEN, HEADS).unwrap().unwrap();
                for h in 0..HEADS {
                    for i in 0..n {
                        for j in 0..n {
                            let at = (h * n + i) * n + j;
                            let err = f64::from((got[at] - map[at]).abs());
                            let b = bound(&exact_qk, &db, h, i, j)
                                + 1e-5 * (1.0 + f64::from(map[at].abs()));
                            assert!(err <= b, "{p} layer {layer} ({h},{i},{j}): {err} > {b}");
                            worst = worst.max(err);
                            ratio = ratio.max(err / b);
                        }
                    }
                }
            }
        }
        println!(
            "{p} Q/K ({backend}): max |score error| {worst:.3e}, at most {ratio:.2} of its bound"
        );
    }
}
