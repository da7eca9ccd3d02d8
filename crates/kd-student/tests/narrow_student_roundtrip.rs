//! A TinyBERT-style student (narrower than its teacher, its own FFN size, the teacher's head
//! count) saved through the `Student` interface with a hidden-state projection in its parameter
//! map: the directory holds the model alone, and transformers loads it with the hidden states kd
//! computes (tests/fixtures/kd_saved_tinybert, checked by `make_fixtures.py roundtrip`).

mod common;

use candle_core::{DType, Device, Tensor};
use kd_bert::{load_model, BertConfig, BertInput, ForwardCtx, LoadOptions};
use kd_student::init::student_from_config;
use kd_student::projections;
use kd_student::student::{BertStudent, Student};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const SEED: u64 = 4321;

fn fixture() -> PathBuf {
    common::fixtures().join("kd_saved_tinybert")
}

/// The student: the tiny teacher's vocabulary (99) and 4 heads, width 24 (teacher 32), FFN 40,
/// 2 layers, tanh GELU.
fn config() -> BertConfig {
    let mut cfg = BertConfig::tiny(99);
    cfg.hidden_size = 24;
    cfg.intermediate_size = 40;
    cfg.num_attention_heads = 4;
    cfg.num_hidden_layers = 2;
    cfg.hidden_act = "gelu_new".into();
    cfg
}

/// Builds the student from `SEED`, adds the projection a `hidden_mse` entry would own (24 -> 32),
/// moves every parameter off BERT's init (biases and LayerNorm shifts ~ U(-0.3, 0.3), scales ~
/// U(0.6, 1.4), as training would, so a misnamed one shows), and saves it into `dir`.
fn write_student(dir: &Path) {
    let dev = Device::Cpu;
    let loaded = student_from_config(&config(), SEED, &dev).unwrap();
    let name = projections::name(1, "hidden_mse", 1);
    projections::create(&loaded.varmap, &name, 24, 32, SEED, &dev).unwrap();
    {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
        let vars = loaded.varmap.data().lock().unwrap();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            let (lo, hi) = if name.ends_with("LayerNorm.weight") {
                (0.6f32, 1.4f32)
            } else if name.ends_with("bias") {
                (-0.3, 0.3)
            } else {
                continue;
            };
            let var = &vars[name];
            let values: Vec<f32> = (0..var.elem_count())
                .map(|_| rng.random_range(lo..hi))
                .collect();
            var.set(&Tensor::from_vec(values, var.shape(), &dev).unwrap())
                .unwrap();
        }
    }
    let tokenizer = tempfile::tempdir().unwrap();
    let student = BertStudent::new(loaded, tokenizer.path().to_path_buf(), &dev);
    student.save(dir).unwrap();
}

/// Inputs `[2, 9]` int64; the second row ends in 3 padding positions.
fn inputs() -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let t = |v: [[i64; 9]; 2]| Tensor::new(&v, &dev).unwrap();
    HashMap::from([
        (
            "input_ids".to_string(),
            t([
                [2, 11, 57, 93, 3, 40, 6, 81, 3],
                [2, 29, 14, 66, 48, 3, 0, 0, 0],
            ]),
        ),
        (
            "attention_mask".to_string(),
            t([[1; 9], [1, 1, 1, 1, 1, 1, 0, 0, 0]]),
        ),
        (
            "token_type_ids".to_string(),
            t([[0, 0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0]]),
        ),
    ])
}

/// Regenerates tests/fixtures/kd_saved_tinybert; afterwards run
/// `python3 tests/fixtures/make_fixtures.py roundtrip tests/fixtures/kd_saved_tinybert`.
#[test]
#[ignore = "writes tests/fixtures/kd_saved_tinybert; run explicitly to regenerate it"]
fn generate_kd_saved_tinybert_fixture() {
    let dir = fixture();
    write_student(&dir);
    candle_core::safetensors::save(&inputs(), dir.join("inputs.safetensors")).unwrap();
}

#[test]
fn the_saved_student_is_reproducible_and_holds_no_projection() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("student");
    write_student(&out);
    for f in ["model.safetensors", "config.json"] {
        assert!(
            std::fs::read(out.join(f)).unwrap() == std::fs::read(fixture().join(f)).unwrap(),
            "kd_saved_tinybert/{f} differs when regenerated from seed {SEED}"
        );
    }
    let saved =
        candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(saved.keys().all(|k| !k.starts_with(projections::PREFIX)));
    assert_eq!(
        saved["bert.encoder.layer.0.intermediate.dense.weight"].dims(),
        [40, 24]
    );
}

#[test]
fn transformers_gives_the_hidden_states_kd_gives() {
    let dir = fixture();
    let loaded = load_model(&dir, &LoadOptions::default()).unwrap();
    let c = &loaded.model.config;
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_attention_heads),
        (24, 40, 4)
    );
    let raw = candle_core::safetensors::load(dir.join("inputs.safetensors"), &Device::Cpu).unwrap();
    let u32s = |k: &str| raw[k].to_dtype(DType::U32).unwrap();
    let input = BertInput {
        input_ids: u32s("input_ids"),
        token_type_ids: Some(u32s("token_type_ids")),
        attention_mask: Some(raw["attention_mask"].to_dtype(DType::F32).unwrap()),
    };
    let out = loaded
        .model
        .encode(&input, &[], &mut ForwardCtx::eval())
        .unwrap();
    let want =
        candle_core::safetensors::load(dir.join("transformers_outputs.safetensors"), &Device::Cpu)
            .unwrap();
    assert_eq!(out.hidden_states.len(), 3);
    let mask: Vec<i64> = raw["attention_mask"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for (i, h) in out.hidden_states.iter().enumerate() {
        let reference = &want[&format!("hidden_states.{i}")];
        assert_eq!(h.dims(), reference.dims());
        let (a, b): (Vec<f32>, Vec<f32>) = (
            h.flatten_all().unwrap().to_vec1().unwrap(),
            reference.flatten_all().unwrap().to_vec1().unwrap(),
        );
        // Real tokens only: what a model computes at padded positions is not an output.
        let mut worst = 0f32;
        for (j, (x, y)) in a.iter().zip(&b).enumerate() {
            if mask[j / 24] == 1 {
                worst = worst.max((x - y).abs());
            }
        }
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        println!("hidden_states.{i}: max |kd - transformers| {worst:.2e} (max |h| {scale:.2})");
        assert!(scale > 0.5, "hidden_states.{i} ~0");
        assert!(worst <= 1e-4, "hidden_states.{i}: {worst}");
    }
    let logits = loaded.model.mlm_logits(out.last_hidden_state()).unwrap();
    let diff = (logits - &want["logits"])
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff <= 1e-4, "MLM logits: {diff}");
}
