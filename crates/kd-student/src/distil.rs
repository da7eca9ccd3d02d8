//! DistilBERT distillation from a cache: soft-target cross-entropy over the cached top-k (or
//! sampled) teacher distribution at temperature T, masked-LM cross-entropy, and the cosine loss
//! between student and teacher last hidden states, weighted (defaults 5 / 2 / 1, T = 2). The
//! student's vocabulary projection runs only at masked positions; the teacher is never loaded.

use crate::error::to_train;
use crate::stream::{CachePlan, Prefetcher, StreamConfig, Window};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use kd_bert::checkpoint::save_hf_dir;
use kd_bert::model::gather_positions;
use kd_bert::tokenizer::{sha256_file, tokenizer_source};
use kd_bert::{Bert, BertInput, ForwardCtx, LoadedModel};
use kd_cache::reader::CacheReader;
use kd_cache::{Expectation, LayerSpec, Precision, Record, TargetSpec, TopKSpec};
use kd_distill::{
    cosine_embedding, mlm_cross_entropy, soft_target_sampled, soft_target_topk, LossWeights,
    SampledTargets, SoftTargetConfig, TailMode, TopKTargets,
};
use kd_train::{run_training, AdamW, AdamWConfig, LoopConfig, MicroBatch, TrainTask};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// Loss settings (DistilBERT's released model: ce 5, mlm 2, cos 1, T 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistilLoss {
    /// Soft-target temperature (must be stored in the cache for top-k targets).
    pub temperature: f32,
    /// Weight of the soft-target term.
    pub ce: f64,
    /// Weight of the masked-LM term.
    pub mlm: f64,
    /// Weight of the cosine term on the last hidden state.
    pub cos: f64,
    /// Multiply the soft-target term by T^2 (Hinton; DistilBERT does).
    pub t2_scaling: bool,
    /// Mass outside the cached top-k: `rest_bucket` (k+1-th bucket) or `renormalize`.
    pub tail: TailMode,
    /// Soft targets from `topk` or `sampled` records.
    pub soft_targets: SoftTargetSource,
}

/// Where the soft targets come from in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SoftTargetSource {
    /// The stored top-k logits and log-partitions (`mlm-topk` targets).
    #[default]
    Topk,
    /// The stored draws from the teacher's distribution (`mlm-sampled` targets).
    Sampled,
}

impl DistilLoss {
    /// Fails, naming the key, on a weight that is not a finite number >= 0, on weights that
    /// are all 0, or on a temperature that is not a finite number > 0.
    pub fn validate(&self) -> Result<()> {
        for (key, w) in [("ce", self.ce), ("mlm", self.mlm), ("cos", self.cos)] {
            if !w.is_finite() || w < 0.0 {
                return Err(Error::Config(format!(
                    "loss.{key} = {w}: a loss weight must be a finite number >= 0"
                )));
            }
        }
        if self.ce + self.mlm + self.cos == 0.0 {
            return Err(Error::Config(
                "loss weights ce, mlm and cos are all 0: nothing would be trained".into(),
            ));
        }
        if !self.temperature.is_finite() || self.temperature <= 0.0 {
            return Err(Error::Config(format!(
                "loss.temperature = {}: the temperature must be a finite number > 0",
                self.temperature
            )));
        }
        Ok(())
    }
}

impl Default for DistilLoss {
    fn default() -> Self {
        Self {
            temperature: 2.0,
            ce: 5.0,
            mlm: 2.0,
            cos: 1.0,
            t2_scaling: true,
            tail: TailMode::RestBucket,
            soft_targets: SoftTargetSource::Topk,
        }
    }
}

/// Which student to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StudentSpec {
    /// Initialise from these teacher layers (0-based) of `teacher` (DistilBERT).
    pub teacher: Option<PathBuf>,
    /// Layers (0-based) of `teacher` or `init` to copy.
    pub layers: Vec<usize>,
    /// Or initialise the same way from `layers` of this model, which need not be the teacher
    /// that wrote the cache: e.g. the pre-trained checkpoint the teacher was fine-tuned from,
    /// for a baseline that never sees the teacher (its MLM head is fresh if it has none).
    pub init: Option<PathBuf>,
    /// Or a fresh student from this `config.json`, with the tokenizer of `tokenizer_from`.
    pub config: Option<PathBuf>,
    /// Directory whose tokenizer the student uses (defaults to `teacher` or `init`).
    pub tokenizer_from: Option<PathBuf>,
}

/// Settings of a distillation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistilConfig {
    /// The teacher cache (from `kd precompute`).
    pub cache: PathBuf,
    /// The student.
    pub student: StudentSpec,
    /// Output: `model/` (HF directory), `metrics.jsonl`, `checkpoints/`, `report.json`.
    pub out: PathBuf,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Records per shuffle window.
    pub window_records: usize,
    /// Batches decoded ahead.
    pub prefetch_batches: usize,
    /// Loss weights and temperature.
    pub loss: DistilLoss,
    /// Optimisation (DistilBERT: lr 5e-4, warmup 5%, betas (0.9, 0.98), eps 1e-6, clip 5).
    pub train: LoopConfig,
    /// Online reference: this teacher runs in process on each batch (same inputs, masks and
    /// order as the cache, whose stored targets are then ignored).
    pub online: Option<PathBuf>,
}

impl Default for DistilConfig {
    fn default() -> Self {
        Self {
            cache: PathBuf::new(),
            student: StudentSpec::default(),
            out: PathBuf::from("runs/student"),
            batch_size: 32,
            window_records: 1024,
            prefetch_batches: 8,
            loss: DistilLoss::default(),
            train: LoopConfig {
                lr: 5e-4,
                warmup_fraction: 0.05,
                max_grad_norm: Some(5.0),
                ..LoopConfig::default()
            },
            online: None,
        }
    }
}

/// Outcome of a run (also `out/report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct DistilReport {
    /// Optimizer steps.
    pub steps: u64,
    /// Training tokens per second of this process.
    pub tokens_per_s: f64,
    /// Mean loss over the last logging window.
    pub last_loss: f64,
    /// Student parameters.
    pub student_parameters: usize,
    /// The saved student.
    pub model_dir: PathBuf,
}

struct DistilTask<'a> {
    model: &'a Bert,
    plan: CachePlan,
    stream: StreamConfig,
    seed: u64,
    epoch: u64,
    windows: Vec<Window>,
    prefetch: Option<(usize, Prefetcher)>,
    loss: &'a DistilLoss,
    weights: LossWeights,
    temperatures: Vec<f32>,
    k: usize,
    last_layer: u32,
    pad: u32,
    device: Device,
    /// The in-process teacher of the online reference, with the cache's target spec.
    online: Option<(Bert, TargetSpec)>,
}

impl TrainTask for DistilTask<'_> {
    fn epoch_batches(&mut self, epoch: u64) -> kd_train::Result<Vec<Vec<usize>>> {
        self.epoch = epoch;
        self.windows = self.plan.epoch_windows(self.seed, epoch, &self.stream);
        self.prefetch = None;
        if self.windows.is_empty() {
            return Err(to_train(Error::Config(format!(
                "the cache holds no record for training epoch {epoch} (masked view {} of {}; \
                 its shards hold views {:?}): nothing to train on",
                self.plan.view_of_epoch(epoch),
                self.plan.views(),
                self.plan.views_held()
            ))));
        }
        Ok(self
            .windows
            .iter()
            .flat_map(|w| w.batches.clone())
            .collect())
    }

    fn micro_batch(
        &mut self,
        batch: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> kd_train::Result<MicroBatch> {
        let mut records = self.fetch(batch).map_err(to_train)?;
        if let Some((teacher, spec)) = &self.online {
            records = teacher_records(teacher, spec, &records, self.pad).map_err(to_train)?;
        }
        self.step(&records, rng).map_err(to_train)
    }
}

impl DistilTask<'_> {
    /// The records of `batch`, from the decode-ahead thread (restarted at `batch` when the
    /// trainer jumps, e.g. on resume).
    fn fetch(&mut self, batch: &[usize]) -> Result<Vec<Record>> {
        if let Some((pos, p)) = &mut self.prefetch {
            let (idx, recs) = p.next()?;
            *pos += 1;
            if idx == batch {
                return Ok(recs);
            }
        }
        let all: Vec<&Vec<usize>> = self.windows.iter().flat_map(|w| &w.batches).collect();
        let at = all
            .iter()
            .position(|b| b.as_slice() == batch)
            .ok_or_else(|| Error::Config("batch not in the epoch plan".into()))?;
        let p = Prefetcher::start(
            self.plan.reader().clone(),
            self.windows.clone(),
            at,
            self.stream.prefetch_batches,
        );
        let (idx, recs) = p.next()?;
        self.prefetch = Some((at + 1, p));
        if idx != batch {
            return Err(Error::Config(
                "the decode-ahead thread lost its place".into(),
            ));
        }
        Ok(recs)
    }

    fn step(&self, records: &[Record], rng: &mut ChaCha8Rng) -> Result<MicroBatch> {
        let b = records.len();
        let l = records.iter().map(|r| r.input_ids.len()).max().unwrap_or(0);
        let mut ids = vec![self.pad; b * l];
        let mut types = vec![0u32; b * l];
        let mut mask = vec![0u32; b * l];
        let mut flat_pos = Vec::new();
        let mut labels = Vec::new();
        for (r, rec) in records.iter().enumerate() {
            let n = rec.input_ids.len();
            ids[r * l..r * l + n].copy_from_slice(&rec.input_ids);
            if let Some(t) = &rec.token_type_ids {
                types[r * l..r * l + n].copy_from_slice(t);
            }
            mask[r * l..r * l + n].fill(1);
            flat_pos.extend(rec.mlm_positions.iter().map(|&p| (r * l) as u32 + p));
            labels.extend_from_slice(&rec.mlm_labels);
        }
        let dev = &self.device;
        let input = BertInput {
            input_ids: Tensor::from_vec(ids, (b, l), dev)?,
            token_type_ids: Some(Tensor::from_vec(types, (b, l), dev)?),
            attention_mask: Some(Tensor::from_vec(mask, (b, l), dev)?),
        };
        let out = self
            .model
            .encode(&input, &[], &mut ForwardCtx::train(rng))?;
        let last = out.last_hidden_state();
        let mut terms: Vec<(&str, Tensor)> = Vec::new();
        let n_mask = flat_pos.len();
        if n_mask > 0 && (self.loss.ce > 0.0 || self.loss.mlm > 0.0) {
            let pos = Tensor::from_vec(flat_pos, n_mask, dev)?;
            let logits = self.model.mlm_logits(&gather_positions(last, &pos)?)?;
            let cfg = SoftTargetConfig {
                temperature: f64::from(self.loss.temperature),
                t2_scaling: self.loss.t2_scaling,
            };
            if self.loss.ce > 0.0 {
                terms.push(("ce", self.soft_loss(records, &logits, &cfg)?));
            }
            if self.loss.mlm > 0.0 {
                let labels = Tensor::from_vec(labels, n_mask, dev)?;
                terms.push(("mlm", mlm_cross_entropy(&logits, &labels)?));
            }
        }
        if self.loss.cos > 0.0 {
            let h = last.dim(2)?;
            let mut teacher = vec![0f32; b * l * h];
            for (r, rec) in records.iter().enumerate() {
                let values = rec.hidden_layer(self.last_layer).ok_or_else(|| {
                    Error::Config(format!(
                        "record {} has no hidden state {}",
                        rec.seq_id, self.last_layer
                    ))
                })?;
                let v = values.decode();
                teacher[r * l * h..r * l * h + v.len()].copy_from_slice(&v);
            }
            let teacher = Tensor::from_vec(teacher, (b, l, h), dev)?.to_dtype(last.dtype())?;
            let m = input.attention_mask.as_ref().expect("set above");
            terms.push(("cos", cosine_embedding(last, &teacher, m)?));
        }
        let weighted = self.weights.combine(&terms)?;
        Ok(MicroBatch {
            loss: weighted.total,
            terms: weighted.terms,
            tokens: records.iter().map(Record::len).sum(),
        })
    }

    fn soft_loss(
        &self,
        records: &[Record],
        logits: &Tensor,
        cfg: &SoftTargetConfig,
    ) -> Result<Tensor> {
        let dev = &self.device;
        if self.loss.soft_targets == SoftTargetSource::Sampled {
            let (mut offsets, mut ids, mut counts) = (vec![0u32], Vec::new(), Vec::new());
            for rec in records {
                let s = rec.mlm_sampled.as_ref().ok_or_else(|| {
                    Error::Config(format!("record {} has no sampled targets", rec.seq_id))
                })?;
                let base = ids.len() as u32;
                offsets.extend(s.offsets[1..].iter().map(|o| o + base));
                ids.extend_from_slice(&s.ids);
                counts.extend_from_slice(&s.counts);
            }
            let t = SampledTargets::from_slices(&offsets, &ids, &counts, dev)?;
            return Ok(soft_target_sampled(logits, &t, cfg)?);
        }
        let (mut ids, mut values, mut logz) = (Vec::new(), Vec::new(), Vec::new());
        for rec in records {
            let t = rec.mlm_topk.as_ref().ok_or_else(|| {
                Error::Config(format!("record {} has no top-k targets", rec.seq_id))
            })?;
            ids.extend_from_slice(&t.ids);
            values.extend(t.logits.decode());
            logz.extend_from_slice(&t.log_partition);
        }
        let targets = TopKTargets::from_cache_layout(
            &ids,
            &values,
            &logz,
            &self.temperatures,
            self.loss.temperature,
            self.k,
            dev,
        )?;
        Ok(soft_target_topk(logits, &targets, self.loss.tail, cfg)?)
    }
}

/// Recomputes the targets of `records` with `teacher` on the same masked inputs (the online
/// reference): one forward pass over the padded batch.
fn teacher_records(
    teacher: &Bert,
    spec: &TargetSpec,
    records: &[Record],
    pad: u32,
) -> Result<Vec<Record>> {
    let items: Vec<kd_data::BatchItem> = records
        .iter()
        .map(|r| kd_data::BatchItem {
            id: r.seq_id,
            input_ids: &r.input_ids,
            token_type_ids: r.token_type_ids.as_deref(),
            mlm_positions: &r.mlm_positions,
            mlm_labels: &r.mlm_labels,
            label: None,
        })
        .collect();
    let batch = kd_data::collate(&items, pad)?;
    let epoch = records.first().map(|r| r.epoch).unwrap_or(0);
    let mut out = kd_precompute::extract::extract_batch(teacher, &batch, epoch, spec, 0)?;
    // Sampled targets are drawn per sequence from the manifest's seed in precompute; keep the
    // cached draws so that both modes see the same estimator noise.
    for (o, r) in out.iter_mut().zip(records) {
        if r.mlm_sampled.is_some() {
            o.mlm_sampled = r.mlm_sampled.clone();
        }
    }
    Ok(out)
}

/// Builds the student `spec` describes (DistilBERT init from teacher layers, the same from
/// another model, or a fresh config) and returns it with the directory whose tokenizer it uses.
pub fn build_student(
    spec: &StudentSpec,
    seed: u64,
    device: &Device,
) -> Result<(LoadedModel, PathBuf)> {
    let copy_from =
        match (&spec.teacher, &spec.init, &spec.config) {
            (Some(dir), None, None) | (None, Some(dir), None) => dir,
            (None, None, Some(config)) => {
                let tok = spec.tokenizer_from.clone().ok_or_else(|| {
                    Error::Config("student: a fresh config needs tokenizer_from = DIR".into())
                })?;
                let student = crate::init::student_from_config_file(config, seed, device)?;
                return Ok((student, tok));
            }
            _ => return Err(Error::Config(
                "student: give exactly one of teacher + layers (DistilBERT init), init + layers \
                 (the same from another model) or config"
                    .into(),
            )),
        };
    if spec.layers.is_empty() {
        return Err(Error::Config(format!(
            "student: copying from {} needs a list of layers (e.g. 0,2,4)",
            copy_from.display()
        )));
    }
    let tok = spec
        .tokenizer_from
        .clone()
        .unwrap_or_else(|| copy_from.clone());
    let student = crate::init::student_from_teacher(copy_from, &spec.layers, seed, device)?;
    Ok((student, tok))
}

/// Builds the student and trains it (see [`run_distil`]).
pub fn train_student(cfg: &DistilConfig, device: &Device) -> Result<DistilReport> {
    let (student, tokenizer_dir) = build_student(&cfg.student, cfg.train.seed, device)?;
    run_distil(cfg, &student, &tokenizer_dir, device)
}

/// The targets the losses of `loss` need from a cache whose teacher has `layers` layers.
fn needed_targets(loss: &DistilLoss, layers: u32) -> TargetSpec {
    let mut spec = TargetSpec::default();
    if loss.ce > 0.0 && loss.soft_targets == SoftTargetSource::Topk {
        spec.mlm_topk = Some(TopKSpec {
            k: 1,
            temperatures: if loss.tail == TailMode::Renormalize {
                Vec::new()
            } else {
                vec![loss.temperature]
            },
            logit_precision: Precision::F16,
        });
    }
    if loss.ce > 0.0 && loss.soft_targets == SoftTargetSource::Sampled {
        spec.mlm_sampled = Some(kd_cache::targets::SampledSpec {
            k: 1,
            temperature: loss.temperature,
        });
    }
    if loss.cos > 0.0 {
        spec.hidden = Some(LayerSpec {
            layers: vec![layers],
            precision: Precision::F16,
        });
    }
    spec
}

/// What defines a run for resuming: every setting but the output folder, and the cache's
/// manifest by checksum (a cache rewritten in place is another cache).
fn run_settings(cfg: &DistilConfig) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(cfg)
        .map_err(|e| Error::Config(format!("settings do not serialise: {e}")))?;
    if let Some(map) = v.as_object_mut() {
        map.remove("out");
        map.insert(
            "cache_manifest_sha256".into(),
            sha256_file(&kd_cache::Manifest::path(&cfg.cache))?.into(),
        );
    }
    Ok(v)
}

/// Trains `student` on the cache as configured, resuming from `out/checkpoints` if present
/// and the run there had the same settings.
pub fn run_distil(
    cfg: &DistilConfig,
    student: &LoadedModel,
    tokenizer_dir: &std::path::Path,
    device: &Device,
) -> Result<DistilReport> {
    cfg.loss.validate()?;
    // Held until the run ends: a second run into the same folder is refused, naming this one.
    let _lock = kd_train::DirLock::acquire(&cfg.out, "kd train")?;
    let reader = Arc::new(CacheReader::open(&cfg.cache)?);
    let manifest = reader.manifest().clone();
    kd_train::run_settings::check_or_record(&cfg.out, &run_settings(cfg)?)?;
    let teacher_layers = manifest
        .teacher
        .config
        .get("num_hidden_layers")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as u32;
    let teacher_hidden = manifest
        .teacher
        .config
        .get("hidden_size")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as usize;
    let mut expect = Expectation::new(needed_targets(&cfg.loss, teacher_layers))
        .tokenizer(sha256_file(&tokenizer_source(tokenizer_dir)?)?);
    // A student built from a teacher's layers (or an online teacher) must face the teacher
    // that wrote the cache.
    if let Some(dir) = cfg.online.as_ref().or(cfg.student.teacher.as_ref()) {
        expect = expect.teacher(kd_bert::checkpoint::weights_sha256(dir)?);
    }
    manifest.check_compatible(&expect)?;
    if cfg.loss.cos > 0.0 && student.model.config.hidden_size != teacher_hidden {
        return Err(Error::Config(format!(
            "the student's hidden size {} does not fit the cosine loss against the teacher's {} \
             without a projection: set loss.cos = 0 or use a student of width {}",
            student.model.config.hidden_size, teacher_hidden, teacher_hidden
        )));
    }
    let (k, temperatures) = manifest
        .targets
        .mlm_topk
        .as_ref()
        .map(|t| (t.k as usize, t.temperatures.clone()))
        .unwrap_or((0, Vec::new()));
    let plan = CachePlan::open(reader)?;
    let mut weights = LossWeights::new();
    for (name, w) in [
        ("ce", cfg.loss.ce),
        ("mlm", cfg.loss.mlm),
        ("cos", cfg.loss.cos),
    ] {
        weights = weights.with(name, w);
    }
    let tok = kd_bert::tokenizer::load_tokenizer(tokenizer_dir)?;
    let pad = kd_data::SpecialTokens::from_tokenizer(&tok)?.pad;
    let online = match &cfg.online {
        Some(dir) => {
            let opts = kd_bert::LoadOptions {
                architecture: Some(kd_bert::Architecture::MaskedLm),
                device: device.clone(),
                ..kd_bert::LoadOptions::default()
            };
            let teacher = kd_bert::load_model(dir, &opts)?.inference_model()?;
            Some((teacher, manifest.targets.clone()))
        }
        None => None,
    };
    let mut task = DistilTask {
        model: &student.model,
        plan,
        stream: StreamConfig {
            batch_size: cfg.batch_size,
            window_records: cfg.window_records,
            prefetch_batches: cfg.prefetch_batches,
        },
        seed: cfg.train.seed,
        epoch: 0,
        windows: Vec::new(),
        prefetch: None,
        loss: &cfg.loss,
        weights,
        temperatures,
        k,
        last_layer: teacher_layers,
        pad,
        device: device.clone(),
        online,
    };
    let mut opt = AdamW::new(
        &student.varmap,
        AdamWConfig {
            lr: cfg.train.lr,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            weight_decay: 0.0,
        },
    )?;
    let summary = run_training(
        &mut task,
        &student.varmap,
        &mut opt,
        &cfg.train,
        &cfg.out,
        device,
    )?;
    let model_dir = cfg.out.join("model");
    save_hf_dir(
        &student.model,
        &student.varmap,
        &model_dir,
        Some(tokenizer_dir),
    )?;
    let report = DistilReport {
        steps: summary.steps,
        tokens_per_s: summary.tokens_per_s,
        last_loss: summary.last_loss,
        student_parameters: student
            .varmap
            .all_vars()
            .iter()
            .map(|v| v.elem_count())
            .sum(),
        model_dir,
    };
    let text = serde_json::to_string_pretty(&report).expect("report serialises");
    kd_cache::fsutil::atomic_write(&cfg.out.join("report.json"), text.as_bytes())?;
    Ok(report)
}
