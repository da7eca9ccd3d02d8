//! Sequence-classification fine-tuning (teacher preparation for task distillation): trains on
//! a task's train split, evaluates on dev after each epoch, keeps the best model, and reports
//! dev and test accuracy of that model.

use crate::error::to_train;
use crate::evaluate::{classification_accuracy, classification_loss, ClassifyEval};
use crate::mlm::write_report;
use crate::Result;
use candle_core::Device;
use kd_bert::checkpoint::save_hf_dir;
use kd_bert::tokenizer::load_tokenizer;
use kd_bert::{load_model, Architecture, Bert, BertInput, ForwardCtx, LoadOptions};
use kd_data::{
    collate, encode_dataset, length_grouped_batches, BatchItem, EncodedExample, GroupConfig,
    TaskData, TextEncoder,
};
use kd_train::{run_training, AdamW, AdamWConfig, LoopConfig, MicroBatch, TrainTask};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Settings of a classification fine-tuning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifyConfig {
    /// Model directory (a classifier head is created when absent).
    pub model: PathBuf,
    /// The task data.
    pub data: TaskData,
    /// Output directory: `model/` (best on dev), `metrics.jsonl`, `checkpoints/`,
    /// `report.json`.
    pub out: PathBuf,
    /// Longest encoded example.
    pub max_len: usize,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Optimisation settings.
    pub train: LoopConfig,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            data: TaskData::MovieReviews {
                path: PathBuf::from("assets/movie-reviews/movieReviewSnippets_GroundTruth.txt"),
            },
            out: PathBuf::from("runs/classify"),
            max_len: 128,
            batch_size: 32,
            train: LoopConfig {
                lr: 5e-5,
                epochs: 3,
                warmup_fraction: 0.1,
                ..LoopConfig::default()
            },
        }
    }
}

/// Outcome of a classification run (also `out/report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ClassifyReport {
    /// Dev quality of the model before training (fresh head).
    pub dev_before: ClassifyEval,
    /// Dev quality of the kept (best) model.
    pub dev: ClassifyEval,
    /// Test quality of the kept model.
    pub test: Option<ClassifyEval>,
    /// Epoch at which the kept model was reached.
    pub best_epoch: Option<u64>,
    /// Examples per split.
    pub train_examples: usize,
    /// Optimizer steps.
    pub steps: u64,
    /// Training throughput of this process.
    pub tokens_per_s: f64,
    /// The saved (best) model directory.
    pub model_dir: PathBuf,
}

struct ClassifyTask<'a> {
    model: &'a Bert,
    /// The same weights without autograd, for evaluation.
    infer: Bert,
    varmap: &'a candle_nn::VarMap,
    train: Vec<EncodedExample>,
    dev: Vec<EncodedExample>,
    group: GroupConfig,
    seed: u64,
    pad: u32,
    device: Device,
    best: Option<(f64, u64)>,
    save_to: PathBuf,
    tokenizer_from: PathBuf,
}

impl TrainTask for ClassifyTask<'_> {
    fn epoch_batches(&mut self, epoch: u64) -> kd_train::Result<Vec<Vec<usize>>> {
        let lengths: Vec<usize> = self.train.iter().map(|e| e.input_ids.len()).collect();
        length_grouped_batches(&lengths, &self.group, self.seed, epoch)
            .map_err(|e| to_train(e.into()))
    }

    fn micro_batch(
        &mut self,
        _index: usize,
        idx: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> kd_train::Result<MicroBatch> {
        self.step(idx, rng).map_err(to_train)
    }

    fn end_of_epoch(&mut self, epoch: u64, step: u64) -> kd_train::Result<serde_json::Value> {
        let e = classification_accuracy(&self.infer, &self.dev, 64, self.pad, &self.device)
            .map_err(to_train)?;
        let improved = self.best.is_none_or(|(b, _)| e.accuracy > b);
        if improved {
            self.best = Some((e.accuracy, epoch));
            save_hf_dir(
                self.model,
                self.varmap,
                &self.save_to,
                Some(&self.tokenizer_from),
            )
            .map_err(|e| to_train(e.into()))?;
        }
        Ok(
            serde_json::json!({"epoch": epoch, "step": step, "dev_accuracy": e.accuracy,
            "dev_loss": e.loss, "kept": improved}),
        )
    }

    fn task_state(&self) -> serde_json::Value {
        serde_json::json!({ "best": self.best })
    }

    fn restore_task_state(&mut self, state: &serde_json::Value) -> kd_train::Result<()> {
        self.best = serde_json::from_value(state["best"].clone()).unwrap_or(None);
        Ok(())
    }
}

impl ClassifyTask<'_> {
    fn step(&self, idx: &[usize], rng: &mut ChaCha8Rng) -> Result<MicroBatch> {
        let items: Vec<BatchItem> = idx
            .iter()
            .map(|&i| BatchItem::task(i as u64, &self.train[i]))
            .collect();
        let batch = collate(&items, self.pad)?;
        let mut ctx = ForwardCtx::train(rng);
        let out =
            self.model
                .encode(&BertInput::from_batch(&batch, &self.device)?, &[], &mut ctx)?;
        let logits = self.model.classify(&out, &mut ctx)?;
        let (loss, hits) = classification_loss(&logits, &batch.labels)?;
        Ok(MicroBatch {
            loss,
            terms: BTreeMap::from([("train_accuracy".to_string(), hits as f64 / idx.len() as f64)]),
            tokens: batch.num_tokens(),
        })
    }
}

/// Runs classification fine-tuning as configured, resuming from `out/checkpoints` if present.
pub fn run_classify(cfg: &ClassifyConfig, device: &Device) -> Result<ClassifyReport> {
    let _lock = crate::claim_run_dir(&cfg.out, "kd finetune --objective classify", cfg)?;
    let splits = cfg.data.load()?;
    let tokenizer = load_tokenizer(&cfg.model)?;
    let encoder = TextEncoder::new(&tokenizer)?;
    let pad = encoder.specials().pad;
    let train = encode_dataset(&splits.train, &encoder, cfg.max_len)?;
    let dev = encode_dataset(&splits.dev, &encoder, cfg.max_len)?;
    let test = splits
        .test
        .as_ref()
        .map(|t| encode_dataset(t, &encoder, cfg.max_len))
        .transpose()?;
    let opts = LoadOptions {
        architecture: Some(Architecture::SequenceClassification),
        fresh_heads: true,
        num_labels: Some(splits.train.num_labels),
        seed: cfg.train.seed,
        device: device.clone(),
        ..LoadOptions::default()
    };
    let mut loaded = load_model(&cfg.model, &opts)?;
    if splits.train.num_labels == 1 {
        loaded.model.config.problem_type = Some("regression".into());
    } else if !splits.train.label_names.is_empty() {
        let n = splits.train.num_labels;
        loaded
            .model
            .config
            .set_labels(Some(&splits.train.label_names), n);
    }
    let infer = loaded.inference_model()?;
    let dev_before = classification_accuracy(&infer, &dev, 64, pad, device)?;
    let mut opt = AdamW::new(
        &loaded.varmap,
        AdamWConfig {
            lr: cfg.train.lr,
            ..AdamWConfig::default()
        },
    )?;
    let model_dir = cfg.out.join("model");
    let mut task = ClassifyTask {
        model: &loaded.model,
        infer,
        varmap: &loaded.varmap,
        train,
        dev,
        group: GroupConfig {
            batch_size: cfg.batch_size,
            window_batches: 100,
        },
        seed: cfg.train.seed,
        pad,
        device: device.clone(),
        best: None,
        save_to: model_dir.clone(),
        tokenizer_from: cfg.model.clone(),
    };
    let summary = run_training(
        &mut task,
        &loaded.varmap,
        &mut opt,
        &cfg.train,
        &cfg.out,
        device,
    )?;
    if task.best.is_none() {
        // No epoch ended (`epochs = 0`): the starting model is the one kept.
        save_hf_dir(&loaded.model, &loaded.varmap, &model_dir, Some(&cfg.model))?;
    }
    let best_epoch = task.best.map(|(_, e)| e);
    let train_examples = task.train.len();
    // Evaluate the kept model, as saved.
    let kept = load_model(
        &model_dir,
        &LoadOptions {
            device: device.clone(),
            ..LoadOptions::default()
        },
    )?;
    let kept = kept.inference_model()?;
    let dev_eval = classification_accuracy(&kept, &task.dev, 64, pad, device)?;
    let test_eval = test
        .as_ref()
        .map(|t| classification_accuracy(&kept, t, 64, pad, device))
        .transpose()?;
    let report = ClassifyReport {
        dev_before,
        dev: dev_eval,
        test: test_eval,
        best_epoch,
        train_examples,
        steps: summary.steps,
        tokens_per_s: summary.tokens_per_s,
        model_dir,
    };
    write_report(&cfg.out, &report)?;
    Ok(report)
}
