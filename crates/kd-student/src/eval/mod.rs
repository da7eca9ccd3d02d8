//! Evaluating a student against a held-out teacher cache (`kd eval`): quality next to the
//! teacher's, and size and speed as DistilBERT reports them ("40% smaller, 60% faster, 97% of
//! the teacher").
//!
//! Over the masked positions of the cache records, with the student in eval mode:
//! - masked-token top-1 accuracy against `mlm_labels`, for the student and for the teacher (the
//!   first id of its cached top-k);
//! - top-1 agreement: the share of positions where the student's argmax is the teacher's top-1;
//! - KL(teacher || student) over the cached support S (the top-k ids) plus a rest bucket, in
//!   nats per masked position, at T = 1:
//!   `KL = sum_{i in S} p_i ln(p_i / q_i) + p_rest ln(p_rest / q_rest)`, where
//!   `p_i = exp(z_i - log Z)` from the cache (`TopK::probs`), `p_rest = max(0, 1 - sum_S p_i)`,
//!   `q = softmax(student logits)`, `q_rest = sum_{v not in S} q_v`; terms with `p = 0` are 0;
//! - hidden cosine: the mean over real tokens of cos(student last hidden state, cached teacher
//!   hidden state of its last layer), when the cache has it and the widths match.
//!
//! Size: parameters of both as masked-LM models (the decoder tied), from the config arithmetic.
//! Speed: real tokens per second of the forward pass (encoder + MLM head at the masked
//! positions) of student and teacher on the same batches in the same run (needs the teacher),
//! alternating which runs first, after one untimed pass each; with `timing_repeats > 1` each
//! batch counts its fastest pass.

mod layers;
mod metrics;
mod suite;
mod table;
pub mod task;

pub use layers::{evaluate_layers, LayerMetrics};
pub use suite::{run_suite, EvalSuite, SuiteReport};
pub use task::{run_task_eval, TaskEvalReport, TaskEvalSuite, TaskModel};

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use kd_bert::model::gather_positions;
use kd_bert::tokenizer::tokenizer_source;
use kd_bert::{
    load_model, Architecture, Bert, BertConfig, BertInput, ForwardCtx, LoadOptions, LoadedModel,
};
use kd_cache::{CacheReader, Expectation, Record, TargetSpec};
use kd_core::fs::sha256_file;
use metrics::Totals;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Settings of an evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Teacher directory, to measure its speed on the same batches.
    pub teacher: Option<PathBuf>,
    /// Records per forward pass.
    pub batch_size: usize,
    /// Evaluate at most this many records (cache order).
    pub max_records: Option<usize>,
    /// Time each batch this many times and keep the fastest (steadier on a busy machine).
    pub timing_repeats: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            teacher: None,
            batch_size: 32,
            max_records: None,
            timing_repeats: 1,
        }
    }
}

/// What `kd eval` measured; `None` where the cache or the arguments do not allow a metric
/// (`notes` says why).
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Student directory.
    pub student: String,
    /// Cache directory.
    pub cache: String,
    /// Teacher directory, when given.
    pub teacher: Option<String>,
    /// Records evaluated.
    pub records: usize,
    /// Real tokens evaluated.
    pub tokens: usize,
    /// Masked positions evaluated.
    pub masked_positions: usize,
    /// Encoder layers of the student and the teacher.
    pub layers: (usize, usize),
    /// Hidden sizes of the student and the teacher.
    pub hidden_size: (usize, usize),
    /// Student masked-token top-1 accuracy.
    pub student_top1: f64,
    /// Teacher masked-token top-1 accuracy (from the cached top-k).
    pub teacher_top1: Option<f64>,
    /// Share of masked positions where the student's top-1 is the teacher's.
    pub agreement: Option<f64>,
    /// Mean KL(teacher || student) over the cached top-k plus a rest bucket, nats per position.
    pub kl: Option<f64>,
    /// `k` of the cached top-k.
    pub topk: Option<u32>,
    /// Mean cosine of student and teacher last hidden states over real tokens.
    pub hidden_cosine: Option<f64>,
    /// Student parameters (masked-LM model, decoder tied).
    pub student_params: usize,
    /// Teacher parameters counted the same way.
    pub teacher_params: usize,
    /// Student forward throughput in real tokens per second.
    pub student_tokens_per_s: f64,
    /// Teacher forward throughput on the same batches.
    pub teacher_tokens_per_s: Option<f64>,
    /// `1 - student_params / teacher_params`.
    pub smaller: f64,
    /// `student_tokens_per_s / teacher_tokens_per_s`.
    pub speedup: Option<f64>,
    /// `student_top1 / teacher_top1`.
    pub retained: Option<f64>,
    /// Why a metric is missing, and other caveats.
    pub notes: Vec<String>,
    /// Mapped layers compared one by one, when asked for ([`evaluate_layers`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_metrics: Option<Vec<LayerMetrics>>,
}

/// Parameters of a `BertForMaskedLM` with `c` (embeddings, encoder, MLM transform and output
/// bias; the decoder is tied to the word embeddings and not counted twice).
pub fn mlm_param_count(c: &BertConfig) -> usize {
    let (v, h, i) = (c.vocab_size, c.hidden_size, c.intermediate_size);
    let embeddings = (v + c.max_position_embeddings + c.type_vocab_size) * h + 2 * h;
    let layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h;
    let head = h * h + h + 2 * h + v;
    embeddings + c.num_hidden_layers * layer + head
}

/// Evaluates the masked-LM student in `student_dir` on the cache in `cache_dir` (see the module
/// docs). Refuses a cache made with another tokenizer than the student's.
///
/// Steps: open the cache, the student and (optionally) the teacher; check that they fit; plan
/// which metrics the cache allows; run the batches; finish the report.
pub fn evaluate_student(
    student_dir: &Path,
    cache_dir: &Path,
    opts: &EvalOptions,
    device: &Device,
) -> Result<EvalReport> {
    let mut notes = Vec::new();
    let opened = open_models(student_dir, cache_dir, opts, device, &mut notes)?;
    let plan = plan_metrics(&opened, &mut notes);
    let tot = run_batches(&opened, &plan, opts, device)?;
    if tot.records == 0 {
        return Err(Error::Config(format!(
            "cache {} has no record to evaluate",
            cache_dir.display()
        )));
    }
    Ok(finish_report(
        student_dir,
        cache_dir,
        opts,
        &opened,
        &plan,
        &tot,
        notes,
    ))
}

/// The cache, the student and the teacher of an evaluation, checked to fit each other.
struct Opened {
    reader: CacheReader,
    student: Bert,
    s_cfg: BertConfig,
    /// The teacher to time, when given.
    teacher: Option<Bert>,
    /// The given teacher's config, else the cache teacher's.
    t_cfg: BertConfig,
    /// The config of the teacher that made the cache.
    cache_cfg: BertConfig,
}

/// Opens the cache and checks its tokenizer against the student's; loads the student as a
/// masked-LM model and the teacher (to time) when given; checks the vocabularies.
fn open_models(
    student_dir: &Path,
    cache_dir: &Path,
    opts: &EvalOptions,
    device: &Device,
    notes: &mut Vec<String>,
) -> Result<Opened> {
    let reader = CacheReader::open(cache_dir)?;
    let manifest = reader.manifest();
    let sha = sha256_file(&tokenizer_source(student_dir)?)?;
    let expect = Expectation::new(TargetSpec::default()).tokenizer(sha);
    let expect = Expectation {
        allow_partial: true,
        ..expect
    };
    let (cache, name) = (cache_dir.display(), student_dir.display());
    manifest
        .check_compatible(&expect)
        .map_err(|e| Error::Config(format!("cache {cache} does not fit student {name}: {e}")))?;
    let student = load_mlm(student_dir, false, device).map_err(|e| match e {
        kd_bert::Error::Mismatch { .. } => Error::Config(format!(
            "student {name} is not a masked-LM model (kd eval scores its MLM head): {e}"
        )),
        e => e.into(),
    })?;
    let (s_model, s_cfg) = (student.inference_model()?, student.model.config.clone());
    let cache_cfg: BertConfig = serde_json::from_value(manifest.teacher.config.clone())
        .map_err(|e| Error::Config(format!("cache {cache}: teacher config: {e}")))?;
    let (teacher, t_cfg) = match &opts.teacher {
        Some(dir) => {
            // A teacher without an MLM head gets a fresh one: it is only timed.
            let t = load_mlm(dir, true, device)?;
            if kd_bert::checkpoint::weights_sha256(dir)? != manifest.teacher.weights_sha256 {
                notes.push(format!(
                    "{} is not the teacher that made the cache: it is timed here, the teacher \
                     accuracy comes from the cache",
                    dir.display()
                ));
            }
            (Some(t.inference_model()?), t.model.config.clone())
        }
        None => {
            notes.push("teacher speed not measured: pass --teacher DIR".into());
            (None, cache_cfg.clone())
        }
    };
    if s_cfg.vocab_size != cache_cfg.vocab_size {
        return Err(Error::Config(format!(
            "student vocabulary {} != the cache teacher's {}",
            s_cfg.vocab_size, cache_cfg.vocab_size
        )));
    }
    Ok(Opened {
        reader,
        student: s_model,
        s_cfg,
        teacher,
        t_cfg,
        cache_cfg,
    })
}

/// Which metrics the cache allows.
struct MetricPlan {
    topk_spec: Option<kd_cache::TopKSpec>,
    /// Temperatures of the cached top-k (KL needs T = 1).
    temps: Vec<f32>,
    /// Slot of the teacher's last hidden layer in the records, when the widths match.
    hidden_slot: Option<usize>,
}

/// Plans the metrics from the cache's targets, noting those it does not allow.
fn plan_metrics(opened: &Opened, notes: &mut Vec<String>) -> MetricPlan {
    let manifest = opened.reader.manifest();
    let topk_spec = manifest.targets.mlm_topk.clone();
    let temps = topk_spec.as_ref().map(|s| s.temperatures.clone());
    let temps = temps.unwrap_or_default();
    if topk_spec.is_none() {
        notes.push("no mlm-topk in the cache: no teacher accuracy, agreement or KL".into());
    } else if !temps.contains(&1.0) {
        notes.push("the cache has no log-partition at T = 1: no KL".into());
    }
    let last = opened.cache_cfg.num_hidden_layers as u32;
    let slot =
        (manifest.targets.hidden.as_ref()).and_then(|h| h.layers.iter().position(|&l| l == last));
    let widths = (opened.s_cfg.hidden_size, opened.cache_cfg.hidden_size);
    if slot.is_none() {
        notes.push("no hidden state of the teacher's last layer in the cache: no cosine".into());
    } else if widths.0 != widths.1 {
        notes.push(format!(
            "hidden sizes differ (student {}, teacher {}): no cosine",
            widths.0, widths.1
        ));
    }
    MetricPlan {
        topk_spec,
        temps,
        hidden_slot: slot.filter(|_| widths.0 == widths.1),
    }
}

/// Runs student (and teacher) over the records in batches, timing both, and scores them.
fn run_batches(
    opened: &Opened,
    plan: &MetricPlan,
    opts: &EvalOptions,
    device: &Device,
) -> Result<Totals> {
    let (s_model, s_cfg, teacher) = (&opened.student, &opened.s_cfg, &opened.teacher);
    let mut tot = Totals::default();
    let mut records = (opened.reader.iter()).take(opts.max_records.unwrap_or(usize::MAX));
    for batch in 0.. {
        let mut chunk: Vec<Record> = (records.by_ref().take(opts.batch_size.max(1)))
            .collect::<std::result::Result<_, _>>()?;
        if (plan.topk_spec.as_ref()).is_some_and(|t| !t.positions.is_masked()) {
            crate::loss_terms::topk_at_masked_positions(&mut chunk)?;
        }
        if chunk.is_empty() {
            break;
        }
        let (input, flat) = batch_input(&chunk, s_cfg.pad_token_id, device)?;
        let time_teacher = || -> Result<f64> {
            match teacher {
                Some(t) => Ok(forward(t, &input, &flat)?.2),
                None => Ok(0.0),
            }
        };
        if batch == 0 {
            // Warm-up, untimed.
            forward(s_model, &input, &flat)?;
            time_teacher()?;
        }
        let (mut s_best, mut t_best, mut outputs) = (f64::INFINITY, f64::INFINITY, None);
        for rep in 0..opts.timing_repeats.max(1) {
            // Alternate which model runs first, so neither always finds the caches warm.
            let teacher_first = (batch + rep) % 2 == 1;
            if teacher_first {
                t_best = t_best.min(time_teacher()?);
            }
            let (logits, hidden, secs) = forward(s_model, &input, &flat)?;
            s_best = s_best.min(secs);
            outputs.get_or_insert((logits, hidden));
            if !teacher_first {
                t_best = t_best.min(time_teacher()?);
            }
        }
        (tot.student_s, tot.teacher_s) = (tot.student_s + s_best, tot.teacher_s + t_best);
        let (logits, hidden) = outputs.expect("at least one forward pass");
        let hidden_slot = plan.hidden_slot;
        let hidden = (hidden_slot.map(|_| hidden.to_dtype(DType::F32)?.to_vec3())).transpose()?;
        tot.add_batch(
            &chunk,
            &logits,
            s_cfg.vocab_size,
            hidden.zip(hidden_slot),
            &plan.temps,
        )?;
    }
    Ok(tot)
}

/// The report from the sums of the batches.
fn finish_report(
    student_dir: &Path,
    cache_dir: &Path,
    opts: &EvalOptions,
    opened: &Opened,
    plan: &MetricPlan,
    tot: &Totals,
    notes: Vec<String>,
) -> EvalReport {
    let (s_cfg, t_cfg) = (&opened.s_cfg, &opened.t_cfg);
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    let has_topk = plan.topk_spec.is_some();
    let student_top1 = ratio(tot.student_hits, tot.positions).unwrap_or(0.0);
    let teacher_top1 = ratio(tot.teacher_hits, tot.topk_positions).filter(|_| has_topk);
    let (student_params, teacher_params) = (mlm_param_count(s_cfg), mlm_param_count(t_cfg));
    let per_s = |secs: f64| tot.tokens as f64 / secs.max(1e-12);
    let (student_tps, teacher_tps) = (
        per_s(tot.student_s),
        opened.teacher.as_ref().map(|_| per_s(tot.teacher_s)),
    );
    EvalReport {
        student: student_dir.display().to_string(),
        cache: cache_dir.display().to_string(),
        teacher: opts.teacher.as_ref().map(|d| d.display().to_string()),
        records: tot.records,
        tokens: tot.tokens,
        masked_positions: tot.positions,
        layers: (s_cfg.num_hidden_layers, t_cfg.num_hidden_layers),
        hidden_size: (s_cfg.hidden_size, t_cfg.hidden_size),
        student_top1,
        teacher_top1,
        agreement: ratio(tot.agree, tot.topk_positions).filter(|_| has_topk),
        kl: (tot.kl_positions > 0).then(|| tot.kl / tot.kl_positions as f64),
        topk: plan.topk_spec.as_ref().map(|s| s.k),
        hidden_cosine: (tot.cos_tokens > 0).then(|| tot.cos / tot.cos_tokens as f64),
        student_params,
        teacher_params,
        student_tokens_per_s: student_tps,
        teacher_tokens_per_s: teacher_tps,
        smaller: 1.0 - student_params as f64 / teacher_params.max(1) as f64,
        speedup: teacher_tps.map(|t| student_tps / t),
        retained: teacher_top1.filter(|&t| t > 0.0).map(|t| student_top1 / t),
        notes,
        layer_metrics: None,
    }
}

/// Loads `dir` as a `BertForMaskedLM` (`fresh_heads`: a missing MLM head is initialised).
fn load_mlm(dir: &Path, fresh_heads: bool, device: &Device) -> kd_bert::Result<LoadedModel> {
    let opts = LoadOptions {
        architecture: Some(Architecture::MaskedLm),
        fresh_heads,
        device: device.clone(),
        ..LoadOptions::default()
    };
    load_model(dir, &opts)
}

/// The padded model input of `records` (through [`crate::cache_task::collate_records`]) and
/// their flat masked positions `b * L + pos`.
fn batch_input(records: &[Record], pad: u32, device: &Device) -> Result<(BertInput, Tensor)> {
    let batch = crate::cache_task::collate_records(records, pad)?;
    let input = BertInput::from_batch(&batch, device)?;
    let n = batch.mlm_positions.len();
    Ok((input, Tensor::from_slice(&batch.mlm_positions, n, device)?))
}

/// One eval-mode forward pass: MLM logits at `flat` (row-major, f32), the last hidden state,
/// and the seconds it took (device synchronised).
fn forward(model: &Bert, input: &BertInput, flat: &Tensor) -> Result<(Vec<f32>, Tensor, f64)> {
    let start = Instant::now();
    let out = model.encode(input, &[], &mut ForwardCtx::eval())?;
    let hidden = out.last_hidden_state().clone();
    let logits = if flat.dim(0)? > 0 {
        Some(model.mlm_logits(&gather_positions(&hidden, flat)?)?)
    } else {
        None
    };
    hidden.device().synchronize()?;
    let secs = start.elapsed().as_secs_f64();
    let logits = match logits {
        Some(l) => l.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
        None => Vec::new(),
    };
    Ok((logits, hidden, secs))
}
