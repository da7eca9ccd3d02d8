//! Shared helpers of the integration tests: random records and comparisons.
#![allow(dead_code)]

use std::path::Path;

use kd_cache::{
    Backend, CacheWriter, Label, LayerValues, Manifest, Precision, Quantized, Record, Sampled,
    TargetSpec, TopK, WriterOptions,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Vocabulary of the synthetic teacher.
pub const VOCAB: usize = 200;
/// Hidden size of the synthetic teacher.
pub const HIDDEN: usize = 16;
/// Attention heads of the synthetic teacher.
pub const HEADS: usize = 2;
/// Encoder layers of the synthetic teacher.
pub const LAYERS: u32 = 4;

/// A spec with every target at the given precisions.
pub fn full_spec(logits: Precision, hidden: Precision, attention: Precision) -> TargetSpec {
    let text = format!(
        "mlm-topk:k=8,t=1,2@{logits},mlm-sampled:k=12,t=2,hidden:0,2,last@{hidden},\
         attention:1,3@{attention},logits"
    );
    TargetSpec::parse(&text, LAYERS).unwrap()
}

/// Random record `seq_id` for `spec`, tensors handed over as f32.
pub fn random_record(rng: &mut ChaCha8Rng, spec: &TargetSpec, seq_id: u64, epoch: u32) -> Record {
    let n = rng.random_range(4..24usize);
    let input_ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..VOCAB as u32)).collect();
    let n_mask = (n / 6).max(1);
    let mut positions: Vec<u32> = (0..n as u32).collect();
    for i in 0..n_mask {
        let j = rng.random_range(i..n);
        positions.swap(i, j);
    }
    positions.truncate(n_mask);
    positions.sort_unstable();
    let labels = positions
        .iter()
        .map(|&p| input_ids[p as usize] ^ 1)
        .collect();
    let vocab_logits: Vec<f32> = (0..n_mask * VOCAB)
        .map(|_| rng.random_range(-6.0f32..14.0))
        .collect();
    let mut r = Record {
        seq_id,
        epoch,
        token_type_ids: seq_id
            .is_multiple_of(2)
            .then(|| (0..n as u32).map(|i| i % 2).collect()),
        input_ids,
        mlm_positions: positions,
        mlm_labels: labels,
        ..Record::default()
    };
    if let Some(t) = &spec.mlm_topk {
        r.mlm_topk = Some(
            TopK::from_vocab_logits(
                &vocab_logits,
                VOCAB,
                t.k as usize,
                &t.temperatures,
                Precision::F32,
            )
            .unwrap(),
        );
    }
    if let Some(s) = &spec.mlm_sampled {
        r.mlm_sampled =
            Some(Sampled::draw(&vocab_logits, VOCAB, s.k as u16, s.temperature, rng).unwrap());
    }
    if let Some(h) = &spec.hidden {
        for &layer in &h.layers {
            let v: Vec<f32> = (0..n * HIDDEN)
                .map(|i| rng.random_range(-3.0f32..3.0) * if i % 17 == 0 { 20.0 } else { 1.0 })
                .collect();
            let values = Quantized::from_f32(&v, HIDDEN).unwrap();
            r.hidden.push(LayerValues { layer, values });
        }
    }
    if let Some(a) = &spec.attention {
        for &layer in &a.layers {
            let v: Vec<f32> = (0..HEADS * n * n)
                .map(|_| rng.random_range(-12.0f32..12.0))
                .collect();
            let values = Quantized::from_f32(&v, n).unwrap();
            r.attention.push(LayerValues { layer, values });
        }
    }
    if spec.logits {
        r.logits = Some(vec![rng.random_range(-3.0..3.0), 0.25, -1.5]);
    }
    r.label = match seq_id % 3 {
        0 => Some(Label::Class((seq_id % 5) as u32)),
        1 => Some(Label::Value(seq_id as f32 * 0.5)),
        _ => None,
    };
    r
}

/// `count` random records (seq ids 0..count, epochs alternating).
pub fn random_records(seed: u64, spec: &TargetSpec, count: usize) -> Vec<Record> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|i| random_record(&mut rng, spec, i as u64 * 7 + 3, (i % 2) as u32))
        .collect()
}

/// A manifest template with recognisable identity fields.
pub fn manifest(spec: &TargetSpec, backend: Backend) -> Manifest {
    let mut m = Manifest::new(spec.clone(), backend);
    m.teacher.config = serde_json::json!({
        "model_type": "bert", "num_hidden_layers": LAYERS, "hidden_size": HIDDEN,
        "num_attention_heads": HEADS, "vocab_size": VOCAB
    });
    m.teacher.weights_sha256 = "ab12".repeat(16);
    m.tokenizer_sha256 = "cd34".repeat(16);
    m.epochs = 2;
    m
}

/// Small shards, row groups and blocks, so the tests cross their borders.
pub fn small_options() -> WriterOptions {
    WriterOptions {
        rows_per_shard: 7,
        row_group_rows: 3,
        row_group_bytes: 64 << 20,
        block_bytes: 2000,
        zstd_level: 3,
    }
}

/// Writes `records` to a new cache in `dir`.
pub fn write_cache(
    dir: &Path,
    m: Manifest,
    records: &[Record],
    options: WriterOptions,
) -> Manifest {
    let mut w = CacheWriter::create(dir, m, options).unwrap();
    for r in records {
        w.write(r).unwrap();
    }
    w.finish().unwrap()
}

fn bound(p: Precision, x: f32) -> f32 {
    match p {
        Precision::F32 => 0.0,
        Precision::F16 => x.abs() * 2f32.powi(-11) + 2f32.powi(-25),
        Precision::Bf16 => x.abs() * 2f32.powi(-8),
        Precision::Int8 => unreachable!(),
    }
}

/// Asserts that `back` holds the values of `orig` within the precision bounds.
pub fn assert_close_q(orig: &Quantized, back: &Quantized, p: Precision, what: &str) {
    assert_eq!(back.precision(), p, "{what}");
    assert_eq!(
        (orig.rows(), orig.cols()),
        (back.rows(), back.cols()),
        "{what}"
    );
    let (a, b) = (orig.decode(), back.decode());
    if p == Precision::Int8 {
        for r in 0..orig.rows() {
            let s = back.scales()[r];
            for c in 0..orig.cols() {
                let (x, y) = (a[r * orig.cols() + c], b[r * orig.cols() + c]);
                assert!(
                    (x - y).abs() <= s / 2.0 * (1.0 + 1e-5),
                    "{what}: {x} vs {y}, scale {s}"
                );
            }
        }
    } else {
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= bound(p, *x), "{what}: {x} vs {y} at {p}");
        }
    }
}

/// Asserts that `back` equals `orig`: ids and f32 exactly, quantized
/// tensors within the bounds of the precisions of `spec`.
pub fn assert_record_close(orig: &Record, back: &Record, spec: &TargetSpec) {
    let w = format!("seq {}", orig.seq_id);
    assert_eq!(orig.seq_id, back.seq_id);
    assert_eq!(orig.epoch, back.epoch, "{w}");
    assert_eq!(orig.input_ids, back.input_ids, "{w}");
    assert_eq!(orig.token_type_ids, back.token_type_ids, "{w}");
    assert_eq!(orig.mlm_positions, back.mlm_positions, "{w}");
    assert_eq!(orig.mlm_labels, back.mlm_labels, "{w}");
    assert_eq!(orig.mlm_sampled, back.mlm_sampled, "{w}");
    assert_eq!(orig.logits, back.logits, "{w}");
    assert_eq!(orig.label, back.label, "{w}");
    match (&orig.mlm_topk, &back.mlm_topk, &spec.mlm_topk) {
        (Some(a), Some(b), Some(s)) => {
            assert_eq!(a.ids, b.ids, "{w}");
            assert_eq!(a.log_partition, b.log_partition, "{w}");
            assert_close_q(&a.logits, &b.logits, s.logit_precision, &w);
        }
        (None, None, None) => {}
        _ => panic!("{w}: topk presence differs"),
    }
    for (a, b, s) in [
        (&orig.hidden, &back.hidden, &spec.hidden),
        (&orig.attention, &back.attention, &spec.attention),
    ] {
        assert_eq!(a.len(), b.len(), "{w}");
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.layer, y.layer, "{w}");
            let p = s.as_ref().unwrap().precision;
            assert_close_q(&x.values, &y.values, p, &format!("{w} layer {}", x.layer));
        }
    }
}
