//! A classifier (or regressor) ready for task evaluation and prediction: a BERT
//! `BertForSequenceClassification` directory, or any [`Student`] that returns class logits
//! (the kd-bilstm directories of kd-lstm, loaded by the caller), with the tokenizer of its
//! directory and the names of its labels.

use crate::student::{Student, Wants};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use kd_bert::{load_model, Architecture, Bert, BertInput, ForwardCtx, LoadOptions};
use kd_data::{collate, encode_text_pair, BatchItem, EncodedExample, Label, TextEncoder};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The `model_type` of a kd BiLSTM directory.
pub const BILSTM_MODEL_TYPE: &str = "kd-bilstm";

/// What kind of model a directory holds, from its `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFamily {
    /// `architectures: ["BertForSequenceClassification"]`.
    BertClassifier,
    /// `model_type: "kd-bilstm"`.
    Bilstm,
}

/// Reads `dir/config.json` and says which classifier family it holds; a directory that holds
/// another kind of model (a masked-LM BERT, a bare encoder) is an error saying what it is.
pub fn detect_family(dir: &Path) -> Result<ModelFamily> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::Config(format!(
            "{}: cannot read {} ({e}): not a model directory",
            dir.display(),
            path.display()
        ))
    })?;
    let cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: invalid JSON: {e}", path.display())))?;
    if cfg.get("model_type").and_then(|v| v.as_str()) == Some(BILSTM_MODEL_TYPE) {
        return Ok(ModelFamily::Bilstm);
    }
    let archs: Vec<&str> = (cfg.get("architectures").and_then(|a| a.as_array()))
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let known = archs.iter().find_map(|a| Architecture::from_hf_name(a));
    if known == Some(Architecture::SequenceClassification) {
        return Ok(ModelFamily::BertClassifier);
    }
    let what = match known {
        Some(Architecture::MaskedLm) => format!("a masked-LM model ({})", archs.join(", ")),
        Some(_) => format!("a bare encoder ({})", archs.join(", ")),
        None if archs.is_empty() => match cfg.get("model_type").and_then(|v| v.as_str()) {
            Some(t) => format!("a {t:?} model without `architectures`"),
            None => "a model without `architectures` or `model_type`".into(),
        },
        None => format!("an unsupported architecture ({})", archs.join(", ")),
    };
    Err(Error::Config(format!(
        "{} is {what}, not a classifier: expected a BertForSequenceClassification directory \
         (kd finetune --objective classify) or a kd-bilstm directory",
        dir.display()
    )))
}

/// The network behind a [`TaskModel`].
enum Net {
    /// A BERT classifier over detached parameters.
    Bert(Box<Bert>),
    /// Any student with class logits.
    Student(Box<dyn Student>),
}

/// A classifier with its tokenizer and label names.
pub struct TaskModel {
    /// The directory it was loaded from.
    pub dir: PathBuf,
    /// Its family.
    pub family: ModelFamily,
    /// Label names by class id (`id2label`, else `LABEL_i`); one name for a regressor.
    pub label_names: Vec<String>,
    /// Whether it predicts one real value (`num_labels = 1` or `problem_type = regression`).
    pub regression: bool,
    /// Its own parameters.
    pub parameters: usize,
    /// Longest input it takes (position embeddings), `usize::MAX` when unbounded.
    pub max_positions: usize,
    encoder: TextEncoder,
    pad: u32,
    device: Device,
    net: Net,
}

impl TaskModel {
    /// Loads a BERT sequence classifier from `dir` with its tokenizer.
    pub fn load_bert(dir: &Path, device: &Device) -> Result<Self> {
        let opts = LoadOptions {
            architecture: Some(Architecture::SequenceClassification),
            device: device.clone(),
            ..LoadOptions::default()
        };
        let loaded = load_model(dir, &opts)?;
        let c = &loaded.model.config;
        let n = c.num_labels();
        let label_names = (0..n)
            .map(|i| {
                let name = c.id2label.as_ref().and_then(|m| m.get(&i.to_string()));
                name.cloned().unwrap_or_else(|| format!("LABEL_{i}"))
            })
            .collect();
        let regression = n == 1 || c.problem_type.as_deref() == Some("regression");
        let parameters = {
            let vars = loaded.varmap.data().lock().expect("varmap lock poisoned");
            vars.values().map(|v| v.elem_count()).sum()
        };
        let (max_positions, pad) = (c.max_position_embeddings, c.pad_token_id);
        Ok(TaskModel {
            dir: dir.to_path_buf(),
            family: ModelFamily::BertClassifier,
            label_names,
            regression,
            parameters,
            max_positions,
            encoder: encoder_of(dir)?,
            pad,
            device: device.clone(),
            net: Net::Bert(Box::new(loaded.inference_model()?)),
        })
    }

    /// A classifier over `student` (whose forward returns class logits), with `num_labels`
    /// outputs (1: a regressor), padding id `pad`, the tokenizer of `dir` and labels named
    /// `LABEL_i`.
    pub fn from_student(
        dir: &Path,
        family: ModelFamily,
        student: Box<dyn Student>,
        num_labels: usize,
        pad: u32,
    ) -> Result<Self> {
        Ok(TaskModel {
            dir: dir.to_path_buf(),
            family,
            label_names: (0..num_labels).map(|i| format!("LABEL_{i}")).collect(),
            regression: num_labels == 1,
            parameters: student.num_parameters(),
            max_positions: usize::MAX,
            encoder: encoder_of(dir)?,
            pad,
            device: student.device().clone(),
            net: Net::Student(student),
        })
    }

    /// Number of outputs (classes, or 1 for a regressor).
    pub fn num_outputs(&self) -> usize {
        self.label_names.len()
    }

    /// The label names were written by a fine-tuning run (not only `LABEL_i`).
    pub fn has_named_labels(&self) -> bool {
        (self.label_names.iter().enumerate()).any(|(i, n)| *n != format!("LABEL_{i}"))
    }

    /// `[CLS] a [SEP] (b [SEP])`, at most `max_len` tokens (and the model's positions).
    pub fn encode(&self, text: &str, pair: Option<&str>, max_len: usize) -> Result<EncodedExample> {
        let max_len = max_len.min(self.max_positions);
        let (input_ids, token_type_ids) = encode_text_pair(&self.encoder, text, pair, max_len)?;
        Ok(EncodedExample {
            input_ids,
            token_type_ids,
            label: Label::Class(0),
        })
    }

    /// Class logits (or the regression value) of one batch of encoded examples, one row each,
    /// in eval mode, the device synchronised.
    pub fn logits(&self, examples: &[&EncodedExample]) -> Result<Vec<Vec<f32>>> {
        let items: Vec<BatchItem> = (examples.iter().enumerate())
            .map(|(i, e)| BatchItem {
                label: None,
                ..BatchItem::task(i as u64, e)
            })
            .collect();
        let batch = collate(&items, self.pad)?;
        let mut ctx = ForwardCtx::eval();
        let logits: Tensor = match &self.net {
            Net::Bert(bert) => {
                let out =
                    bert.encode(&BertInput::from_batch(&batch, &self.device)?, &[], &mut ctx)?;
                bert.classify(&out, &mut ctx)?
            }
            Net::Student(s) => {
                let wants = Wants {
                    class_logits: true,
                    ..Wants::default()
                };
                let out = s.forward(&batch, &wants, &mut ctx)?;
                out.class_logits.ok_or_else(|| {
                    Error::Config(format!("{} returned no class logits", self.dir.display()))
                })?
            }
        };
        let rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        if rows.first().is_some_and(|r| r.len() != self.num_outputs()) {
            return Err(Error::Config(format!(
                "{} returned {} outputs per example, its config says {}",
                self.dir.display(),
                rows[0].len(),
                self.num_outputs()
            )));
        }
        Ok(rows)
    }
}

/// The text encoder over the tokenizer of `dir`.
fn encoder_of(dir: &Path) -> Result<TextEncoder> {
    let tokenizer = kd_bert::tokenizer::load_tokenizer(dir)?;
    Ok(TextEncoder::new(&tokenizer)?)
}
