//! Classifier students for task distillation: from a fine-tuned classifier's layers (its pooler
//! and classifier copied), from a masked-LM model or a general student (a fresh head drawn from
//! the seed, the MLM head left out), and fresh from a configuration; each with the task
//! teacher's labels, and each saved as a `BertForSequenceClassification` that kd reloads.

mod common;

use candle_core::{Device, Tensor};
use kd_bert::checkpoint::{find_weights, read_tensors};
use kd_bert::{load_model, Architecture, BertConfig, BertInput, ForwardCtx, LoadOptions};
use kd_student::init::{fresh_student, init_with_head, ClassifierLabels, StudentHead};
use std::collections::HashMap;
use std::path::PathBuf;

fn tiny_cls() -> PathBuf {
    common::fixtures().join("tiny_cls")
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn var(m: &kd_bert::LoadedModel, name: &str) -> Vec<f32> {
    let vars = m.varmap.data().lock().unwrap();
    let v = vars
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in the student"));
    values(v.as_tensor())
}

fn teacher_tensors(dir: &std::path::Path) -> HashMap<String, Tensor> {
    let w = find_weights(dir).unwrap();
    read_tensors(&w, &Device::Cpu)
        .unwrap()
        .into_iter()
        .filter_map(|(n, t)| match kd_bert::checkpoint::canonical_name(&n) {
            kd_bert::checkpoint::Mapped::Param(c) => Some((c, t)),
            kd_bert::checkpoint::Mapped::Ignored(_) => None,
        })
        .collect()
}

fn labels() -> StudentHead {
    let cfg = BertConfig::from_file(&tiny_cls().join("config.json")).unwrap();
    StudentHead::Classifier(ClassifierLabels::of(&cfg))
}

fn logits(m: &kd_bert::LoadedModel) -> Vec<f32> {
    let dev = Device::Cpu;
    let input = BertInput {
        input_ids: Tensor::new(&[[2u32, 17, 45, 98, 3]], &dev).unwrap(),
        token_type_ids: None,
        attention_mask: None,
    };
    let mut ctx = ForwardCtx::eval();
    let out = m.model.encode(&input, &[], &mut ctx).unwrap();
    values(&m.model.classify(&out, &mut ctx).unwrap())
}

#[test]
fn a_student_from_a_fine_tuned_classifier_keeps_its_head_and_labels() {
    let init = init_with_head(&tiny_cls(), &[1], &labels(), 3, &Device::Cpu).unwrap();
    let s = &init.student;
    assert_eq!(s.model.architecture, Architecture::SequenceClassification);
    assert_eq!(s.model.config.num_labels(), 3);
    assert_eq!(s.model.config.num_hidden_layers, 1);
    assert!(
        s.report.initialized.is_empty(),
        "{:?}",
        s.report.initialized
    );
    let t = teacher_tensors(&tiny_cls());
    for (student, teacher) in [
        ("classifier.weight", "classifier.weight"),
        ("classifier.bias", "classifier.bias"),
        ("bert.pooler.dense.weight", "bert.pooler.dense.weight"),
        (
            "bert.encoder.layer.0.attention.self.query.weight",
            "bert.encoder.layer.1.attention.self.query.weight",
        ),
    ] {
        assert_eq!(var(s, student), values(&t[teacher]), "{student}");
    }
    // Saved and reloaded, it is the classifier transformers would load, with the same outputs.
    let dir = tempfile::tempdir().unwrap();
    kd_bert::checkpoint::save_hf_dir(&s.model, &s.varmap, dir.path(), None).unwrap();
    let back = load_model(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(
        back.model.architecture,
        Architecture::SequenceClassification
    );
    assert_eq!(back.model.config.id2label, s.model.config.id2label);
    assert_eq!(logits(&back), logits(s));
}

#[test]
fn a_student_from_a_masked_lm_model_gets_a_fresh_seeded_head_and_no_mlm_head() {
    let mlm = common::tiny_model(&tempfile::tempdir().unwrap().keep().join("mlm"));
    let a = init_with_head(&mlm, &[0, 1], &labels(), 11, &Device::Cpu).unwrap();
    let s = &a.student;
    let mut fresh = s.report.initialized.clone();
    fresh.sort();
    assert_eq!(
        fresh,
        [
            "bert.pooler.dense.bias",
            "bert.pooler.dense.weight",
            "classifier.bias",
            "classifier.weight"
        ]
    );
    assert!(s
        .varmap
        .data()
        .lock()
        .unwrap()
        .keys()
        .all(|k| !k.starts_with("cls.")));
    assert!(s
        .report
        .ignored
        .iter()
        .any(|(orig, why)| orig.starts_with("cls.") && why.contains("classifier student")));
    let w = var(s, "classifier.weight");
    assert_eq!(w.len(), 3 * 32);
    let sd = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
    assert!(
        sd > 0.005 && sd < 0.05,
        "BERT's N(0, 0.02) init, got sd {sd}"
    );
    let again = init_with_head(&mlm, &[0, 1], &labels(), 11, &Device::Cpu).unwrap();
    let other = init_with_head(&mlm, &[0, 1], &labels(), 12, &Device::Cpu).unwrap();
    assert_eq!(w, var(&again.student, "classifier.weight"));
    assert_ne!(w, var(&other.student, "classifier.weight"));
}

#[test]
fn a_fresh_classifier_student_takes_the_task_labels() {
    let mut cfg = BertConfig::tiny(99);
    cfg.hidden_size = 24;
    let s = fresh_student(&cfg, &labels(), 5, &Device::Cpu).unwrap();
    assert_eq!(s.model.architecture, Architecture::SequenceClassification);
    assert_eq!(var(&s, "classifier.weight").len(), 3 * 24);
    assert_eq!(logits(&s).len(), 3);
}
