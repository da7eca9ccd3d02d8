//! Bytes per token of a MiniLM-sized cache at several precisions, both backends.
//!
//! `cargo run --release -p kd-cache --example size_report [records]`
//!
//! Prints bytes per token (total and per target) and seconds spent writing
//! (quantizing included), quantizing alone, and streaming back with every
//! tensor decoded to f32.
//!
//! Synthetic teacher: H = 384, 12 heads, 6 layers, vocabulary 30522;
//! sequences of 110 tokens with 16 masked positions; top-32 logits at T = 1
//! and 2; hidden states of layers 0..=6 and attention scores of layers 1..=6.
//! Values are Gaussian (hidden states with a few large outlier dimensions,
//! as in BERT), which compresses about as badly as real activations do.

use kd_cache::{
    inspect, Backend, CacheReader, CacheWriter, LayerValues, Manifest, Precision, Quantized,
    Record, TargetSpec, TopK, WriterOptions,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

const H: usize = 384;
const HEADS: usize = 12;
const LAYERS: u32 = 6;
const VOCAB: usize = 30522;
const N: usize = 110;
const MASKED: usize = 16;

fn record(rng: &mut ChaCha8Rng, seq_id: u64, spec: &TargetSpec) -> Record {
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let input_ids: Vec<u32> = (0..N)
        .map(|_| rng.random_range(1000..VOCAB as u32))
        .collect();
    let mut positions: Vec<u32> = (1..N as u32 - 1).collect();
    for i in 0..MASKED {
        let j = rng.random_range(i..positions.len());
        positions.swap(i, j);
    }
    positions.truncate(MASKED);
    positions.sort_unstable();
    let mut r = Record {
        seq_id,
        epoch: 0,
        mlm_labels: positions.iter().map(|&p| input_ids[p as usize]).collect(),
        mlm_positions: positions,
        input_ids,
        ..Record::default()
    };
    if let Some(t) = &spec.mlm_topk {
        // Gaussian logits plus a few dozen plausible tokens per position.
        let mut logits: Vec<f32> = (0..MASKED * VOCAB)
            .map(|_| 2.0 * normal.sample(rng))
            .collect();
        for row in logits.chunks_mut(VOCAB) {
            for _ in 0..40 {
                row[rng.random_range(0..VOCAB)] += rng.random_range(4.0..12.0);
            }
        }
        let topk = TopK::from_vocab_logits(
            &logits,
            VOCAB,
            t.k as usize,
            &t.temperatures,
            Precision::F32,
        );
        r.mlm_topk = Some(topk.unwrap());
    }
    if let Some(h) = &spec.hidden {
        for &layer in &h.layers {
            let v: Vec<f32> = (0..N * H)
                .map(|i| normal.sample(rng) * if i % H < 3 { 15.0 } else { 0.6 })
                .collect();
            let values = Quantized::from_f32(&v, H).unwrap();
            r.hidden.push(LayerValues { layer, values });
        }
    }
    if let Some(a) = &spec.attention {
        for &layer in &a.layers {
            let v: Vec<f32> = (0..HEADS * N * N)
                .map(|_| 2.5 * normal.sample(rng))
                .collect();
            let values = Quantized::from_f32(&v, N).unwrap();
            r.attention.push(LayerValues { layer, values });
        }
    }
    r
}

fn main() -> kd_cache::Result<()> {
    let records: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let configs = [
        ("top-32 only, f16", "mlm-topk:k=32,t=1,2@f16"),
        (
            "all targets, f16",
            "mlm-topk:k=32,t=1,2@f16,hidden:all@f16,attention:all@f16",
        ),
        (
            "all targets, int8 hidden+attention",
            "mlm-topk:k=32,t=1,2@f16,hidden:all@int8,attention:all@int8",
        ),
        (
            "all targets, f32 (naive)",
            "mlm-topk:k=32,t=1,2@f32,hidden:all@f32,attention:all@f32",
        ),
    ];
    println!("{records} records of {N} tokens ({MASKED} masked), H = {H}, {HEADS} heads");
    println!(
        "{:<36} {:>8} {:>10} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
        "config",
        "backend",
        "B/token",
        "topk",
        "hidden",
        "attention",
        "write s",
        "quant s",
        "read s"
    );
    for (label, text) in configs {
        let spec = TargetSpec::parse(text, LAYERS)?;
        for backend in [Backend::Parquet, Backend::Mmap] {
            let dir = tempfile::tempdir().map_err(|e| kd_cache::CacheError::io("tmp", e))?;
            let mut m = Manifest::new(spec.clone(), backend);
            m.teacher.config = serde_json::json!({"model_type": "bert", "hidden_size": H});
            let mut w = CacheWriter::create(dir.path(), m, WriterOptions::default())?;
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let mut write_s = 0.0;
            let mut conform_s = 0.0;
            for i in 0..records {
                let mut r = record(&mut rng, i, &spec);
                let t = std::time::Instant::now();
                r.conform(&spec)?;
                conform_s += t.elapsed().as_secs_f64();
                w.write(&r)?;
                write_s += t.elapsed().as_secs_f64();
            }
            let t = std::time::Instant::now();
            w.finish()?;
            write_s += t.elapsed().as_secs_f64() + conform_s;
            let rep = inspect(dir.path())?;
            // Streaming read with every tensor decoded to f32, as a trainer would.
            let t = std::time::Instant::now();
            let reader = CacheReader::open(dir.path())?;
            let mut checksum = 0f64;
            for r in reader.iter() {
                let r = r?;
                for l in r.hidden.iter().chain(&r.attention) {
                    checksum += f64::from(l.values.decode()[0]);
                }
            }
            let read_s = t.elapsed().as_secs_f64();
            assert!(checksum.is_finite());
            let per = |prefixes: &[&str]| {
                rep.columns
                    .iter()
                    .filter(|c| prefixes.iter().any(|p| c.name.starts_with(p)))
                    .map(|c| c.bytes as f64)
                    .sum::<f64>()
                    / rep.tokens as f64
                    + 0.0
            };
            println!(
                "{label:<36} {:>8} {:>10.1} {:>8.1} {:>8.1} {:>9.1} {:>8.2} {:>8.2} {:>8.2}",
                backend.to_string(),
                rep.bytes_per_token(),
                per(&["topk", "log_partition"]),
                per(&["hidden"]),
                per(&["attention"]),
                write_s,
                conform_s,
                read_s
            );
        }
    }
    let padded = (7 * 128 * H * 4 + 6 * HEADS * 128 * 128 * 4 + MASKED * 32 * 8) as f64 / N as f64;
    println!("naive f32 padded to 128 tokens, uncompressed: {padded:.1} B/token");
    Ok(())
}
