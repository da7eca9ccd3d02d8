//! Attention as each mapped layer's input hidden state on the real MiniLM teacher: the scores
//! recomputed from the cached f32 inputs and the cache's query/key weights equal the teacher's
//! own scores (its maps, cached beside them in the same run) to float rounding; f16 and int8
//! inputs stay within the error their storage allows, bounded entry by entry through the
//! weights; a hidden target at the same precision is reused; both backends write the same
//! records and one weights file.

mod common;

use candle_core::Device;
use common::*;
use kd_cache::{AttentionWeights, CacheReader, Precision, Quantized, Record};
use kd_precompute::run_precompute;
use std::path::Path;
use std::sync::Arc;

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
    assert_eq!(reader.manifest().schema_version, "kd-cache/3");
    assert!(
        kd_cache::verify(out)
            .expect("verify")
            .attention_weights_checked
    );
    reader.iter().map(|r| r.expect("record")).collect()
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

/// Bounds `[n, 2H]` of the query/key elements of inputs within `dx` of the exact ones:
/// `sum_c |W[o, c]| dx[t, c]`.
fn projection_bounds(w: &AttentionWeights, layer: u32, dx: &[f64], n: usize) -> Vec<f64> {
    let lw = w.layer(layer).unwrap();
    let mut out = vec![0f64; n * 2 * HIDDEN];
    for t in 0..n {
        for o in 0..HIDDEN {
            for (side, m) in [(0, &lw.query_weight), (1, &lw.key_weight)] {
                let row = &m[o * HIDDEN..(o + 1) * HIDDEN];
                out[t * 2 * HIDDEN + side * HIDDEN + o] = row
                    .iter()
                    .zip(&dx[t * HIDDEN..(t + 1) * HIDDEN])
                    .map(|(a, b)| f64::from(a.abs()) * b)
                    .sum();
            }
        }
    }
    out
}

/// Per-entry bound of `|s' - s|` for head `h`, query `i`, key `j` from Q/K elements within
/// `delta` of the exact ones `qk` (`[n, 2H]` rows).
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

#[test]
fn minilm_scores_from_cached_inputs_equal_the_teachers_own() {
    let tmp = speech_corpus(2);
    let corpus = tmp.path().join("corpus");
    let exact = precompute(
        &corpus,
        &tmp.path().join("f32"),
        "attention:2,4,6@f32,attention-input:2,4,6@f32",
        "mmap",
    );
    assert!(exact.iter().any(|r| r.len() < 64), "no padded record");
    let weights: Arc<AttentionWeights> = exact[0].attention_weights.clone().unwrap();
    assert_eq!(weights.layers(), LAYERS);
    let mut worst = 0f64;
    for r in &exact {
        let n = r.len();
        for &layer in &LAYERS {
            let x = r.attention_input_layer(layer).unwrap();
            assert_eq!((x.rows(), x.cols()), (n, HIDDEN));
            let map = r.attention_layer(layer).unwrap().decode();
            let from_input =
                kd_cache::attention_input::scores(x, n, layer, &weights, HEADS).unwrap();
            assert_eq!(map.len(), HEADS * n * n);
            for (a, b) in from_input.iter().zip(&map) {
                let err = f64::from((a - b).abs());
                assert!(
                    err <= 2e-5 * (1.0 + f64::from(b.abs())),
                    "layer {layer}: {a} vs {b}"
                );
                worst = worst.max(err);
            }
        }
    }
    println!("f32 inputs: max |score error| {worst:.2e}");

    for (p, targets, backend) in [
        // Hidden 1 and 3 at f16 serve layers 2 and 4: only layer 6's input is stored.
        (
            Precision::F16,
            "hidden:1,3@f16,attention-input:2,4,6@f16",
            "parquet",
        ),
        (Precision::Int8, "attention-input:2,4,6@int8", "mmap"),
        (Precision::Int8, "attention-input:2,4,6@int8", "parquet"),
    ] {
        let out = tmp.path().join(format!("{p}-{backend}"));
        let stored = precompute(&corpus, &out, targets, backend);
        assert_eq!(stored.len(), exact.len());
        let file = std::fs::read(out.join(kd_cache::ATTENTION_WEIGHTS_FILE)).unwrap();
        let f32_file = std::fs::read(
            tmp.path()
                .join("f32")
                .join(kd_cache::ATTENTION_WEIGHTS_FILE),
        );
        assert_eq!(
            file,
            f32_file.unwrap(),
            "one weights file whatever the precision"
        );
        let (mut worst, mut ratio) = (0f64, 0f64);
        for (r, e) in stored.iter().zip(&exact) {
            assert_eq!((r.seq_id, &r.input_ids), (e.seq_id, &e.input_ids));
            let n = r.len();
            let stored_layers: Vec<u32> = r.attention_input.iter().map(|l| l.layer).collect();
            match p {
                Precision::F16 => assert_eq!(stored_layers, [6]),
                _ => assert_eq!(stored_layers, LAYERS),
            }
            for &layer in &LAYERS {
                let s = r.attention_input_layer(layer).unwrap();
                assert_eq!(s.precision(), p);
                if p == Precision::Int8 {
                    // One scale per (token, block of 64 values: two heads).
                    assert_eq!((s.rows(), s.cols()), (n * HEADS / 2, 2 * D));
                }
                let exact_x = e.attention_input_layer(layer).unwrap().decode();
                let dq = projection_bounds(&weights, layer, &element_bounds(s, &exact_x), n);
                let exact_qk = weights.project(layer, &exact_x, n).unwrap();
                let map = e.attention_layer(layer).unwrap().decode();
                let got = r.attention_scores(layer, HIDDEN, HEADS).unwrap().unwrap();
                for h in 0..HEADS {
                    for i in 0..n {
                        for j in 0..n {
                            let at = (h * n + i) * n + j;
                            let err = f64::from((got[at] - map[at]).abs());
                            let b = bound(&exact_qk, &dq, h, i, j)
                                + 2e-5 * (1.0 + f64::from(map[at].abs()));
                            assert!(err <= b, "{p} layer {layer} ({h},{i},{j}): {err} > {b}");
                            worst = worst.max(err);
                            ratio = ratio.max(err / b);
                        }
                    }
                }
            }
        }
        println!(
            "{p} inputs ({backend}): max |score error| {worst:.3e}, at most {ratio:.2} of its bound"
        );
    }
}
