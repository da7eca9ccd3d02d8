//! Sharded checkpoints (`model.safetensors.index.json` plus shard files): a model split into
//! two shards loads to the same parameters and outputs as the single file, and the weights
//! fingerprint covers every shard, not only the index.

use candle_core::{Device, Tensor};
use kd_bert::checkpoint::{find_weights, weights_sha256};
use kd_bert::{load_model, BertInput, ForwardCtx, LoadOptions, LoadedModel};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

fn tiny_mlm() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../tests/fixtures/tiny_mlm")
}

const SHARDS: [&str; 2] = [
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
];

/// Writes `tiny_mlm` into `dir` as two shards (tensors alternately, by name) and an index.
fn split(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(tiny_mlm().join("config.json"), dir.join("config.json")).unwrap();
    let all: BTreeMap<String, Tensor> =
        candle_core::safetensors::load(tiny_mlm().join("model.safetensors"), &Device::Cpu)
            .unwrap()
            .into_iter()
            .collect();
    let mut parts: [HashMap<String, Tensor>; 2] = Default::default();
    let mut map = serde_json::Map::new();
    for (i, (name, t)) in all.into_iter().enumerate() {
        map.insert(name.clone(), SHARDS[i % 2].into());
        parts[i % 2].insert(name, t);
    }
    for (part, file) in parts.iter().zip(SHARDS) {
        assert!(part.len() > 5);
        candle_core::safetensors::save(part, dir.join(file)).unwrap();
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
    dir.to_path_buf()
}

fn params(m: &LoadedModel) -> BTreeMap<String, Vec<f32>> {
    m.varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

fn logits(m: &LoadedModel) -> Vec<f32> {
    let ids: Vec<u32> = vec![2, 17, 4, 40, 88, 3];
    let input = BertInput {
        input_ids: Tensor::from_vec(ids, (1, 6), &Device::Cpu).unwrap(),
        token_type_ids: None,
        attention_mask: None,
    };
    let out = m
        .model
        .encode(&input, &[], &mut ForwardCtx::eval())
        .unwrap();
    let l = m.model.mlm_logits(out.last_hidden_state()).unwrap();
    l.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn a_model_in_two_shards_loads_like_the_single_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = split(&tmp.path().join("sharded"));
    assert_eq!(
        find_weights(&dir).unwrap(),
        dir.join("model.safetensors.index.json")
    );
    let opts = LoadOptions::default();
    let (one, two) = (
        load_model(&tiny_mlm(), &opts).unwrap(),
        load_model(&dir, &opts).unwrap(),
    );
    assert!(two.report.initialized.is_empty(), "{:?}", two.report);
    let (a, b) = (params(&one), params(&two));
    assert_eq!(a.len(), b.len());
    assert!(a.len() > 20);
    assert_eq!(a, b);
    assert_eq!(logits(&one), logits(&two));
}

fn sha256_hex(path: &Path) -> String {
    kd_core::fs::sha256_hex(&std::fs::read(path).unwrap())
}

#[test]
fn weights_fingerprint_covers_every_shard() {
    // A single file: the sha256 of its bytes, as caches have always recorded.
    let single = tiny_mlm();
    let file = single.join("model.safetensors");
    assert_eq!(weights_sha256(&single).unwrap(), sha256_hex(&file));
    assert_eq!(weights_sha256(&file).unwrap(), sha256_hex(&file));

    let tmp = tempfile::tempdir().unwrap();
    let dir = split(&tmp.path().join("a"));
    let index = dir.join("model.safetensors.index.json");
    let base = weights_sha256(&dir).unwrap();
    assert_eq!(weights_sha256(&index).unwrap(), base);
    assert_ne!(
        base,
        sha256_hex(&index),
        "the index alone is not the weights"
    );
    // The same files elsewhere: the same fingerprint.
    let copy = split(&tmp.path().join("b"));
    assert_eq!(weights_sha256(&copy).unwrap(), base);

    // One value of the second shard changed, the index untouched: another fingerprint.
    let shard = dir.join(SHARDS[1]);
    let mut t = candle_core::safetensors::load(&shard, &Device::Cpu).unwrap();
    let name = t.keys().min().unwrap().clone();
    let v: Vec<f32> = t[&name].flatten_all().unwrap().to_vec1().unwrap();
    let mut w = v.clone();
    w[0] += 1.0;
    let changed = Tensor::from_vec(w, t[&name].shape(), &Device::Cpu).unwrap();
    t.insert(name.clone(), changed);
    candle_core::safetensors::save(&t, &shard).unwrap();
    let after = weights_sha256(&dir).unwrap();
    assert_ne!(after, base, "{name} changed in {}", SHARDS[1]);
    // Put back: the fingerprint returns.
    t.insert(
        name.clone(),
        Tensor::from_vec(v, t[&name].shape(), &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&t, &shard).unwrap();
    assert_eq!(weights_sha256(&dir).unwrap(), base);

    // A shard named by the index but missing: an error naming it.
    std::fs::remove_file(copy.join(SHARDS[0])).unwrap();
    let err = weights_sha256(&copy).unwrap_err().to_string();
    assert!(err.contains(SHARDS[0]), "{err}");
}
