//! Attention targets stored as each layer's input hidden state (`attention-input`,
//! `kd-cache/3`): both backends round-trip them with the weights file, readers recompute the
//! teacher's scores from input and weights, a hidden target at the same precision is reused,
//! the weights file is checked (size, SHA-256, layers, shapes) on open, verify and merge.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use kd_cache::{
    attention_input, inspect, merge, verify, AttentionWeights, Backend, CacheReader, CacheWriter,
    LayerValues, LayerWeights, Manifest, MergeMode, Part, Precision, Record, TargetSpec,
    ATTENTION_WEIGHTS_FILE,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Mapped layers of the test teacher.
const INPUT_LAYERS: [u32; 2] = [1, 3];

fn spec(p: Precision) -> TargetSpec {
    TargetSpec::parse(
        &format!("mlm-topk:k=8,hidden:0@f16,attention-input:1,3@{p}"),
        LAYERS,
    )
    .unwrap()
}

/// Random query/key weights of `layers` at width `hidden`.
fn weights(seed: u64, layers: &[u32], hidden: usize) -> AttentionWeights {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draw =
        |len: usize, s: f32| -> Vec<f32> { (0..len).map(|_| rng.random_range(-s..s)).collect() };
    let layers = layers
        .iter()
        .map(|&l| {
            let w = LayerWeights {
                query_weight: draw(hidden * hidden, 0.4),
                query_bias: draw(hidden, 0.2),
                key_weight: draw(hidden * hidden, 0.4),
                key_bias: draw(hidden, 0.2),
            };
            (l, w)
        })
        .collect();
    AttentionWeights::new(hidden, layers).unwrap()
}

/// A hidden state `[n, HIDDEN]` with two outlier dimensions (as BERT's have).
fn input(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n * HIDDEN)
        .map(|i| rng.random_range(-1.0f32..1.0) * if i % HIDDEN == 5 { 15.0 } else { 1.0 })
        .collect()
}

/// Records of `spec` with the inputs it stores, and the f32 inputs (per record, per layer).
fn records(spec: &TargetSpec, count: usize) -> (Vec<Record>, Vec<Vec<Vec<f32>>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut recs = random_records(5, spec, count);
    let p = spec.attention_input.as_ref().unwrap().precision;
    let mut raw = Vec::new();
    for r in &mut recs {
        let n = r.len();
        let mut layers = Vec::new();
        for &layer in &INPUT_LAYERS {
            let x = match r.hidden_layer(layer - 1) {
                Some(h) if attention_input::reused(spec, layer) => h.decode(),
                _ => {
                    let x = input(&mut rng, n);
                    let values = attention_input::encode(&x, n, HIDDEN, HEADS, p).unwrap();
                    r.attention_input.push(LayerValues { layer, values });
                    x
                }
            };
            layers.push(x);
        }
        r.conform(spec).unwrap();
        raw.push(layers);
    }
    (recs, raw)
}

/// `[heads, n, n]` scores of layer `layer` by the definition, in f64.
fn reference(w: &AttentionWeights, layer: u32, x: &[f32], n: usize) -> Vec<f64> {
    let lw = w.layer(layer).unwrap();
    let h = HIDDEN;
    let proj = |m: &[f32], b: &[f32]| -> Vec<f64> {
        (0..n * h)
            .map(|i| {
                let (t, o) = (i / h, i % h);
                f64::from(b[o])
                    + (0..h)
                        .map(|c| f64::from(x[t * h + c]) * f64::from(m[o * h + c]))
                        .sum::<f64>()
            })
            .collect()
    };
    let q = proj(&lw.query_weight, &lw.query_bias);
    let k = proj(&lw.key_weight, &lw.key_bias);
    let d = h / HEADS;
    let mut out = Vec::with_capacity(HEADS * n * n);
    for hd in 0..HEADS {
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = (0..d)
                    .map(|c| q[i * h + hd * d + c] * k[j * h + hd * d + c])
                    .sum();
                out.push(dot / (d as f64).sqrt());
            }
        }
    }
    out
}

/// Writes `records` with `weights` to a new cache in `dir`.
fn write(dir: &Path, m: Manifest, records: &[Record], w: &AttentionWeights) -> Manifest {
    let mut writer = CacheWriter::create(dir, m, small_options()).unwrap();
    for r in records {
        writer.write(r).unwrap();
    }
    writer.set_attention_weights(w).unwrap();
    writer.finish().unwrap()
}

/// Largest |error| of a record's recomputed scores against the definition, over the largest
/// |score|.
fn score_error(rec: &Record, w: &AttentionWeights, inputs: &[Vec<f32>]) -> f64 {
    let n = rec.len();
    let mut worst = 0f64;
    for (&layer, x) in INPUT_LAYERS.iter().zip(inputs) {
        let want = reference(w, layer, x, n);
        let got = rec.attention_scores(layer, HIDDEN, HEADS).unwrap().unwrap();
        let top = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
        worst = worst.max(err / top);
    }
    worst
}

#[test]
fn both_backends_round_trip_inputs_and_give_the_teachers_scores() {
    let w = weights(3, &INPUT_LAYERS, HIDDEN);
    for (p, tol) in [
        (Precision::F32, 1e-5),
        (Precision::F16, 2e-3),
        // One scale per token at this width (16 values < 64), set by the outlier dimension.
        (Precision::Int8, 6e-2),
    ] {
        let spec = spec(p);
        let (mut recs, raw) = records(&spec, 9);
        for backend in [Backend::Parquet, Backend::Mmap] {
            let dir = tempfile::tempdir().unwrap();
            let m = write(dir.path(), manifest(&spec, backend), &recs, &w);
            assert_eq!(m.schema_version, "kd-cache/3");
            let side = m.attention_weights.clone().unwrap();
            assert_eq!(side.file, ATTENTION_WEIGHTS_FILE);
            let bytes = std::fs::read(dir.path().join(ATTENTION_WEIGHTS_FILE)).unwrap();
            assert_eq!(bytes.len() as u64, side.bytes);
            assert_eq!(kd_core::fs::sha256_hex(&bytes), side.sha256);
            let report = verify(dir.path()).unwrap();
            assert!(report.attention_weights_checked);
            assert!(report.to_string().contains("attention weights checked"));
            let reader = CacheReader::open(dir.path()).unwrap();
            assert_eq!(reader.attention_weights().map(|a| &**a), Some(&w));
            let got: Vec<Record> = reader.iter().map(|r| r.unwrap()).collect();
            for r in &mut recs {
                r.attention_weights = Some(Arc::new(w.clone()));
            }
            assert_eq!(got, recs, "{p} {backend}");
            assert_eq!(reader.get(4).unwrap(), recs[4]);
            for (rec, inputs) in got.iter().zip(&raw) {
                let err = score_error(rec, &w, inputs);
                assert!(err <= tol, "{p} {backend}: {err}");
                // Layer 2 is stored in no form.
                assert!(rec.attention_scores(2, HIDDEN, HEADS).unwrap().is_none());
            }
            let text = inspect(dir.path()).unwrap().to_string();
            assert!(
                text.contains("attention_input_l3") && text.contains(ATTENTION_WEIGHTS_FILE),
                "{text}"
            );
            for r in &mut recs {
                r.attention_weights = None;
            }
        }
    }
}

#[test]
fn int8_inputs_have_a_scale_per_block_of_64_values() {
    // Blocks of whole heads holding at least 64 values.
    for (hidden, heads, block) in [(768, 12, 64), (384, 12, 64), (312, 12, 78), (16, 2, 16)] {
        assert_eq!(attention_input::int8_block(hidden, heads).unwrap(), block);
    }
    // A MiniLM-shaped teacher (width 256, 8 heads of 32): four blocks of 64 per token.
    let (h, heads, n) = (256, 8, 5);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x: Vec<f32> = (0..n * h)
        .map(|i| rng.random_range(-1.0f32..1.0) * if i % h == 5 { 15.0 } else { 1.0 })
        .collect();
    let q = attention_input::encode(&x, n, h, heads, Precision::Int8).unwrap();
    assert_eq!((q.rows(), q.cols()), (n * 4, 64));
    assert_eq!(attention_input::width(&q, n).unwrap(), h);
    // The outlier dimension (5, in block 0) sets the scale of its block only.
    let per_token = kd_cache::Quantized::encode(&x, h, Precision::Int8).unwrap();
    let err = |v: &kd_cache::Quantized| -> f32 {
        v.decode()
            .iter()
            .zip(&x)
            .enumerate()
            .filter(|(i, _)| i % h >= 64)
            .map(|(_, (a, b))| (a - b).abs())
            .fold(0.0, f32::max)
    };
    assert!(
        err(&q) * 5.0 < err(&per_token),
        "{} {}",
        err(&q),
        err(&per_token)
    );
    let f16 = attention_input::encode(&x, n, h, heads, Precision::F16).unwrap();
    assert_eq!((f16.rows(), f16.cols()), (n, h));
    let e = attention_input::encode(&x, 4, h, heads, Precision::F16).unwrap_err();
    assert!(e.to_string().contains("expected 4 x 256"), "{e}");
}

#[test]
fn a_hidden_target_at_the_same_precision_is_reused() {
    let w = weights(3, &INPUT_LAYERS, HIDDEN);
    // Hidden 0 at f16 serves layer 1; layer 3's input (hidden 2) is stored.
    let f16 = spec(Precision::F16);
    assert_eq!(attention_input::stored_layers(&f16), vec![3]);
    // At int8 the hidden target's per-token scales are coarser: both are stored.
    let int8 = TargetSpec::parse("hidden:0@int8,attention-input:1,3@int8", LAYERS).unwrap();
    assert_eq!(attention_input::stored_layers(&int8), vec![1, 3]);
    let other = TargetSpec::parse("hidden:0@f32,attention-input:1,3@f16", LAYERS).unwrap();
    assert_eq!(attention_input::stored_layers(&other), vec![1, 3]);

    let (recs, raw) = records(&f16, 6);
    assert!(recs.iter().all(|r| r.attention_input.len() == 1));
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), manifest(&f16, Backend::Parquet), &recs, &w);
    let reader = CacheReader::open(dir.path()).unwrap();
    for (rec, inputs) in reader.iter().map(|r| r.unwrap()).zip(&raw) {
        assert_eq!(rec.attention_input_layer(1), rec.hidden_layer(0));
        assert!(score_error(&rec, &w, inputs) <= 2e-3);
    }
    // A record that stores the reused layer again is refused.
    let mut twice = recs[0].clone();
    let x = twice.hidden_layer(0).unwrap().clone();
    twice.attention_input.insert(
        0,
        LayerValues {
            layer: 1,
            values: x,
        },
    );
    let e = twice.validate(&f16).unwrap_err().to_string();
    assert!(
        e.contains("attention_input layers [1, 3] differ from the cache's [3]"),
        "{e}"
    );
}

/// A finished cache of `spec` at f16 in a temporary folder, with its weights.
fn cache(backend: Backend) -> (tempfile::TempDir, AttentionWeights) {
    let w = weights(3, &INPUT_LAYERS, HIDDEN);
    let spec = spec(Precision::Int8);
    let (recs, _) = records(&spec, 5);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), manifest(&spec, backend), &recs, &w);
    (dir, w)
}

#[test]
fn the_weights_file_is_checked_on_open_and_verify() {
    let (dir, _) = cache(Backend::Mmap);
    let path = dir.path().join(ATTENTION_WEIGHTS_FILE);
    let good = std::fs::read(&path).unwrap();
    let expect = |what: &str| {
        for e in [
            CacheReader::open(dir.path()).unwrap_err().to_string(),
            verify(dir.path()).unwrap_err().to_string(),
        ] {
            assert!(
                e.contains(ATTENTION_WEIGHTS_FILE) && e.contains(what),
                "{e}"
            );
        }
    };
    // One flipped byte in the tensor data.
    let mut bad = good.clone();
    let last = bad.len() - 3;
    bad[last] ^= 0x10;
    std::fs::write(&path, &bad).unwrap();
    expect("sha256 differs");
    std::fs::write(&path, &good[..good.len() - 4]).unwrap();
    expect("bytes, manifest.json says");
    std::fs::remove_file(&path).unwrap();
    expect("missing");

    // Weights of other layers or another width, with a manifest that names them correctly.
    let mut m = Manifest::load(dir.path()).unwrap();
    for (w, what) in [
        (
            weights(4, &[1, 2], HIDDEN),
            "which is not a query/key tensor of the cache's layers [1, 3]",
        ),
        (weights(4, &[1], HIDDEN), "has no `layer.3.query.weight`"),
        (weights(4, &[1, 3], 8), "expected F32 [16, 16]"),
    ] {
        m.attention_weights = Some(attention_input::write(dir.path(), &w).unwrap());
        m.save(dir.path()).unwrap();
        expect(what);
    }
    // A manifest that names no weights file for its attention_input target.
    m.attention_weights = None;
    m.save(dir.path()).unwrap();
    let e = CacheReader::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("no attention_weights file"), "{e}");
}

#[test]
fn writers_and_manifests_refuse_what_does_not_fit() {
    let spec = spec(Precision::F16);
    let (recs, _) = records(&spec, 2);
    let dir = tempfile::tempdir().unwrap();
    let mut w = CacheWriter::create(
        dir.path(),
        manifest(&spec, Backend::Parquet),
        small_options(),
    )
    .unwrap();
    w.write(&recs[0]).unwrap();
    let e = w
        .set_attention_weights(&weights(1, &[1, 2], HIDDEN))
        .unwrap_err();
    assert!(e.to_string().contains("layers [1, 2]"), "{e}");
    let e = w
        .set_attention_weights(&weights(1, &[1, 3], 8))
        .unwrap_err();
    assert!(e.to_string().contains("hidden_size is 16"), "{e}");
    let e = w.finish().unwrap_err().to_string();
    assert!(e.contains("needs its attention weights"), "{e}");
    assert!(!Manifest::path(dir.path()).exists());

    // Versions: only kd-cache/3 holds the target; older caches are written as before.
    assert_eq!(
        Manifest::new(
            TargetSpec::parse("attention-qk:1", LAYERS).unwrap(),
            Backend::Mmap
        )
        .schema_version,
        "kd-cache/2"
    );
    let mut m = manifest(&spec, Backend::Mmap);
    m.schema_version = "kd-cache/2".into();
    let e = m.validate().unwrap_err().to_string();
    assert!(e.contains("need kd-cache/3"), "{e}");

    // An input of the wrong width passes the writer's shape check but not verify.
    let mut narrow = recs[1].clone();
    let n = narrow.len();
    narrow.attention_input[0].values =
        attention_input::encode(&vec![0.5; n * 8], n, 8, HEADS, Precision::F16).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        manifest(&spec, Backend::Mmap),
        &[narrow],
        &weights(3, &INPUT_LAYERS, HIDDEN),
    );
    let e = verify(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("attention_input layer 3 holds 8 values per token, expected hidden_size = 16"),
        "{e}"
    );
    let rec = CacheReader::open(dir.path()).unwrap().get(0).unwrap();
    let e = rec
        .attention_scores(3, HIDDEN, HEADS)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("attention_input layer 3") && e.contains("8 values"),
        "{e}"
    );
}

#[test]
fn parts_merge_with_one_weights_file_and_must_agree_on_it() {
    let spec = spec(Precision::Int8);
    let (recs, _) = records(&spec, 8);
    let w = weights(3, &INPUT_LAYERS, HIDDEN);
    let root = tempfile::tempdir().unwrap();
    let write_part = |name: &str, i: u32, w: &AttentionWeights| {
        let dir = root.path().join(name);
        let mut m = manifest(&spec, Backend::Parquet);
        m.part = Some(Part { index: i, count: 2 });
        write(&dir, m, &recs[i as usize * 4..(i as usize + 1) * 4], w);
        dir
    };
    let parts = vec![write_part("b", 1, &w), write_part("a", 0, &w)];
    let out = root.path().join("merged");
    let m = merge(&parts, &out, MergeMode::Copy).unwrap();
    assert_eq!(m.schema_version, "kd-cache/3");
    assert!(verify(&out).unwrap().attention_weights_checked);
    let reader = CacheReader::open(&out).unwrap();
    let got: Vec<Record> = reader.iter().map(|r| r.unwrap()).collect();
    assert_eq!(got.len(), 8);
    for (g, r) in got.iter().zip(&recs) {
        assert_eq!(g.attention_input, r.attention_input);
        assert_eq!(g.attention_weights.as_deref(), Some(&w));
    }

    // Parts with other weights are refused, naming the field.
    let other = vec![
        write_part("c", 0, &w),
        write_part("d", 1, &weights(9, &INPUT_LAYERS, HIDDEN)),
    ];
    let e = merge(&other, &root.path().join("m2"), MergeMode::Copy)
        .unwrap_err()
        .to_string();
    assert!(e.contains("attention_weights"), "{e}");
    // A part whose weights file is gone is refused before anything is placed.
    let gone = vec![write_part("e", 0, &w), write_part("f", 1, &w)];
    std::fs::remove_file(gone[1].join(ATTENTION_WEIGHTS_FILE)).unwrap();
    let e = merge(&gone, &root.path().join("m3"), MergeMode::Move)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(ATTENTION_WEIGHTS_FILE) && e.contains("missing"),
        "{e}"
    );
    assert!(gone[0].join(ATTENTION_WEIGHTS_FILE).exists());
}

#[test]
fn the_target_string_and_manifest_round_trip() {
    let s = TargetSpec::parse("hidden:0,attention-input:2,last@int8", 6).unwrap();
    let a = s.attention_input.clone().unwrap();
    assert_eq!((a.layers, a.precision), (vec![2, 6], Precision::Int8));
    assert_eq!(s.to_string(), "hidden:0@f16,attention-input:2,6@int8");
    assert_eq!(TargetSpec::parse(&s.to_string(), 6).unwrap(), s);
    // Manifests without the target do not mention it.
    let m = manifest(
        &TargetSpec::parse("attention-qk:1", LAYERS).unwrap(),
        Backend::Mmap,
    );
    let text = m.to_json().unwrap();
    assert!(!text.contains("attention_input") && !text.contains("attention_weights"));
}

#[test]
fn input_layers_serve_attention_needs_and_missing_ones_join_the_input_form() {
    let m = manifest(&spec(Precision::Int8), Backend::Mmap);
    let need = |t: &str| kd_cache::Expectation::new(TargetSpec::parse(t, LAYERS).unwrap());
    m.check_compatible(&need("attention:1,3")).unwrap();
    let e = m
        .check_compatible(&need("attention:2,3"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no attention for layer 2 (maps of none, query/key of none, inputs of 1, 3)"),
        "{e}"
    );
    assert!(
        e.contains("--targets mlm-topk:k=8,t=1@f16,hidden:0@f16,attention-input:1,2,3@int8"),
        "{e}"
    );
}
