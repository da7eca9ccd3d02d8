//! A BiLSTM student over the transfer set's vocabulary (`vocabulary = "transfer_set"`): its
//! table has one row per word piece of the cache's inputs (seen at least `min_count` times)
//! and per special token, copied from the teacher's rows, so it is smaller than with the
//! teacher's vocabulary; `kd predict` reads texts with pieces it has no row for; an unknown
//! vocabulary is refused by name.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;

fn run(c: &mut std::process::Command) -> Output {
    c.output().expect("kd runs")
}

const BILSTM: &str = r#"
[student.bilstm]
hidden_size = 24
mlp_hidden_size = 16
VOCABULARY
[[loss]]
kind = "hard_ce"
weight = 0.5
[[loss]]
kind = "logit_mse"
weight = 0.5
[train]
lr = 3e-3
"#;

/// Trains a BiLSTM with `vocabulary` (lines of the `student.bilstm` table) into `out`.
fn train(dir: &Path, cache: &Path, teacher: &Path, vocabulary: &str, out: &str) -> Output {
    let settings = dir.join(format!("{out}.toml"));
    std::fs::write(&settings, BILSTM.replace("VOCABULARY", vocabulary)).unwrap();
    run(&mut kd(
        "train --cache {} --teacher {} --bilstm --config {} --out {} --epochs 1 --batch-size 8",
        &[cache, teacher, &settings, &dir.join(out)],
    ))
}

/// How often each teacher id occurs in the inputs of the cache.
fn cache_counts(cache: &Path) -> BTreeMap<u32, u64> {
    let mut counts = BTreeMap::new();
    for r in kd_cache::reader::CacheReader::open(cache).unwrap().iter() {
        for id in r.unwrap().input_ids {
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

fn piece_ids(model: &Path) -> Vec<u32> {
    let map: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("vocab_map.json")).unwrap())
            .unwrap();
    assert_eq!(map["teacher_vocab_size"], 30522);
    (map["piece_ids"].as_array().unwrap().iter())
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn parameters(report: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(report).unwrap();
    v["student_parameters"].as_u64().unwrap()
}

#[test]
fn a_bilstm_over_the_transfer_sets_vocabulary_has_its_pieces_and_the_specials() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (teacher, cache) = teacher_and_cache(d);
    let own = ok(train(
        d,
        &cache,
        &teacher,
        r#"vocabulary = "transfer_set""#,
        "own",
    ));
    let full = ok(train(d, &cache, &teacher, "", "full"));

    // The rows: every piece of the cache's inputs and the five special tokens, ascending.
    let tok = tokenizers::Tokenizer::from_file(teacher.join("tokenizer.json")).unwrap();
    let specials: Vec<u32> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|t| tok.token_to_id(t).unwrap())
        .collect();
    let counts = cache_counts(&cache);
    let want = |min: u64| -> Vec<u32> {
        let kept = counts.iter().filter(|(_, &n)| n >= min).map(|(&id, _)| id);
        let all: BTreeSet<u32> = kept.chain(specials.iter().copied()).collect();
        all.into_iter().collect()
    };
    let model = d.join("own/model");
    let rows = piece_ids(&model);
    assert_eq!(rows, want(1));
    assert!(rows.len() > 100 && rows.len() < 2000, "{} rows", rows.len());
    eprintln!("transfer-set vocabulary: {} rows", rows.len());

    // Copied from the teacher's rows at those ids.
    let cpu = candle_core::Device::Cpu;
    let weights = candle_core::safetensors::load(model.join("model.safetensors"), &cpu).unwrap();
    let table = &weights["embedding.weight"];
    assert_eq!(table.dims(), [rows.len(), 128]);
    let t = candle_core::safetensors::load(teacher.join("model.safetensors"), &cpu).unwrap();
    let name = t
        .keys()
        .find(|k| k.ends_with("embeddings.word_embeddings.weight"))
        .unwrap();
    let idx = candle_core::Tensor::new(rows.as_slice(), &cpu).unwrap();
    let start = t[name].index_select(&idx, 0).unwrap();
    // Trained for six steps: near the teacher's rows, but moved.
    let moved = (table - &start).unwrap().abs().unwrap();
    let moved = moved.max_keepdim(1).unwrap().flatten_all().unwrap();
    let moved: Vec<f32> = moved.to_vec1().unwrap();
    assert!(moved.iter().all(|&m| m < 0.1), "{moved:?}");
    assert!(
        moved.iter().any(|&m| m > 0.0),
        "the embedding rows did not train"
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["vocabulary"], "transfer_set");
    assert_eq!(cfg["vocab_size"], rows.len());

    // Smaller by exactly the rows left out.
    let (p_own, p_full) = (parameters(&own), parameters(&full));
    eprintln!("parameters: {p_own} (transfer set) vs {p_full} (teacher)");
    assert_eq!(p_full - p_own, (30522 - rows.len() as u64) * 128);

    // Texts with pieces the table has no row for.
    let text = "some text with zzzqqq unseen words";
    let enc = tok.encode(text, true).unwrap();
    assert!(enc.get_ids().iter().any(|id| !rows.contains(id)));
    let predicted = ok(run(kd("predict --model {}", &[&model]).arg(text)));
    let v: serde_json::Value = serde_json::from_str(predicted.trim()).unwrap();
    let p: Vec<f64> = (v["probs"].as_array().unwrap().iter())
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(p.len(), 2);
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{predicted}");

    // min_count 2 keeps the pieces seen twice or more (and the specials).
    ok(train(
        d,
        &cache,
        &teacher,
        "vocabulary = \"transfer_set\"\nmin_count = 2",
        "twice",
    ));
    let twice = piece_ids(&d.join("twice/model"));
    assert_eq!(twice, want(2));
    assert!(twice.len() < rows.len());
    eprintln!("min_count 2: {} rows", twice.len());

    // Unknown choices are refused by name.
    fails_with(
        train(d, &cache, &teacher, r#"vocabulary = "words""#, "bad"),
        &[
            "student.bilstm.vocabulary",
            "\"teacher\"",
            "\"transfer_set\"",
            "words",
        ],
    );
    fails_with(
        train(d, &cache, &teacher, "min_count = 3", "bad"),
        &["student.bilstm.min_count", "transfer_set"],
    );
}
