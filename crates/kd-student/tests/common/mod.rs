//! Shared by the student tests: a tiny masked-LM model directory (the random `tiny_mlm`
//! fixture with dropout off and a 99-token vocabulary) and teacher caches written record by
//! record from seeded random values, so every number a test checks is known to it.
#![allow(dead_code)]

use kd_cache::quant::Quantized;
use kd_cache::targets::SampledSpec;
use kd_cache::{
    Backend, CacheWriter, LayerSpec, LayerValues, Manifest, Precision, Record, Sampled, TargetSpec,
    TopK, TopKSpec, WriterOptions,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// Vocabulary size of the tiny model.
pub const VOCAB: usize = 99;
/// Hidden size of the tiny model.
pub const HIDDEN: usize = 32;
/// Encoder layers of the tiny model.
pub const LAYERS: u32 = 2;

/// The repository's `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../tests/fixtures")
}

/// Writes the tiny model into `dir`: `tiny_mlm`'s weights, its config with both dropouts 0
/// (so a training forward pass equals an eval one), and a `vocab.txt` of 99 tokens, the
/// first five BERT's specials.
pub fn tiny_model(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let src = fixtures().join("tiny_mlm");
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["hidden_dropout_prob"] = 0.0.into();
    cfg["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vocab.extend((vocab.len()..VOCAB).map(|i| format!("w{i}")));
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    dir.to_path_buf()
}

/// The tiny model's sizes, as the loss list is resolved against them.
pub const TINY: kd_student::loss_terms::ModelShapes = kd_student::loss_terms::ModelShapes {
    layers: LAYERS as usize,
    hidden: HIDDEN,
    heads: 4,
};

/// The tiny model (written into `dir`) as a BERT student on the CPU.
pub fn tiny_student(dir: &Path) -> kd_student::student::BertStudent {
    let model = tiny_model(dir);
    let loaded = kd_bert::load_model(&model, &kd_bert::LoadOptions::default()).unwrap();
    kd_student::student::BertStudent::new(loaded, model, &candle_core::Device::Cpu)
}

/// What a synthetic cache holds.
#[derive(Clone, Debug)]
pub struct Synth {
    /// Masked views (cache epochs).
    pub views: u32,
    /// Records per view.
    pub records: usize,
    /// Records per shard file.
    pub rows_per_shard: u64,
    /// Shard backend.
    pub backend: Backend,
    /// Top-k targets (k, temperatures), f16 logits.
    pub topk: Option<(u32, Vec<f32>)>,
    /// Sampled targets (draws, temperature).
    pub sampled: Option<(u32, f32)>,
    /// Hidden layers stored (f16).
    pub hidden: Vec<u32>,
    /// Seed of every value.
    pub seed: u64,
}

impl Default for Synth {
    fn default() -> Self {
        Self {
            views: 1,
            records: 12,
            rows_per_shard: 100,
            backend: Backend::Mmap,
            topk: Some((5, vec![1.0, 2.0])),
            sampled: None,
            hidden: vec![LAYERS],
            seed: 1,
        }
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller: enough for test values.
    let (u, v): (f64, f64) = (rng.random_range(1e-9..1.0), rng.random_range(0.0..1.0));
    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
}

/// One record of view `epoch`: 6 to 23 tokens, `[CLS]` first and `[SEP]` last, segment ids on
/// odd records, about one masked position in five (record 0 of a view has none), teacher
/// logits ~ 3 N(0, 1) over the vocabulary at each masked position.
pub fn record(s: &Synth, epoch: u32, i: usize, rng: &mut ChaCha8Rng) -> Record {
    let n = rng.random_range(6..24usize);
    let mut ids: Vec<u32> = (0..n).map(|_| rng.random_range(5..VOCAB as u32)).collect();
    (ids[0], ids[n - 1]) = (2, 3);
    let mut positions = Vec::new();
    if i > 0 {
        for p in 1..n - 1 {
            if rng.random_range(0..5) == 0 {
                positions.push(p as u32);
            }
        }
        if positions.is_empty() {
            positions.push(1);
        }
    }
    let labels: Vec<u32> = positions.iter().map(|&p| ids[p as usize]).collect();
    for &p in &positions {
        ids[p as usize] = 4;
    }
    let types = (i % 2 == 1).then(|| (0..n).map(|t| u32::from(t >= n / 2)).collect());
    let rows: Vec<f32> = (0..positions.len() * VOCAB)
        .map(|_| 3.0 * normal(rng))
        .collect();
    let mut rec = Record {
        seq_id: 1000 * u64::from(epoch) + i as u64,
        epoch,
        input_ids: ids,
        token_type_ids: types,
        mlm_positions: positions,
        mlm_labels: labels,
        ..Record::default()
    };
    if let Some((k, temps)) = &s.topk {
        rec.mlm_topk = Some(
            TopK::from_vocab_logits(&rows, VOCAB, *k as usize, temps, Precision::F16).unwrap(),
        );
    }
    if let Some((k, t)) = s.sampled {
        rec.mlm_sampled = Some(Sampled::draw(&rows, VOCAB, k as u16, t, rng).unwrap());
    }
    for &layer in &s.hidden {
        let v: Vec<f32> = (0..n * HIDDEN).map(|_| normal(rng)).collect();
        rec.hidden.push(LayerValues {
            layer,
            values: Quantized::encode(&v, HIDDEN, Precision::F16).unwrap(),
        });
    }
    rec
}

/// The target spec of `s`.
pub fn spec(s: &Synth) -> TargetSpec {
    TargetSpec {
        mlm_topk: s.topk.as_ref().map(|(k, temps)| TopKSpec {
            k: *k,
            temperatures: temps.clone(),
            logit_precision: Precision::F16,
            positions: Default::default(),
        }),
        mlm_sampled: s
            .sampled
            .map(|(k, temperature)| SampledSpec { k, temperature }),
        hidden: (!s.hidden.is_empty()).then(|| LayerSpec {
            layers: s.hidden.clone(),
            precision: Precision::F16,
        }),
        ..TargetSpec::default()
    }
}

/// Writes the cache `s` describes into `dir` for the tiny model in `model` (its config and
/// tokenizer in the manifest) and returns its records in cache order.
pub fn write_cache(dir: &Path, model: &Path, s: &Synth) -> Vec<Record> {
    let mut m = Manifest::new(spec(s), s.backend);
    m.teacher.config =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    m.teacher.weights_sha256 = kd_bert::checkpoint::weights_sha256(model).unwrap();
    m.tokenizer_sha256 = kd_core::fs::sha256_file(&model.join("vocab.txt")).unwrap();
    m.epochs = s.views;
    let opts = WriterOptions {
        rows_per_shard: s.rows_per_shard,
        row_group_rows: 4,
        block_bytes: 4096,
        ..WriterOptions::default()
    };
    let mut w = CacheWriter::create(dir, m, opts).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let mut all = Vec::new();
    for epoch in 0..s.views {
        for i in 0..s.records {
            let r = record(s, epoch, i, &mut rng);
            w.write(&r).unwrap();
            all.push(r);
        }
    }
    w.finish().unwrap();
    // The records as stored (f16 values), which is what training reads.
    kd_cache::CacheReader::open(dir)
        .unwrap()
        .iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// The lines of `metrics.jsonl` in `run` that report a step (not an evaluation).
pub fn step_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .collect()
}

/// Rewrites the model in `dir` as two safetensors shards (tensors alternately, by name) and a
/// `model.safetensors.index.json`; returns the shard paths.
pub fn shard_model(dir: &Path) -> [PathBuf; 2] {
    use candle_core::{Device, Tensor};
    let single = dir.join("model.safetensors");
    let mut all: Vec<(String, Tensor)> = candle_core::safetensors::load(&single, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let files = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut parts: [std::collections::HashMap<String, Tensor>; 2] = Default::default();
    let mut map = serde_json::Map::new();
    for (i, (name, t)) in all.into_iter().enumerate() {
        map.insert(name.clone(), files[i % 2].into());
        parts[i % 2].insert(name, t);
    }
    for (part, file) in parts.iter().zip(files) {
        candle_core::safetensors::save(part, dir.join(file)).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::remove_file(single).unwrap();
    files.map(|f| dir.join(f))
}
