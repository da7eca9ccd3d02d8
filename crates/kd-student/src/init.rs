//! Building students: from a subset of a teacher's layers, as DistilBERT does, or fresh from a
//! configuration for a narrower student.
//!
//! A student built from a teacher keeps the teacher's width. Word, position and token-type
//! embeddings and the embedding LayerNorm are copied; student layer `j` is a copy of teacher
//! layer `layers[j]`; the MLM head (transform and output bias; the decoder is tied to the word
//! embeddings) is copied when the teacher has one and initialised fresh from the seed otherwise.
//! DistilBERT takes teacher layers `[0, 2, 4, 7, 9, 11]` of BERT-base, which is what
//! [`spread_layers`]`(12, 6)` returns.
//!
//! A classifier student ([`StudentHead::Classifier`], for task distillation) copies the pooler
//! and classifier too when the source has them with the same shapes (a fine-tuned teacher), and
//! draws them fresh from the seed otherwise (a general student, or a masked-LM teacher); it
//! takes its labels from the task teacher's configuration.

use crate::{Error, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use kd_bert::checkpoint::{
    canonical_name, find_weights, is_head, read_tensors, LoadReport, Mapped,
};
use kd_bert::init::init_params;
use kd_bert::model::Bert;
use kd_bert::{init_model, Architecture, BertConfig, LoadedModel};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Prefix of encoder-layer parameters.
const LAYER_PREFIX: &str = "bert.encoder.layer.";

/// A student built from a teacher, with the origin of every copied parameter.
pub struct TeacherInit {
    /// The student (`BertForMaskedLM`, or a classifier); its `report` lists the fresh parameters and the teacher
    /// tensors left out, and its `dir` is the teacher's, so saving it copies the tokenizer.
    pub student: LoadedModel,
    /// `(student parameter, teacher tensor as named in the checkpoint)`, by student name.
    pub copied: Vec<(String, String)>,
}

/// What a student predicts.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum StudentHead {
    /// Masked tokens (`BertForMaskedLM`).
    #[default]
    MaskedLm,
    /// The classes (or value) of a task (`BertForSequenceClassification`).
    Classifier(ClassifierLabels),
}

/// The label set of a classifier student.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierLabels {
    /// Class names by id (`None`: two classes, `LABEL_0` and `LABEL_1`).
    pub id2label: Option<BTreeMap<String, String>>,
    /// `single_label_classification` or `regression`.
    pub problem_type: Option<String>,
}

impl ClassifierLabels {
    /// The labels of a classifier's configuration (the task teacher's).
    pub fn of(config: &BertConfig) -> Self {
        Self {
            id2label: config.id2label.clone(),
            problem_type: config.problem_type.clone(),
        }
    }
}

impl StudentHead {
    /// The architecture of a student with this head.
    pub fn architecture(&self) -> Architecture {
        match self {
            StudentHead::MaskedLm => Architecture::MaskedLm,
            StudentHead::Classifier(_) => Architecture::SequenceClassification,
        }
    }

    /// `config` with this head's labels.
    fn configure(&self, config: &mut BertConfig) {
        if let StudentHead::Classifier(labels) = self {
            config.id2label = labels.id2label.clone();
            config.problem_type = labels.problem_type.clone();
        }
    }
}

/// A masked-LM student with `layers.len()` layers copied from the teacher in `teacher_dir`
/// (`layers[j]` is the 0-based teacher layer behind student layer `j`); see the module docs.
pub fn student_from_teacher(
    teacher_dir: &Path,
    layers: &[usize],
    seed: u64,
    device: &Device,
) -> Result<LoadedModel> {
    Ok(init_from_teacher(teacher_dir, layers, seed, device)?.student)
}

/// Like [`student_from_teacher`], also returning which teacher tensor each parameter came from.
pub fn init_from_teacher(
    teacher_dir: &Path,
    layers: &[usize],
    seed: u64,
    device: &Device,
) -> Result<TeacherInit> {
    init_with_head(teacher_dir, layers, &StudentHead::MaskedLm, seed, device)
}

/// Like [`init_from_teacher`], for a student with `head`: layers `layers` of the model in
/// `dir` (a teacher, or a general student to specialise), the head copied when `dir` has it
/// with the same shapes and fresh from `seed` otherwise.
pub fn init_with_head(
    dir: &Path,
    layers: &[usize],
    head: &StudentHead,
    seed: u64,
    device: &Device,
) -> Result<TeacherInit> {
    let teacher_dir = dir;
    let teacher_cfg = BertConfig::from_file(&teacher_dir.join("config.json"))?;
    check_layers(layers, teacher_cfg.num_hidden_layers, teacher_dir)?;
    let mut cfg = teacher_cfg;
    cfg.num_hidden_layers = layers.len();
    head.configure(&mut cfg);
    let arch = head.architecture();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = Bert::new(&cfg, arch, vb)?;

    let weights = find_weights(teacher_dir)?;
    let mut sources: BTreeMap<String, (String, candle_core::Tensor)> = BTreeMap::new();
    let mut report = LoadReport::default();
    for (orig, t) in read_tensors(&weights, device)? {
        let name = match canonical_name(&orig) {
            Mapped::Param(n) => n,
            Mapped::Ignored(why) => {
                report.ignored.push((orig, why.to_string()));
                continue;
            }
        };
        match student_name(&name, layers, arch) {
            Ok(s) if sources.contains_key(&s) => {
                report.ignored.push((orig, format!("duplicate of {name}")))
            }
            Ok(s) => {
                sources.insert(s, (orig, t));
            }
            Err(why) => report.ignored.push((orig, why)),
        }
    }

    let mut copied = Vec::new();
    let mut problems = Vec::new();
    {
        let vars = varmap.data().lock().expect("varmap lock poisoned");
        let names: BTreeSet<&String> = vars.keys().collect();
        for name in names {
            let var = &vars[name];
            match sources.remove(name) {
                Some((orig, t)) if t.dims() == var.dims() => {
                    var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
                    copied.push((name.clone(), orig));
                }
                Some((orig, _)) if is_head(name) => {
                    report
                        .ignored
                        .push((orig, format!("{name} has another shape than the student's")));
                    report.initialized.push(name.clone());
                }
                Some((orig, t)) => problems.push(format!(
                    "{orig} has shape {:?}, student {name} needs {:?}",
                    t.dims(),
                    var.dims()
                )),
                None if is_head(name) => report.initialized.push(name.clone()),
                None => problems.push(format!("no tensor for student {name}")),
            }
        }
    }
    for (name, (orig, _)) in sources {
        report
            .ignored
            .push((orig, format!("{name} is not a student parameter")));
    }
    if !problems.is_empty() {
        return Err(kd_bert::Error::Mismatch {
            path: weights,
            report: problems.join("\n"),
        }
        .into());
    }
    init_params(&varmap, &report.initialized, seed)?;
    Ok(TeacherInit {
        student: LoadedModel {
            model,
            varmap,
            report,
            dir: Some(teacher_dir.to_path_buf()),
        },
        copied,
    })
}

/// The student name of a canonical teacher name, or why the tensor is left out.
fn student_name(
    name: &str,
    layers: &[usize],
    arch: Architecture,
) -> std::result::Result<String, String> {
    if let Some(rest) = name.strip_prefix(LAYER_PREFIX) {
        let (index, tail) = rest.split_once('.').unwrap_or((rest, ""));
        let t: usize = index
            .parse()
            .map_err(|_| format!("unrecognised layer index in {name}"))?;
        return match layers.iter().position(|&l| l == t) {
            Some(j) => Ok(format!("{LAYER_PREFIX}{j}.{tail}")),
            None => Err(format!("teacher layer {t} is not kept")),
        };
    }
    let classifier_part = name.starts_with("bert.pooler.") || name.starts_with("classifier.");
    match arch {
        Architecture::SequenceClassification if name.starts_with("cls.") => {
            Err("MLM head not used by a classifier student".into())
        }
        Architecture::SequenceClassification => Ok(name.to_string()),
        _ if classifier_part => Err("head not used by a masked-LM student".into()),
        _ => Ok(name.to_string()),
    }
}

/// Checks a list of 0-based teacher layers: non-empty, no repeats, each below `teacher_layers`.
pub fn check_layers(layers: &[usize], teacher_layers: usize, teacher_dir: &Path) -> Result<()> {
    if layers.is_empty() {
        return Err(Error::Config(
            "the student layer list is empty: name at least one 0-based teacher layer".into(),
        ));
    }
    for (i, &l) in layers.iter().enumerate() {
        if l >= teacher_layers {
            return Err(Error::Config(format!(
                "teacher layer {l} does not exist: the teacher in {} has {teacher_layers} layers \
                 (0-based indices 0..={})",
                teacher_dir.display(),
                teacher_layers.saturating_sub(1)
            )));
        }
        if layers[..i].contains(&l) {
            return Err(Error::Config(format!(
                "teacher layer {l} is listed twice in {layers:?}"
            )));
        }
    }
    Ok(())
}

/// `student_layers` teacher layers spread evenly from the first to the last:
/// `round(j * (N - 1) / (M - 1))` (`[0, 2, 4, 7, 9, 11]` for 12 -> 6, DistilBERT's choice).
pub fn spread_layers(teacher_layers: usize, student_layers: usize) -> Vec<usize> {
    match student_layers {
        _ if teacher_layers == 0 => Vec::new(),
        0 => Vec::new(),
        1 => vec![teacher_layers.saturating_sub(1)],
        m => (0..m)
            .map(|j| ((j * (teacher_layers - 1)) as f64 / (m - 1) as f64).round() as usize)
            .collect(),
    }
}

/// Parses a comma-separated list of 0-based teacher layers (`"0,2,4,7,9,11"`).
pub fn parse_layers(text: &str) -> Result<Vec<usize>> {
    text.split(',')
        .map(|s| {
            s.trim().parse::<usize>().map_err(|_| {
                Error::Config(format!(
                    "layer list {text:?}: {s:?} is not a layer index (expected e.g. 0,2,4)"
                ))
            })
        })
        .collect()
}

/// A freshly initialised masked-LM student of `config` (any width), reproducible from `seed`.
pub fn student_from_config(config: &BertConfig, seed: u64, device: &Device) -> Result<LoadedModel> {
    fresh_student(config, &StudentHead::MaskedLm, seed, device)
}

/// A freshly initialised student of `config` with `head`, reproducible from `seed`.
pub fn fresh_student(
    config: &BertConfig,
    head: &StudentHead,
    seed: u64,
    device: &Device,
) -> Result<LoadedModel> {
    let mut config = config.clone();
    head.configure(&mut config);
    Ok(init_model(
        &config,
        head.architecture(),
        seed,
        device,
        DType::F32,
    )?)
}

/// [`student_from_config`] with the configuration read from a `config.json`.
pub fn student_from_config_file(path: &Path, seed: u64, device: &Device) -> Result<LoadedModel> {
    student_from_config(&BertConfig::from_file(path)?, seed, device)
}
