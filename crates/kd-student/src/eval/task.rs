//! Task evaluation of classifiers (`kd eval --task-model`, a pipeline's task `eval` step):
//! BERT sequence classifiers and BiLSTM students on a task split, next to the teacher.
//!
//! For each model, on the chosen split (the movie-review set's fixed split, or task files):
//! - classification: accuracy and macro-F1 ([`metrics::macro_f1`]) against the gold labels;
//!   agreement = the share of examples where its class is the teacher's; retention = its
//!   accuracy / the teacher's;
//! - regression (`label_kind = "regression"`): Pearson, Spearman and MSE against the targets;
//!   agreement = Pearson with the teacher's predictions; retention = its Pearson / the
//!   teacher's;
//! - size: its own parameters;
//! - throughput: sentences per second of the forward pass at `batch_size` over the split
//!   (already tokenized), the models alternating batch by batch so that machine drift hits all
//!   alike, after one untimed batch each; with `timing_repeats > 1` each batch counts its
//!   fastest pass;
//! - latency: the median over `latency_calls` single-sentence calls (tokenization + forward,
//!   batch 1), the models alternating call by call.
//!
//! Labels are matched by name when the task and the model both name them (`id2label`
//! written by `kd finetune --objective classify`), else by class id; a task label the model
//! does not know is an error naming it.

pub mod metrics;
mod model;
mod table;

pub use model::{detect_family, ModelFamily, TaskModel, BILSTM_MODEL_TYPE};

use crate::{Error, Result};
use kd_data::{EncodedExample, Label, TaskData, TaskDataset, TaskSplit};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Settings of a task evaluation (the table of a pipeline's task `eval` step).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEvalSuite {
    /// The task data.
    pub task: TaskData,
    /// The split evaluated.
    #[serde(default = "default_split")]
    pub split: TaskSplit,
    /// Classifier directories (BERT classifiers, kd-bilstm), in the order of the table.
    pub models: Vec<PathBuf>,
    /// The teacher classifier, run on the same split.
    #[serde(default)]
    pub teacher: Option<PathBuf>,
    /// Examples per forward pass when measuring throughput.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest input in tokens.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Evaluate only the first N examples of the split.
    #[serde(default)]
    pub max_examples: Option<usize>,
    /// Time each batch this many times and keep the fastest.
    #[serde(default = "default_repeats")]
    pub timing_repeats: usize,
    /// Single-sentence calls whose median is the latency.
    #[serde(default = "default_latency_calls")]
    pub latency_calls: usize,
    /// Where to write the report as JSON (atomically); none when absent.
    #[serde(default)]
    pub out: Option<PathBuf>,
}

fn default_split() -> TaskSplit {
    TaskSplit::Test
}
fn default_batch_size() -> usize {
    32
}
fn default_max_len() -> usize {
    128
}
fn default_repeats() -> usize {
    1
}
fn default_latency_calls() -> usize {
    20
}

impl TaskEvalSuite {
    /// A suite of `models` on `task` with the default settings.
    pub fn new(task: TaskData, models: Vec<PathBuf>) -> Self {
        Self {
            task,
            split: default_split(),
            models,
            teacher: None,
            batch_size: default_batch_size(),
            max_len: default_max_len(),
            max_examples: None,
            timing_repeats: default_repeats(),
            latency_calls: default_latency_calls(),
            out: None,
        }
    }
}

/// What one model scored (see the module docs).
#[derive(Debug, Clone, Serialize)]
pub struct TaskModelReport {
    /// The model directory.
    pub dir: String,
    /// Its family.
    pub family: ModelFamily,
    /// Its own parameters.
    pub parameters: usize,
    /// Accuracy (classification).
    pub accuracy: Option<f64>,
    /// Macro-F1 (classification).
    pub macro_f1: Option<f64>,
    /// Pearson correlation with the targets (regression).
    pub pearson: Option<f64>,
    /// Spearman correlation with the targets (regression).
    pub spearman: Option<f64>,
    /// Mean squared error against the targets (regression).
    pub mse: Option<f64>,
    /// Share of examples with the teacher's class (regression: Pearson with the teacher).
    pub agreement: Option<f64>,
    /// Accuracy / the teacher's (regression: Pearson / the teacher's).
    pub retention: Option<f64>,
    /// Sentences per second of the batched forward pass.
    pub sentences_per_s: f64,
    /// Median milliseconds of one single-sentence call.
    pub latency_ms: f64,
    /// `sentences_per_s` / the teacher's.
    pub speedup: Option<f64>,
    /// Predicted class ids (the model's `id2label` ids), in split order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_labels: Option<Vec<u32>>,
    /// Predicted values (regression), in split order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_values: Option<Vec<f32>>,
}

/// The report of a task evaluation; `eval.json` when `out` is given.
#[derive(Debug, Clone, Serialize)]
pub struct TaskEvalReport {
    /// The task's input files.
    pub task: Vec<String>,
    /// The split evaluated.
    pub split: TaskSplit,
    /// Examples evaluated.
    pub examples: usize,
    /// Whether the task is a regression.
    pub regression: bool,
    /// The task's label names (empty for class ids and regression).
    pub label_names: Vec<String>,
    /// Examples per batch in the throughput measurement.
    pub batch_size: usize,
    /// Single-sentence calls behind each latency.
    pub latency_calls: usize,
    /// The teacher's scores, when given.
    pub teacher: Option<TaskModelReport>,
    /// One report per model, in order.
    pub models: Vec<TaskModelReport>,
}

/// Loads a classifier directory (the caller knows every family, kd-student only BERT).
pub type Loader<'a> = &'a dyn Fn(&Path) -> Result<TaskModel>;

/// Runs `suite`: loads the split, the teacher and the models through `load`, scores and times
/// them, and writes the JSON report when `suite.out` is set.
pub fn run_task_eval(suite: &TaskEvalSuite, load: Loader<'_>) -> Result<TaskEvalReport> {
    if suite.models.is_empty() {
        return Err(Error::Config("eval: `models` is empty".into()));
    }
    let mut data = suite.task.load()?.take(suite.split)?;
    if let Some(n) = suite.max_examples {
        data.examples.truncate(n);
    }
    if data.examples.is_empty() {
        return Err(Error::Config(format!(
            "{}: the {:?} split has no example",
            data.path.display(),
            suite.split
        )));
    }
    let regression = is_regression(&data);
    let names_from = match &suite.task {
        TaskData::MovieReviews { path } => path,
        TaskData::Files { train, .. } => train,
    };
    let dirs: Vec<&PathBuf> = suite.teacher.iter().chain(&suite.models).collect();
    let mut runs = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let model = load(dir)?;
        let map = label_map(&data, names_from, &model)?;
        let encoded = (data.examples.iter())
            .map(|e| model.encode(&e.text, e.text_pair.as_deref(), suite.max_len))
            .collect::<Result<Vec<_>>>()?;
        runs.push(Run {
            model,
            map,
            encoded,
            logits: Vec::new(),
            seconds: 0.0,
            latencies: Vec::new(),
        });
    }
    time_batches(
        &mut runs,
        suite.batch_size.max(1),
        suite.timing_repeats.max(1),
    )?;
    time_latency(&mut runs, &data, suite.max_len, suite.latency_calls.max(1))?;
    let mut reports: Vec<TaskModelReport> =
        (runs.iter()).map(|r| score(r, &data, regression)).collect();
    let teacher = match suite.teacher {
        Some(_) => {
            let t = reports.remove(0);
            let (t_preds, _) = task_predictions(&runs[0], &data, regression);
            for (report, run) in reports.iter_mut().zip(&runs[1..]) {
                compare(report, run, &t, &t_preds, &data, regression);
            }
            Some(t)
        }
        None => None,
    };
    let report = TaskEvalReport {
        task: (suite.task.files().iter())
            .map(|p| p.display().to_string())
            .collect(),
        split: suite.split,
        examples: data.examples.len(),
        regression,
        label_names: data.label_names.clone(),
        batch_size: suite.batch_size.max(1),
        latency_calls: suite.latency_calls.max(1),
        teacher,
        models: reports,
    };
    if let Some(out) = &suite.out {
        write_json_atomic(out, &report)?;
    }
    Ok(report)
}

/// Writes `value` as pretty JSON, atomically.
fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
    }
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Config(format!("cannot encode {}: {e}", path.display())))?;
    Ok(kd_core::fs::write_atomic(path, (text + "\n").as_bytes())?)
}

/// Whether `data` holds regression targets.
fn is_regression(data: &TaskDataset) -> bool {
    (data.examples.first()).is_some_and(|e| matches!(e.label, Label::Value(_)))
}

/// A model in an evaluation: its encoded split, its outputs and its timings.
struct Run {
    model: TaskModel,
    /// Task class id of each of the model's class ids (the task's class count for a class
    /// the task does not have); empty for regression.
    map: Vec<u32>,
    encoded: Vec<EncodedExample>,
    logits: Vec<Vec<f32>>,
    seconds: f64,
    latencies: Vec<f64>,
}

/// How the model's class ids map to the task's (see [`Run::map`]); refuses a task label the
/// model does not know, and a regression task for a classifier or the reverse.
/// `names_from` is the file the task's label names come from (the training file).
fn label_map(data: &TaskDataset, names_from: &Path, model: &TaskModel) -> Result<Vec<u32>> {
    let (path, dir) = (data.path.display(), model.dir.display());
    match (is_regression(data), model.regression) {
        (true, true) => return Ok(Vec::new()),
        (true, false) => {
            return Err(Error::Config(format!(
                "{path} holds regression targets; {dir} is a classifier with {} classes",
                model.num_outputs()
            )))
        }
        (false, true) => {
            return Err(Error::Config(format!(
                "{path} holds class labels; {dir} is a regressor (one output)"
            )))
        }
        (false, false) => {}
    }
    let other = data.num_labels as u32;
    let names = &model.label_names;
    if !data.label_names.is_empty() && model.has_named_labels() {
        let mut map = vec![other; names.len()];
        for (task_id, name) in data.label_names.iter().enumerate() {
            let Some(m) = names.iter().position(|n| n == name) else {
                return Err(Error::Config(format!(
                    "label {name:?} of the task (labels of {}) is not one of the labels of {dir} \
                     ({})",
                    names_from.display(),
                    names.join(", ")
                )));
            };
            map[m] = task_id as u32;
        }
        return Ok(map);
    }
    if let Some(ex) =
        (data.examples.iter()).find(|e| e.label.class().unwrap_or(0) as usize >= names.len())
    {
        let id = ex.label.class().unwrap_or(0);
        let label = match data.label_names.get(id as usize) {
            Some(name) => format!("label {name:?} (class {id})"),
            None => format!("label {id}"),
        };
        return Err(Error::Config(format!(
            "{label} at {path} line {}: {dir} knows {} classes ({})",
            ex.line,
            names.len(),
            names.join(", ")
        )));
    }
    Ok((0..names.len() as u32).map(|i| i.min(other)).collect())
}

/// Runs every model over the split in batches, alternating which model runs first batch by
/// batch; keeps the first pass's logits and the fastest pass of each batch.
fn time_batches(runs: &mut [Run], batch_size: usize, repeats: usize) -> Result<()> {
    let n = runs[0].encoded.len();
    let k = runs.len();
    for r in runs.iter_mut() {
        // Warm-up, untimed.
        let first: Vec<&EncodedExample> = r.encoded.iter().take(batch_size).collect();
        r.model.logits(&first)?;
    }
    for (b, start) in (0..n).step_by(batch_size).enumerate() {
        let end = (start + batch_size).min(n);
        let mut best = vec![f64::INFINITY; k];
        for rep in 0..repeats {
            for i in 0..k {
                let m = (i + b + rep) % k;
                let run = &mut runs[m];
                let batch: Vec<&EncodedExample> = run.encoded[start..end].iter().collect();
                let t = Instant::now();
                let logits = run.model.logits(&batch)?;
                best[m] = best[m].min(t.elapsed().as_secs_f64());
                if rep == 0 {
                    run.logits.extend(logits);
                }
            }
        }
        for (run, s) in runs.iter_mut().zip(best) {
            run.seconds += s;
        }
    }
    Ok(())
}

/// `calls` single-sentence calls per model (text in, logits out), alternating the models.
fn time_latency(runs: &mut [Run], data: &TaskDataset, max_len: usize, calls: usize) -> Result<()> {
    let k = runs.len();
    for c in 0..calls {
        let ex = &data.examples[c % data.examples.len()];
        for i in 0..k {
            let run = &mut runs[(i + c) % k];
            let t = Instant::now();
            let enc = run
                .model
                .encode(&ex.text, ex.text_pair.as_deref(), max_len)?;
            run.model.logits(&[&enc])?;
            run.latencies.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(())
}

/// A run's predictions in task class ids (classification) and as values (regression).
fn task_predictions(run: &Run, data: &TaskDataset, regression: bool) -> (Vec<u32>, Vec<f64>) {
    if regression {
        let v = run.logits.iter().map(|l| f64::from(l[0])).collect();
        return (Vec::new(), v);
    }
    let other = data.num_labels as u32;
    let p = (run.logits.iter())
        .map(|l| *run.map.get(metrics::argmax(l) as usize).unwrap_or(&other))
        .collect();
    (p, Vec::new())
}

/// A run's quality and speed on its own (agreement and retention come from [`compare`]).
fn score(run: &Run, data: &TaskDataset, regression: bool) -> TaskModelReport {
    let (preds, values) = task_predictions(run, data, regression);
    let gold_ids: Vec<u32> = (data.examples.iter())
        .map(|e| e.label.class().unwrap_or(0))
        .collect();
    let gold_values: Vec<f64> = (data.examples.iter())
        .map(|e| f64::from(e.label.as_f32()))
        .collect();
    let (cls, reg) = (!regression, regression);
    TaskModelReport {
        dir: run.model.dir.display().to_string(),
        family: run.model.family,
        parameters: run.model.parameters,
        accuracy: metrics::agreement(&preds, &gold_ids).filter(|_| cls),
        macro_f1: metrics::macro_f1(&preds, &gold_ids).filter(|_| cls),
        pearson: metrics::pearson(&values, &gold_values).filter(|_| reg),
        spearman: metrics::spearman(&values, &gold_values).filter(|_| reg),
        mse: metrics::mse(&values, &gold_values).filter(|_| reg),
        agreement: None,
        retention: None,
        sentences_per_s: run.encoded.len() as f64 / run.seconds.max(1e-12),
        latency_ms: metrics::median(&run.latencies).unwrap_or(0.0),
        speedup: None,
        predicted_labels: cls.then(|| run.logits.iter().map(|l| metrics::argmax(l)).collect()),
        predicted_values: reg.then(|| run.logits.iter().map(|l| l[0]).collect()),
    }
}

/// Agreement, retention and speed-up of a model's report against the teacher's.
fn compare(
    report: &mut TaskModelReport,
    run: &Run,
    teacher: &TaskModelReport,
    t_preds: &[u32],
    data: &TaskDataset,
    regression: bool,
) {
    let (preds, values) = task_predictions(run, data, regression);
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b.filter(|&b| b != 0.0)).map(|(a, b)| a / b);
    if regression {
        let t_values: Vec<f64> = teacher
            .predicted_values
            .iter()
            .flatten()
            .map(|&v| v.into())
            .collect();
        report.agreement = metrics::pearson(&values, &t_values);
        report.retention = ratio(report.pearson, teacher.pearson);
    } else {
        report.agreement = metrics::agreement(&preds, t_preds);
        report.retention = ratio(report.accuracy, teacher.accuracy);
    }
    report.speedup = Some(report.sentences_per_s / teacher.sentences_per_s.max(1e-12));
}

#[cfg(test)]
mod tests {
    use super::*;
    use kd_data::TaskExample;

    fn dataset(labels: &[Label], names: &[&str]) -> TaskDataset {
        TaskDataset {
            path: "task.tsv".into(),
            examples: (labels.iter().enumerate())
                .map(|(i, &label)| TaskExample {
                    line: i + 2,
                    text: format!("text {i}"),
                    text_pair: None,
                    label,
                })
                .collect(),
            label_names: names.iter().map(|s| s.to_string()).collect(),
            num_labels: names.len().max(2),
        }
    }

    #[test]
    fn retention_and_agreement_from_hand_built_predictions() {
        // Gold 0 1 1 0; teacher predicts 0 1 1 1 (accuracy 3/4); student 0 1 0 1 (2/4).
        let data = dataset(
            &[
                Label::Class(0),
                Label::Class(1),
                Label::Class(1),
                Label::Class(0),
            ],
            &[],
        );
        let gold = [0, 1, 1, 0];
        let (t, s) = ([0, 1, 1, 1], [0, 1, 0, 1]);
        let (ta, sa) = (
            metrics::agreement(&t, &gold).unwrap(),
            metrics::agreement(&s, &gold).unwrap(),
        );
        assert_eq!((ta, sa), (0.75, 0.5));
        assert_eq!(metrics::agreement(&s, &t), Some(0.75));
        let teacher = TaskModelReport {
            dir: "t".into(),
            family: ModelFamily::BertClassifier,
            parameters: 10,
            accuracy: Some(ta),
            macro_f1: None,
            pearson: None,
            spearman: None,
            mse: None,
            agreement: None,
            retention: None,
            sentences_per_s: 100.0,
            latency_ms: 1.0,
            speedup: None,
            predicted_labels: None,
            predicted_values: None,
        };
        let mut student = TaskModelReport {
            accuracy: Some(sa),
            sentences_per_s: 250.0,
            ..teacher.clone()
        };
        // A run whose logits give the student's predictions through the identity map.
        let logits = s.iter().map(|&c| {
            if c == 0 {
                vec![1.0, 0.0]
            } else {
                vec![0.0, 1.0]
            }
        });
        let run = Run {
            model: tiny_classifier(),
            map: vec![0, 1],
            encoded: Vec::new(),
            logits: logits.collect(),
            seconds: 0.0,
            latencies: Vec::new(),
        };
        compare(&mut student, &run, &teacher, &t, &data, false);
        assert_eq!(student.agreement, Some(0.75));
        assert_eq!(student.retention, Some(0.5 / 0.75));
        assert_eq!(student.speedup, Some(2.5));
    }

    /// The tiny random classifier fixture with a 99-word vocabulary beside it.
    fn tiny_classifier() -> TaskModel {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny_cls");
        for f in ["config.json", "pytorch_model.bin"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .map(String::from)
            .to_vec();
        vocab.extend((5..99).map(|i| format!("w{i}")));
        std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
        TaskModel::load_bert(dir, &candle_core::Device::Cpu).unwrap()
    }

    #[test]
    fn labels_map_by_name_by_id_and_unknown_ones_are_named() {
        let mut model = tiny_classifier();
        let p = Path::new("train.tsv");
        assert_eq!(model.label_names, ["LABEL_0", "LABEL_1", "LABEL_2"]);
        // Class ids: identity, the model's third class is outside a two-class task.
        let ids = dataset(&[Label::Class(0), Label::Class(1)], &[]);
        assert_eq!(label_map(&ids, p, &model).unwrap(), [0, 1, 2]);
        let far = dataset(&[Label::Class(0), Label::Class(3)], &[]);
        let e = label_map(&far, p, &model).unwrap_err().to_string();
        assert!(
            e.contains("label 3 at task.tsv line 3") && e.contains("3 classes"),
            "{e}"
        );
        // Named on both sides: by name, whatever the order.
        model.label_names = vec!["pos".into(), "neu".into(), "neg".into()];
        let named = dataset(&[Label::Class(0), Label::Class(1)], &["neg", "pos"]);
        assert_eq!(label_map(&named, p, &model).unwrap(), [1, 2, 0]);
        let unknown = dataset(&[Label::Class(0)], &["neg", "mixed"]);
        let e = label_map(&unknown, p, &model).unwrap_err().to_string();
        assert!(
            e.contains("\"mixed\"") && e.contains("pos, neu, neg"),
            "{e}"
        );
        // Regression on one side only.
        let reg = dataset(&[Label::Value(0.5)], &[]);
        let e = label_map(&reg, p, &model).unwrap_err().to_string();
        assert!(e.contains("regression") && e.contains("3 classes"), "{e}");
    }
}
