//! `kd predict`: class labels, probabilities and logits (or the value of a regressor) of texts,
//! from a classifier directory: a BERT sequence classifier (`kd finetune --objective
//! classify`) or a BiLSTM student (kd-bilstm), as one JSON object per text.

use super::GlobalArgs;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use kd_student::eval::task::{detect_family, metrics, ModelFamily, TaskModel};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Arguments of `kd predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Classifier directory: BertForSequenceClassification or kd-bilstm.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Texts to classify, one prediction each.
    #[arg(value_name = "TEXT", conflicts_with = "input")]
    texts: Vec<String>,
    /// Texts from a file: one per line, or (a `.jsonl` file) one JSON object per line with
    /// `text` and, for sentence pairs, `text_b`.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Write the JSON lines to FILE (atomically) instead of standard output.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Tokens per text, [CLS] and [SEP] included; longer texts are truncated.
    #[arg(long, default_value_t = 128)]
    max_len: usize,
}

/// Loads a classifier directory of any family kd knows (the loader of task evaluation too);
/// a directory holding another kind of model is an error saying what it is.
pub(crate) fn load_classifier(dir: &Path, device: &Device) -> kd_student::Result<TaskModel> {
    if !dir.is_dir() {
        return Err(kd_student::Error::Config(format!(
            "model directory {} does not exist or is not a directory",
            dir.display()
        )));
    }
    match detect_family(dir)? {
        ModelFamily::BertClassifier => TaskModel::load_bert(dir, device),
        ModelFamily::Bilstm => {
            let student = kd_lstm::BiLstmStudent::load(dir, device)?;
            let (n, pad) = (student.config().num_labels, student.config().pad_token_id);
            let names = student.config().id2label.clone();
            let mut model =
                TaskModel::from_student(dir, ModelFamily::Bilstm, Box::new(student), n, pad)?;
            for (i, name) in model.label_names.iter_mut().enumerate() {
                if let Some(n) = names.as_ref().and_then(|m| m.get(&i.to_string())) {
                    *name = n.clone();
                }
            }
            Ok(model)
        }
    }
}

/// One input: a text and, for pairs, its second text.
struct Input {
    text: String,
    text_b: Option<String>,
}

/// The inputs of the command line or of `--input`; an empty text is an error naming it.
fn read_inputs(a: &PredictArgs) -> Result<Vec<Input>> {
    let Some(path) = &a.input else {
        if a.texts.is_empty() {
            bail!("nothing to predict: give texts as arguments or --input FILE");
        }
        for (i, t) in a.texts.iter().enumerate() {
            if t.trim().is_empty() {
                bail!("text {} of the command line is empty", i + 1);
            }
        }
        let texts = a.texts.iter().map(|t| Input {
            text: t.clone(),
            text_b: None,
        });
        return Ok(texts.collect());
    };
    let raw = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --input {}", path.display()))?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let mut inputs = Vec::new();
    for (i, line) in raw.lines().enumerate() {
        let at = || format!("{} line {}", path.display(), i + 1);
        let input = if jsonl {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{}: invalid JSON", at()))?;
            let field = |k: &str| -> Result<Option<String>> {
                match v.get(k) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => bail!("{}: `{k}` is not a string", at()),
                }
            };
            let Some(text) = field("text")? else {
                bail!("{}: no `text` field", at());
            };
            Input {
                text,
                text_b: field("text_b")?,
            }
        } else {
            Input {
                text: line.to_string(),
                text_b: None,
            }
        };
        if input.text.trim().is_empty() {
            bail!("{}: empty text", at());
        }
        inputs.push(input);
    }
    if inputs.is_empty() {
        bail!("--input {} holds no text", path.display());
    }
    Ok(inputs)
}

/// The JSON line of one input (keys in this order; `value` for a regressor instead of
/// `label`, `label_id` and `probs`).
#[derive(Serialize)]
struct Prediction<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text_b: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probs: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f32>,
    logits: &'a [f32],
}

/// The prediction of `model` for `input` from its `logits`.
fn record<'a>(model: &'a TaskModel, input: &'a Input, logits: &'a [f32]) -> Prediction<'a> {
    let class = (!model.regression).then(|| metrics::argmax(logits));
    Prediction {
        text: &input.text,
        text_b: input.text_b.as_deref(),
        label: class.map(|id| model.label_names[id as usize].as_str()),
        label_id: class,
        probs: class.map(|_| metrics::softmax(logits)),
        value: model.regression.then(|| logits[0]),
        logits,
    }
}

/// Runs `kd predict`.
pub fn run(a: &PredictArgs, global: &GlobalArgs) -> Result<()> {
    let inputs = read_inputs(a)?;
    let model = load_classifier(&a.model, &global.device()?)
        .with_context(|| format!("cannot load classifier {}", a.model.display()))?;
    let mut out = String::new();
    for chunk in inputs.chunks(a.batch_size.max(1)) {
        let encoded = (chunk.iter())
            .map(|i| model.encode(&i.text, i.text_b.as_deref(), a.max_len))
            .collect::<kd_student::Result<Vec<_>>>()?;
        let logits = model.logits(&encoded.iter().collect::<Vec<_>>())?;
        for (input, l) in chunk.iter().zip(&logits) {
            out.push_str(&serde_json::to_string(&record(&model, input, l))?);
            out.push('\n');
        }
    }
    match &a.output {
        Some(path) => kd_core::fs::write_atomic(path, out.as_bytes())
            .with_context(|| format!("cannot write {}", path.display())),
        None => super::print_stdout(&out),
    }
}
