//! Training a student from a teacher cache, the teacher never in memory: the losses are a
//! list ([`LossList`]: DistilBERT's soft targets + MLM + cosine by default, TinyBERT's layer
//! losses, logit losses), the student any [`Student`](crate::student::Student), the task
//! [`CacheTask`]. A run opens the cache and the student, checks that the cache holds what the
//! losses need, plans the epochs, runs the training loop, and saves the student.

use crate::cache_task::CacheTask;
use crate::init::{ClassifierLabels, StudentHead};
use crate::loss_terms::{needed_targets, resolve, ModelShapes, TopKLayout};
use crate::stream::{CachePlan, StreamConfig};
use crate::student::{BertStudent, Student};
use crate::{Error, Result};
use candle_core::Device;
use kd_bert::tokenizer::tokenizer_source;
use kd_bert::LoadedModel;
use kd_cache::reader::CacheReader;
use kd_cache::{Expectation, Manifest};
use kd_core::fs::sha256_file;
use kd_train::{run_training, AdamW, AdamWConfig, LoopConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::loss_spec::{DistilLoss, LossList, LossSpec, SoftTargetSource};

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
    /// What the student predicts: `mlm` (masked tokens) or `classifier` (the classes of the
    /// task whose teacher wrote the cache, with that teacher's labels).
    pub head: HeadKind,
    /// Or a BiLSTM student (Tang et al.): the settings kd-lstm's `BiLstmConfig` reads
    /// (`hidden_size`, `embedding_size`, `mlp_hidden_size`, `dropout`, `siamese`) plus
    /// `copy_embeddings` (start from the teacher's word-piece embeddings) and `vocabulary`
    /// (`teacher`, or `transfer_set`: the pieces seen in the cache, `min_count` times), over
    /// the tokenizer of `teacher`. Built by the `kd` CLI, which links kd-lstm; library users
    /// build the student and call [`run_distil_student`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bilstm: Option<serde_json::Value>,
}

/// The head of a student.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// A masked-LM head (`BertForMaskedLM`).
    #[default]
    Mlm,
    /// A sequence classifier (`BertForSequenceClassification`).
    Classifier,
}

/// AdamW's settings (DistilBERT's: betas (0.9, 0.98), eps 1e-6, no weight decay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay of the decay group.
    pub weight_decay: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            weight_decay: 0.0,
        }
    }
}

/// Settings of a distillation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistilConfig {
    /// The teacher cache (from `kd precompute`).
    pub cache: PathBuf,
    /// The student.
    pub student: StudentSpec,
    /// Output: `model/` (HF directory), `projections.safetensors` when the losses learn
    /// projections, `metrics.jsonl`, `checkpoints/`, `report.json`.
    pub out: PathBuf,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Records per shuffle window.
    pub window_records: usize,
    /// Batches decoded ahead.
    pub prefetch_batches: usize,
    /// The losses: a list of entries, or DistilBERT's shorthand table.
    pub loss: LossList,
    /// AdamW's moments, epsilon and weight decay.
    pub optimizer: OptimizerConfig,
    /// Optimisation (DistilBERT: lr 5e-4, warmup 5%, clip 5).
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
            loss: LossList::default(),
            optimizer: OptimizerConfig::default(),
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

/// The head `spec` asks for; a classifier takes the labels of the teacher that wrote `cache`.
pub fn student_head(spec: &StudentSpec, cache: &Path) -> Result<StudentHead> {
    match spec.head {
        HeadKind::Mlm => Ok(StudentHead::MaskedLm),
        HeadKind::Classifier => {
            let manifest = Manifest::load(cache)?;
            if !manifest.targets.logits {
                return Err(Error::Config(format!(
                    "student: a classifier student learns from class logits, and the cache in {} \
                     holds none (precompute it over task data with the `logits` target)",
                    cache.display()
                )));
            }
            let config: kd_bert::BertConfig =
                serde_json::from_value(manifest.teacher.config.clone()).map_err(|e| {
                    Error::Config(format!(
                        "{}: the teacher's config in the manifest does not read: {e}",
                        Manifest::path(cache).display()
                    ))
                })?;
            Ok(StudentHead::Classifier(ClassifierLabels::of(&config)))
        }
    }
}

/// Builds the student `spec` describes (DistilBERT init from teacher layers, the same from
/// another model, or a fresh config) with a masked-LM head, and returns it with the directory
/// whose tokenizer it uses.
pub fn build_student(
    spec: &StudentSpec,
    seed: u64,
    device: &Device,
) -> Result<(LoadedModel, PathBuf)> {
    build_student_with_head(spec, &StudentHead::MaskedLm, seed, device)
}

/// [`build_student`] with `head`.
pub fn build_student_with_head(
    spec: &StudentSpec,
    head: &StudentHead,
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
                let config = kd_bert::BertConfig::from_file(config)?;
                let student = crate::init::fresh_student(&config, head, seed, device)?;
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
    let student = crate::init::init_with_head(copy_from, &spec.layers, head, seed, device)?.student;
    Ok((student, tok))
}

/// Builds the student and trains it (see [`run_distil`]).
pub fn train_student(cfg: &DistilConfig, device: &Device) -> Result<DistilReport> {
    if cfg.student.bilstm.is_some() {
        return Err(Error::Config(
            "student.bilstm: a BiLSTM student is built by the kd CLI (kd train, kd run); from \
             the library, build it with kd-lstm and call run_distil_student"
                .into(),
        ));
    }
    let head = student_head(&cfg.student, &cfg.cache)?;
    let (student, tokenizer_dir) =
        build_student_with_head(&cfg.student, &head, cfg.train.seed, device)?;
    run_distil(cfg, student, &tokenizer_dir, device)
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
            sha256_file(&Manifest::path(&cfg.cache))?.into(),
        );
    }
    Ok(v)
}

/// Checks that the cache can serve this run: the targets the losses need, the tokenizer of
/// the student, and, for a student copied from the teacher (or an online teacher), the
/// teacher that wrote it.
fn check_cache(
    cfg: &DistilConfig,
    manifest: &Manifest,
    spec: kd_cache::TargetSpec,
    tokenizer_dir: &Path,
) -> Result<()> {
    let mut expect =
        Expectation::new(spec).tokenizer(sha256_file(&tokenizer_source(tokenizer_dir)?)?);
    if let Some(dir) = cfg.online.as_ref().or(cfg.student.teacher.as_ref()) {
        expect = expect.teacher(kd_bert::checkpoint::weights_sha256(dir)?);
    }
    Ok(manifest.check_compatible(&expect)?)
}

/// The teacher of the online reference, on `device`.
fn online_teacher(
    dir: &Path,
    targets: &kd_cache::TargetSpec,
    device: &Device,
) -> Result<kd_bert::Bert> {
    let opts = kd_teacher::targets::teacher_load_options(targets, device);
    Ok(kd_bert::load_model(dir, &opts)?.inference_model()?)
}

/// Trains `student` on the cache as configured, resuming from `out/checkpoints` if present
/// and the run there had the same settings; saves it to `out/model`.
pub fn run_distil(
    cfg: &DistilConfig,
    student: LoadedModel,
    tokenizer_dir: &Path,
    device: &Device,
) -> Result<DistilReport> {
    let student = BertStudent::new(student, tokenizer_dir.to_path_buf(), device);
    run_distil_student(cfg, &student, tokenizer_dir, device)
}

/// [`run_distil`] for any [`Student`] (e.g. a BiLSTM): the same checks, training loop,
/// checkpoints and report; the student saves itself to `out/model` in its own format.
pub fn run_distil_student(
    cfg: &DistilConfig,
    student: &dyn Student,
    tokenizer_dir: &Path,
    device: &Device,
) -> Result<DistilReport> {
    // Open: the output folder (locked for the whole run), the cache, the student.
    cfg.loss.validate()?;
    if cfg.train.epochs == 0 || cfg.train.max_steps == Some(0) {
        return Err(Error::Config(format!(
            "epochs = {}, max_steps = {:?}: a run of no step would save an untrained student",
            cfg.train.epochs, cfg.train.max_steps
        )));
    }
    let _lock = kd_train::DirLock::acquire(&cfg.out, "kd train")?;
    let reader = Arc::new(CacheReader::open(&cfg.cache)?);
    let manifest = reader.manifest().clone();
    kd_train::run_settings::check_or_record(&cfg.out, &run_settings(cfg)?)?;

    // Check: the losses against both models, the cache against the losses.
    let teacher = ModelShapes::teacher_of(&manifest);
    let shapes = ModelShapes {
        layers: student.num_layers(),
        hidden: student.hidden_size(),
        heads: student.num_heads(),
    };
    let losses = resolve(
        &cfg.loss.0,
        shapes,
        teacher,
        student.varmap(),
        cfg.train.seed,
        device,
    )?;
    check_cache(cfg, &manifest, needed_targets(&losses), tokenizer_dir)?;

    // Plan: the cache stream, the task, the optimizer.
    let topk = manifest
        .targets
        .mlm_topk
        .as_ref()
        .map(|t| TopKLayout {
            k: t.k as usize,
            temperatures: t.temperatures.clone(),
            positions: t.positions,
        })
        .unwrap_or_default();
    let tok = kd_bert::tokenizer::load_tokenizer(tokenizer_dir)?;
    let pad = kd_data::SpecialTokens::from_tokenizer(&tok)?.pad;
    let online = match &cfg.online {
        Some(dir) => Some((
            online_teacher(dir, &manifest.targets, device)?,
            manifest.targets.clone(),
        )),
        None => None,
    };
    let stream = StreamConfig {
        batch_size: cfg.batch_size,
        window_records: cfg.window_records,
        prefetch_batches: cfg.prefetch_batches,
    };
    let plan = CachePlan::open(reader)?;
    let mut task = CacheTask::new(
        student,
        losses,
        plan,
        stream,
        cfg.train.seed,
        topk,
        pad,
        online,
    );
    let o = &cfg.optimizer;
    let mut opt = AdamW::new(
        student.varmap(),
        AdamWConfig {
            lr: cfg.train.lr,
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weight_decay: o.weight_decay,
        },
    )?;

    // Run.
    let summary = run_training(
        &mut task,
        student.varmap(),
        &mut opt,
        &cfg.train,
        &cfg.out,
        device,
    )?;

    // Finish: the student, its projections beside it, the report.
    let model_dir = cfg.out.join("model");
    student.save(&model_dir)?;
    crate::projections::save(student.varmap(), &cfg.out.join(crate::projections::FILE))?;
    let report = DistilReport {
        steps: summary.steps,
        tokens_per_s: summary.tokens_per_s,
        last_loss: summary.last_loss,
        student_parameters: student.num_parameters(),
        model_dir,
    };
    let text = serde_json::to_string_pretty(&report).expect("report serialises");
    kd_core::fs::write_atomic(&cfg.out.join("report.json"), text.as_bytes())?;
    Ok(report)
}
