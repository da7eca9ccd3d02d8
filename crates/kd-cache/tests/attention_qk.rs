//! Attention targets stored as query/key projections (`attention-qk`, `kd-cache/2`): both
//! backends round-trip them, readers recompute the scores from them, the manifest version
//! follows the targets, and widths or head splits that do not fit the teacher are errors.

mod common;

use common::*;
use kd_cache::{
    inspect, qk, verify, Backend, CacheReader, Expectation, LayerValues, Manifest, Precision,
    Record, TargetSpec,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Mapped layers of the test teacher.
const QK_LAYERS: [u32; 2] = [1, 3];

fn spec(p: Precision) -> TargetSpec {
    TargetSpec::parse(
        &format!("mlm-topk:k=8,hidden:0@f16,attention-qk:1,3@{p}"),
        LAYERS,
    )
    .unwrap()
}

/// Random query/key projections `[n, HIDDEN]` per layer, heads of different magnitudes (as
/// real teachers have).
fn projections(rng: &mut ChaCha8Rng, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut draw = || -> Vec<f32> {
        (0..n * HIDDEN)
            .map(|i| rng.random_range(-2.0f32..2.0) * if i % HIDDEN < 8 { 1.0 } else { 6.0 })
            .collect()
    };
    (draw(), draw())
}

/// The f32 query and key projections of one layer.
type Projections = (Vec<f32>, Vec<f32>);

/// Records with Q/K at `p`, and the f32 projections (per record, per layer) they were made from.
fn records(p: Precision, count: usize) -> (Vec<Record>, Vec<Vec<Projections>>) {
    let spec = spec(p);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut recs = random_records(5, &spec, count);
    let mut raw = Vec::new();
    for r in &mut recs {
        let n = r.len();
        let mut layers = Vec::new();
        for &layer in &QK_LAYERS {
            let (q, k) = projections(&mut rng, n);
            let values = qk::encode(&q, &k, n, HIDDEN, HEADS, p).unwrap();
            r.attention_qk.push(LayerValues { layer, values });
            layers.push((q, k));
        }
        r.conform(&spec).unwrap();
        raw.push(layers);
    }
    (recs, raw)
}

/// `[heads, n, n]` scores by the definition, in f64.
fn reference(q: &[f32], k: &[f32], n: usize) -> Vec<f64> {
    let d = HIDDEN / HEADS;
    let mut out = Vec::with_capacity(HEADS * n * n);
    for h in 0..HEADS {
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = (0..d)
                    .map(|x| {
                        f64::from(q[i * HIDDEN + h * d + x]) * f64::from(k[j * HIDDEN + h * d + x])
                    })
                    .sum();
                out.push(dot / (d as f64).sqrt());
            }
        }
    }
    out
}

#[test]
fn both_backends_round_trip_qk_and_give_the_teachers_scores() {
    // Largest |error| of a score, relative to the largest |score| of the record.
    for (p, tol) in [
        (Precision::F32, 1e-6),
        (Precision::F16, 2e-3),
        (Precision::Int8, 3e-2),
    ] {
        let (recs, raw) = records(p, 9);
        for backend in [Backend::Parquet, Backend::Mmap] {
            let dir = tempfile::tempdir().unwrap();
            let m = write_cache(
                dir.path(),
                manifest(&spec(p), backend),
                &recs,
                small_options(),
            );
            assert_eq!(m.schema_version, "kd-cache/2");
            let text = std::fs::read_to_string(Manifest::path(dir.path())).unwrap();
            assert!(text.contains("\"attention_qk\""), "{text}");
            verify(dir.path()).unwrap();
            let reader = CacheReader::open(dir.path()).unwrap();
            let got: Vec<Record> = reader.iter().map(|r| r.unwrap()).collect();
            assert_eq!(got, recs, "{p} {backend}");
            for (rec, layers) in got.iter().zip(&raw) {
                let n = rec.len();
                for (&layer, (q, k)) in QK_LAYERS.iter().zip(layers) {
                    let want = reference(q, k, n);
                    let scores = rec.attention_scores(layer, HIDDEN, HEADS).unwrap().unwrap();
                    let top = want.iter().fold(0f64, |m, v| m.max(v.abs()));
                    let err = scores
                        .iter()
                        .zip(&want)
                        .fold(0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
                    assert!(err <= tol * top, "{p} {backend}: {err} of {top}");
                }
                assert!(rec.attention_scores(2, HIDDEN, HEADS).unwrap().is_none());
            }
            let report = inspect(dir.path()).unwrap().to_string();
            assert!(report.contains("attention_qk_l3"), "{report}");
        }
    }
}

#[test]
fn the_schema_version_follows_the_targets() {
    let maps = TargetSpec::parse("attention:1,3", LAYERS).unwrap();
    assert_eq!(
        Manifest::new(maps, Backend::Mmap).schema_version,
        "kd-cache/1"
    );
    let qk = spec(Precision::F16);
    assert_eq!(
        Manifest::new(qk.clone(), Backend::Mmap).schema_version,
        "kd-cache/2"
    );

    // A version-1 manifest cannot declare Q/K targets.
    let (recs, _) = records(Precision::F16, 3);
    let dir = tempfile::tempdir().unwrap();
    let mut m = write_cache(
        dir.path(),
        manifest(&qk, Backend::Parquet),
        &recs,
        small_options(),
    );
    m.schema_version = "kd-cache/1".into();
    std::fs::write(Manifest::path(dir.path()), m.to_json().unwrap()).unwrap();
    let e = CacheReader::open(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("manifest.json") && e.contains("need kd-cache/2"),
        "{e}"
    );
}

#[test]
fn widths_and_head_splits_that_do_not_fit_the_teacher_are_named() {
    let (recs, _) = records(Precision::F16, 4);
    for backend in [Backend::Parquet, Backend::Mmap] {
        // The manifest says hidden 24: Q/K rows of 2 x 16 do not fit.
        let dir = tempfile::tempdir().unwrap();
        let mut m = manifest(&spec(Precision::F16), backend);
        m.teacher.config["hidden_size"] = serde_json::json!(24);
        write_cache(dir.path(), m, &recs, small_options());
        let e = verify(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("record 0") && e.contains("32 values per token") && e.contains("= 48"),
            "{e}"
        );
        let reader = CacheReader::open(dir.path()).unwrap();
        let r = reader.get(0).unwrap();
        let e = r.attention_scores(1, 24, HEADS).unwrap_err().to_string();
        assert!(
            e.contains(&format!("record {}", r.seq_id))
                && e.contains("attention_qk layer 1")
                && e.contains("2 x hidden = 48"),
            "{e}"
        );

        // Heads that do not split the width: refused when opening, naming the manifest.
        let dir = tempfile::tempdir().unwrap();
        let mut m = manifest(&spec(Precision::F16), backend);
        m.teacher.config["num_attention_heads"] = serde_json::json!(3);
        write_cache(dir.path(), m, &recs, small_options());
        let e = CacheReader::open(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("manifest.json") && e.contains("16 does not split into 3"),
            "{e}"
        );
    }
    // A record whose Q/K tensor is not a whole, even number of values per token.
    let mut bad = recs[0].clone();
    let n = bad.len();
    bad.attention_qk[0].values =
        kd_cache::Quantized::encode(&vec![0.5; n * 3], 3, Precision::F16).unwrap();
    let e = bad.validate(&spec(Precision::F16)).unwrap_err().to_string();
    assert!(
        e.contains("attention_qk layer 1") && e.contains("even"),
        "{e}"
    );
}

#[test]
fn qk_layers_serve_attention_needs_and_the_missing_ones_name_both_spellings() {
    let mut m = manifest(&spec(Precision::Int8), Backend::Mmap);
    m.schema_version = "kd-cache/2".into();
    let need = |t: &str| Expectation::new(TargetSpec::parse(t, LAYERS).unwrap());
    m.check_compatible(&need("attention:1,3")).unwrap();
    m.check_compatible(&need("attention-qk:3")).unwrap();
    let e = m
        .check_compatible(&need("attention:2,3"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no attention for layer 2 (maps of none, query/key of 1, 3)"),
        "{e}"
    );
    assert!(
        e.contains("--targets mlm-topk:k=8,t=1@f16,hidden:0@f16,attention-qk:1,2,3@int8"),
        "{e}"
    );
    assert!(
        e.contains("other attention form: --targets mlm-topk:k=8,t=1@f16,hidden:0@f16,attention:1,2,3@int8"),
        "{e}"
    );
    // A cache of maps asked for Q/K names the Q/K spelling.
    let maps = manifest(
        &TargetSpec::parse("attention:1,3", LAYERS).unwrap(),
        Backend::Mmap,
    );
    let e = maps
        .check_compatible(&need("attention-qk:1"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cache has no attention-qk") && e.contains("attention-qk:1@f16"),
        "{e}"
    );
}

#[test]
fn parts_of_a_qk_cache_merge_into_one_that_reads() {
    let (recs, _) = records(Precision::Int8, 10);
    let root = tempfile::tempdir().unwrap();
    for backend in [Backend::Parquet, Backend::Mmap] {
        let mut parts = Vec::new();
        for (index, chunk) in recs.chunks(5).enumerate() {
            let dir = root.path().join(format!("{backend}-p{index}"));
            let mut m = manifest(&spec(Precision::Int8), backend);
            m.part = Some(kd_cache::Part {
                index: index as u32,
                count: 2,
            });
            write_cache(&dir, m, chunk, small_options());
            parts.push(dir);
        }
        let out = root.path().join(format!("{backend}-merged"));
        let merged = kd_cache::merge(&parts, &out, kd_cache::MergeMode::Copy).unwrap();
        assert_eq!(merged.schema_version, "kd-cache/2");
        verify(&out).unwrap();
        let got: Vec<Record> = CacheReader::open(&out)
            .unwrap()
            .iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(got, recs, "{backend}");
    }
}
