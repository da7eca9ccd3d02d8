//! MLM fine-tuning on a text corpus: fits (or adapts) a teacher's masked-LM head, attaching a
//! fresh head with its decoder tied to the word embeddings when the checkpoint has none.

use crate::error::to_train;
use crate::evaluate::{mlm_accuracy, MlmEval};
use crate::tensors::mlm_targets;
use crate::{Error, Result};
use candle_core::{DType, Device};
use kd_bert::checkpoint::save_hf_dir;
use kd_bert::model::gather_positions;
use kd_bert::tokenizer::load_tokenizer;
use kd_bert::{load_model, Architecture, Bert, BertInput, ForwardCtx, LoadOptions};
use kd_data::{
    collate, length_grouped_batches, pack_corpus, BatchItem, Corpus, CorpusFormat, GroupConfig,
    MaskConfig, MaskedSequence, Masker, PackConfig, PackedSequence, TextEncoder,
};
use kd_train::{run_training, AdamW, AdamWConfig, LoopConfig, MicroBatch, TrainTask};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Settings of an MLM fine-tuning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlmConfig {
    /// Model directory (any BERT checkpoint; a missing MLM head is created).
    pub model: PathBuf,
    /// Corpus files or folders (one paragraph per line; JSONL with `text_field`).
    pub corpus: Vec<PathBuf>,
    /// JSONL text field; plain text when absent.
    pub text_field: Option<String>,
    /// The last this-many documents (in file order) are held out for evaluation; a corpus
    /// with no more documents than that (a single file) holds out the last 10% of its
    /// sequences instead.
    pub heldout_docs: usize,
    /// Output directory: `model/` (HF directory), `metrics.jsonl`, `checkpoints/`,
    /// `report.json`.
    pub out: PathBuf,
    /// Longest packed sequence.
    pub max_len: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Train on a seeded sample of at most this many sequences.
    pub max_train_sequences: Option<usize>,
    /// Evaluate on at most this many held-out sequences.
    pub max_eval_sequences: usize,
    /// Train only the MLM head (encoder and the tied embeddings stay fixed).
    pub freeze_encoder: bool,
    /// Train only the top this-many encoder layers and the head (embeddings, the tied decoder
    /// and the layers below stay fixed); overrides `freeze_encoder`.
    pub trainable_layers: Option<usize>,
    /// Masking of training and evaluation sequences.
    pub mask: MaskConfig,
    /// Seed of the evaluation masks (fixed so that runs compare).
    pub eval_seed: u64,
    /// Optimisation settings.
    pub train: LoopConfig,
}

impl Default for MlmConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            corpus: Vec::new(),
            text_field: None,
            heldout_docs: 10,
            out: PathBuf::from("runs/mlm"),
            max_len: 128,
            batch_size: 32,
            max_train_sequences: None,
            max_eval_sequences: 1000,
            freeze_encoder: false,
            trainable_layers: None,
            mask: MaskConfig::default(),
            eval_seed: 1234,
            train: LoopConfig {
                lr: 1e-4,
                warmup_fraction: 0.05,
                ..LoopConfig::default()
            },
        }
    }
}

/// Outcome of an MLM fine-tuning run (also written to `out/report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct MlmReport {
    /// Held-out masked-token accuracy before training.
    pub before: MlmEval,
    /// Held-out masked-token accuracy after training.
    pub after: MlmEval,
    /// Sequences trained on / evaluated on.
    pub train_sequences: usize,
    /// Held-out sequences.
    pub eval_sequences: usize,
    /// Documents used for training and held out.
    pub train_docs: usize,
    /// Held-out documents (the last ones in file order).
    pub heldout_docs: usize,
    /// Encoder layers left untrained (the embeddings are frozen too when > 0).
    pub frozen_layers: usize,
    /// Heads created fresh because the checkpoint lacked them.
    pub fresh_parameters: Vec<String>,
    /// Optimizer steps.
    pub steps: u64,
    /// Training throughput of this process.
    pub tokens_per_s: f64,
    /// The saved model directory.
    pub model_dir: PathBuf,
}

struct MlmTask<'a> {
    model: &'a Bert,
    /// The same weights without autograd (views that follow every update), for evaluation and
    /// for the frozen encoder.
    infer: Bert,
    sequences: Vec<PackedSequence>,
    masker: Masker,
    group: GroupConfig,
    seed: u64,
    epoch: u64,
    /// Encoder layers below the trainable top (all of them: head only; 0: everything trains).
    frozen_layers: usize,
    pad: u32,
    device: Device,
    eval: &'a [(u64, MaskedSequence)],
}

impl TrainTask for MlmTask<'_> {
    fn epoch_batches(&mut self, epoch: u64) -> kd_train::Result<Vec<Vec<usize>>> {
        self.epoch = epoch;
        let lengths: Vec<usize> = self.sequences.iter().map(|s| s.input_ids.len()).collect();
        length_grouped_batches(&lengths, &self.group, self.seed, epoch)
            .map_err(|e| to_train(e.into()))
    }

    fn micro_batch(
        &mut self,
        _index: usize,
        batch: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> kd_train::Result<MicroBatch> {
        self.step(batch, rng).map_err(to_train)
    }

    fn end_of_epoch(&mut self, epoch: u64, step: u64) -> kd_train::Result<serde_json::Value> {
        let e =
            mlm_accuracy(self.model, self.eval, 64, self.pad, &self.device).map_err(to_train)?;
        Ok(
            serde_json::json!({"epoch": epoch, "step": step, "heldout_top1": e.top1, "heldout_loss": e.loss}),
        )
    }
}

impl MlmTask<'_> {
    fn step(&self, idx: &[usize], rng: &mut ChaCha8Rng) -> Result<MicroBatch> {
        let masked: Vec<MaskedSequence> = idx
            .iter()
            .map(|&i| {
                let s = &self.sequences[i];
                self.masker.mask(&s.input_ids, self.seed, self.epoch, s.id)
            })
            .collect();
        let items: Vec<BatchItem> = idx
            .iter()
            .zip(&masked)
            .map(|(&i, m)| BatchItem::masked(self.sequences[i].id, m))
            .collect();
        let batch = collate(&items, self.pad)?;
        let input = BertInput::from_batch(&batch, &self.device)?;
        let out = if self.frozen_layers == 0 {
            self.model
                .encode(&input, &[], &mut ForwardCtx::train(rng))?
        } else {
            let mut ctx = ForwardCtx::train(rng);
            self.model.encode_frozen_bottom(
                &self.infer,
                self.frozen_layers,
                &input,
                &[],
                &mut ctx,
            )?
        };
        let hidden = out.last_hidden_state();
        let (pos, labels) = mlm_targets(&batch, &self.device)?;
        let logits = self.model.mlm_logits(&gather_positions(hidden, &pos)?)?;
        let loss = candle_nn::loss::cross_entropy(&logits.to_dtype(DType::F32)?, &labels)?;
        Ok(MicroBatch {
            loss,
            terms: BTreeMap::new(),
            tokens: batch.num_tokens(),
        })
    }
}

/// Share of the sequences held out when the corpus has too few documents to hold out
/// `heldout_docs` whole ones (e.g. a single file).
pub const HELDOUT_SHARE: f64 = 0.1;

/// Splits packed sequences into (held out, training, documents held out): the last
/// `heldout_docs` documents, or, when the corpus has no more documents than that, the last
/// [`HELDOUT_SHARE`] of its sequences (whole paragraphs: packing never splits one between two
/// sequences unless it is longer than one).
fn split_heldout(
    sequences: Vec<PackedSequence>,
    n_docs: usize,
    cfg: &MlmConfig,
) -> Result<(Vec<PackedSequence>, Vec<PackedSequence>, usize)> {
    if cfg.heldout_docs < n_docs {
        let first = (n_docs - cfg.heldout_docs) as u32;
        let (heldout, train) = sequences.into_iter().partition(|s| s.doc >= first);
        return Ok((heldout, train, cfg.heldout_docs));
    }
    let n = sequences.len();
    if n < 2 {
        return Err(Error::Config(format!(
            "mlm: the corpus packs into {n} sequence(s): too little to train and hold out"
        )));
    }
    let k = ((n as f64 * HELDOUT_SHARE).ceil() as usize).clamp(1, n - 1);
    eprintln!(
        "mlm: the corpus has {n_docs} document(s), not more than heldout_docs = {}: holding out \
         its last {k} of {n} sequences instead",
        cfg.heldout_docs
    );
    let mut train = sequences;
    let heldout = train.split_off(n - k);
    Ok((heldout, train, 0))
}

/// Runs MLM fine-tuning as configured, resuming from `out/checkpoints` if present.
pub fn run_mlm(cfg: &MlmConfig, device: &Device) -> Result<MlmReport> {
    if cfg.corpus.is_empty() {
        return Err(Error::Config("mlm: no corpus given".into()));
    }
    let _lock = crate::claim_run_dir(&cfg.out, "kd finetune --objective mlm", cfg)?;
    let tokenizer = load_tokenizer(&cfg.model)?;
    let encoder = TextEncoder::new(&tokenizer)?;
    let format = match &cfg.text_field {
        Some(f) => CorpusFormat::Jsonl {
            text_field: f.clone(),
        },
        None => CorpusFormat::Text,
    };
    let corpus = Corpus::load(&cfg.corpus, &format)?;
    let n_docs = corpus.documents.len();
    let pack = PackConfig {
        max_len: cfg.max_len,
        ..PackConfig::default()
    };
    let packed = pack_corpus(&corpus, &encoder, &pack)?;
    let (heldout, mut train, heldout_docs) = split_heldout(packed.sequences, n_docs, cfg)?;
    if let Some(max) = cfg.max_train_sequences {
        if train.len() > max {
            let order = kd_train::epoch_order(cfg.train.seed, u64::MAX, train.len());
            let mut keep: Vec<usize> = order.into_iter().take(max).collect();
            keep.sort_unstable();
            train = keep.into_iter().map(|i| train[i].clone()).collect();
        }
    }
    let specials = encoder.specials();
    let masker = Masker::new(cfg.mask, specials, encoder.vocab_size(), None)?;
    let eval: Vec<(u64, MaskedSequence)> = heldout
        .iter()
        .take(cfg.max_eval_sequences)
        .map(|s| (s.id, masker.mask(&s.input_ids, cfg.eval_seed, 0, s.id)))
        .collect();

    let opts = LoadOptions {
        architecture: Some(Architecture::MaskedLm),
        fresh_heads: true,
        seed: cfg.train.seed,
        device: device.clone(),
        ..LoadOptions::default()
    };
    let loaded = load_model(&cfg.model, &opts)?;
    let infer = loaded.inference_model()?;
    let before = mlm_accuracy(&infer, &eval, 64, specials.pad, device)?;
    let layers = loaded.model.config.num_hidden_layers;
    let frozen_layers = match (cfg.trainable_layers, cfg.freeze_encoder) {
        (Some(t), _) if t > layers => {
            return Err(Error::Config(format!(
                "mlm: trainable_layers = {t} but the model has {layers} layers"
            )))
        }
        (Some(t), _) => layers - t,
        (None, true) => layers,
        (None, false) => 0,
    };
    let mut opt = AdamW::builder(AdamWConfig {
        lr: cfg.train.lr,
        ..AdamWConfig::default()
    })
    .freeze_when(move |n| is_frozen(n, frozen_layers))
    .build(&loaded.varmap)?;
    let mut task = MlmTask {
        model: &loaded.model,
        infer,
        sequences: train,
        masker,
        group: GroupConfig {
            batch_size: cfg.batch_size,
            window_batches: 100,
        },
        seed: cfg.train.seed,
        epoch: 0,
        frozen_layers,
        pad: specials.pad,
        device: device.clone(),
        eval: &eval,
    };
    let summary = run_training(
        &mut task,
        &loaded.varmap,
        &mut opt,
        &cfg.train,
        &cfg.out,
        device,
    )?;
    let after = mlm_accuracy(&task.infer, &eval, 64, specials.pad, device)?;
    let model_dir = cfg.out.join("model");
    save_hf_dir(&loaded.model, &loaded.varmap, &model_dir, Some(&cfg.model))?;
    let report = MlmReport {
        before,
        after,
        train_sequences: task.sequences.len(),
        eval_sequences: eval.len(),
        train_docs: n_docs - heldout_docs,
        heldout_docs,
        frozen_layers,
        fresh_parameters: loaded.report.initialized.clone(),
        steps: summary.steps,
        tokens_per_s: summary.tokens_per_s,
        model_dir,
    };
    write_report(&cfg.out, &report)?;
    Ok(report)
}

/// Whether parameter `name` stays fixed when the embeddings and the first `frozen_layers`
/// encoder layers are frozen (the pooler is unused by MLM and frozen with them).
fn is_frozen(name: &str, frozen_layers: usize) -> bool {
    if frozen_layers == 0 {
        return false;
    }
    if name.starts_with("bert.embeddings.") || name.starts_with("bert.pooler.") {
        return true;
    }
    name.strip_prefix("bert.encoder.layer.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|i| i.parse::<usize>().ok())
        .is_some_and(|i| i < frozen_layers)
}

/// Writes `report.json` atomically.
pub(crate) fn write_report(out: &std::path::Path, report: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(report).expect("report serialises");
    Ok(kd_core::fs::write_atomic(
        &out.join("report.json"),
        text.as_bytes(),
    )?)
}
