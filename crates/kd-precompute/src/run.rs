//! `kd precompute`: run the teacher once over the masked sequences and write the cache.
//!
//! The work is a list of shards (sequences x masked epochs, see [`crate::plan`]). The teacher
//! runs on this thread in length-sorted batches and hands records through a bounded queue to a
//! writer thread, so memory stays flat in the corpus size. Each finished shard is committed
//! atomically and recorded in `progress.json`; after a kill the same command skips finished
//! shards, and the final cache is byte-identical to an uninterrupted run. `manifest.json` is
//! written last.

use crate::mismatch;
use crate::plan::{parse_part, part_range, plan_shards, ShardPlan};
use crate::sources::{Sequence, SourceConfig};
use crate::{Error, Result};
use candle_core::Device;
use kd_bert::tokenizer::{load_tokenizer, tokenizer_source};
use kd_bert::{load_model, Architecture, Bert, BertConfig};
use kd_cache::writer::{ShardWriter, WriterOptions};
use kd_cache::{
    Backend, CorpusFile, FileRef, Manifest, MaskingParams, Part, Record, ShardInfo, TargetSpec,
    TeacherInfo,
};
use kd_core::fs::{sha256_file, sha256_hex};
use kd_data::{collate, BatchItem, MaskConfig, Masker, TextEncoder, TokenCounts};
use kd_teacher::targets::extract_batch;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Instant;

/// Settings of a precompute run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrecomputeConfig {
    /// Teacher model directory.
    pub teacher: PathBuf,
    /// The sequences.
    pub source: SourceConfig,
    /// Cache directory.
    pub out: PathBuf,
    /// Targets, e.g. `mlm-topk:k=32,hidden:last` (see `schemas/cache-v2.md`).
    pub targets: String,
    /// Masked views of the corpus.
    pub epochs: u32,
    /// Seed of masking, sampling and sequence sampling.
    pub seed: u64,
    /// MLM masking (corpus input only).
    pub mask: MaskConfig,
    /// `parquet` or `mmap`.
    pub backend: Backend,
    /// Sequences per shard file.
    pub rows_per_shard: usize,
    /// Sequences per teacher forward pass.
    pub batch_size: usize,
    /// `i/N`: produce only part i of N (merge the parts with `kd cache merge`).
    pub shard: Option<String>,
    /// Records buffered between the teacher and the writer.
    pub queue_depth: usize,
    /// zstd level of the shards (1 is fastest; the writer shares the CPU with the teacher).
    pub zstd_level: i32,
}

impl Default for PrecomputeConfig {
    fn default() -> Self {
        Self {
            teacher: PathBuf::new(),
            source: SourceConfig::default(),
            out: PathBuf::from("runs/cache"),
            targets: "mlm-topk:k=32,hidden:last".into(),
            epochs: 1,
            seed: 0,
            mask: MaskConfig::default(),
            backend: Backend::Parquet,
            rows_per_shard: 1024,
            batch_size: 32,
            shard: None,
            queue_depth: 256,
            zstd_level: 1,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct PrecomputeReport {
    /// The cache directory.
    pub out: PathBuf,
    /// Records in the cache (this part).
    pub rows: u64,
    /// Real tokens in the cache.
    pub tokens: u64,
    /// Bytes of shard files.
    pub bytes: u64,
    /// Shards written by this process (the rest were already done).
    pub shards_written: usize,
    /// Shards in the cache.
    pub shards: usize,
    /// Tokens per second of the teacher + extraction + writing loop in this process.
    pub tokens_per_s: f64,
    /// Seconds spent before the loop (model loading, tokenization, checksums).
    pub setup_seconds: f64,
}

/// Resume state: finished shards of the current configuration.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    fingerprint: String,
    done: BTreeMap<usize, ShardInfo>,
    /// The manifest (without shards) the fingerprint is of, to name what differs on a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    described: Option<Manifest>,
}

const PROGRESS_FILE: &str = "progress.json";

/// Runs a precompute as configured (resuming if `out` holds an unfinished run of it).
///
/// Steps: check the settings, take the output folder, open the teacher and the sequences,
/// describe the cache (the manifest without shards), stop early if it is already finished,
/// pick up the progress of an unfinished run, plan the shards still to write, run the teacher
/// and the writer, finish with the manifest.
pub fn run_precompute(cfg: &PrecomputeConfig, device: &Device) -> Result<PrecomputeReport> {
    let started = Instant::now();
    let checked = check_settings(cfg)?;
    // Held until the run ends: a second run into the same folder is refused, naming this one.
    let _lock = kd_train::DirLock::acquire(&cfg.out, "kd precompute")
        .map_err(|e| Error::Config(e.to_string()))?;
    let opened = open_inputs(cfg, &checked, device)?;
    let mut manifest = describe_cache(cfg, &checked, &opened)?;
    // The query/key weights of attention-input layers, stored once beside the shards.
    let weights = kd_teacher::targets::attention_weights(&opened.teacher, &checked.spec)?;
    if let Some(w) = &weights {
        manifest.attention_weights = Some(kd_cache::attention_input::side_file(w)?.0);
    }
    let fingerprint = sha256_hex(manifest.to_json()?.as_bytes());
    if let Some(existing) = finished_cache(cfg, &manifest, &fingerprint)? {
        return Ok(report(&cfg.out, &existing, 0, 0, started));
    }
    let progress = resume_progress(cfg, &manifest, fingerprint)?;
    if let Some((_, r, json)) = &opened.counts {
        kd_core::fs::write_atomic(&cfg.out.join(&r.file), json.as_bytes())?;
    }
    if let Some(w) = &weights {
        kd_cache::attention_input::write(&cfg.out, w)?;
    }
    let plan = plan_run(cfg, checked.part, &opened.sequences, &progress);
    // Throughput is measured from here: teacher + extraction + writing, not the set-up
    // (loading, tokenizing the corpus, checksums).
    let setup_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (progress, produced) =
        run_teacher_and_writer(cfg, &checked.spec, &opened, &plan, progress)?;
    manifest.shards = plan.all[plan.range.clone()]
        .iter()
        .map(|s| {
            progress
                .done
                .get(&s.index)
                .cloned()
                .ok_or_else(|| Error::Config(format!("shard {} was not written", s.index)))
        })
        .collect::<Result<_>>()?;
    manifest.save(&cfg.out)?;
    let _ = std::fs::remove_file(cfg.out.join(PROGRESS_FILE));
    let mut r = report(&cfg.out, &manifest, plan.todo.len(), produced, started);
    r.setup_seconds = setup_seconds;
    Ok(r)
}

/// What the settings fix before anything is loaded.
struct Checked {
    teacher_cfg: BertConfig,
    spec: TargetSpec,
    part: Option<(u32, u32)>,
}

/// Refuses settings that cannot work; reads the teacher config, the targets and `--shard`.
fn check_settings(cfg: &PrecomputeConfig) -> Result<Checked> {
    if cfg.epochs == 0 {
        return Err(Error::Config(
            "epochs = 0: a precompute of no masked epoch writes no record; use --epochs 1 or more"
                .into(),
        ));
    }
    let teacher_cfg = BertConfig::from_file(&cfg.teacher.join("config.json"))?;
    let spec = TargetSpec::parse(&cfg.targets, teacher_cfg.num_hidden_layers as u32)?;
    let part = cfg
        .shard
        .as_deref()
        .map(parse_part)
        .transpose()
        .map_err(Error::Config)?;
    Ok(Checked {
        teacher_cfg,
        spec,
        part,
    })
}

/// The teacher, the sequences and what masks them.
struct Opened {
    teacher: Bert,
    encoder: TextEncoder,
    sequences: Vec<Sequence>,
    /// Token counts of frequency-smoothed masking, their file reference and JSON (written
    /// only once the resume checks pass: a refused rerun must not touch the cache).
    counts: Option<(TokenCounts, FileRef, String)>,
    masker: Option<Masker>,
}

/// Loads the teacher with the heads `spec` needs, its tokenizer and the sequences; creates the
/// output folder; builds the masker (corpus input only).
fn open_inputs(cfg: &PrecomputeConfig, checked: &Checked, device: &Device) -> Result<Opened> {
    let (spec, teacher_cfg) = (&checked.spec, &checked.teacher_cfg);
    let options = kd_teacher::targets::teacher_load_options(spec, device);
    let loaded =
        load_model(&cfg.teacher, &options).map_err(|e| match (&e, options.architecture) {
            (kd_bert::Error::Mismatch { .. }, Some(Architecture::MaskedLm)) => {
                Error::Config(format!(
                    "the teacher in {} has no MLM head for mlm targets ({e}); fit one with \
             `kd finetune --objective mlm`",
                    cfg.teacher.display()
                ))
            }
            _ => e.into(),
        })?;
    let teacher = loaded.inference_model()?;
    let tokenizer = load_tokenizer(&cfg.teacher)?;
    let encoder = TextEncoder::new(&tokenizer)?;
    let classes = spec
        .logits
        .then(|| crate::labels::teacher_classes(teacher_cfg));
    let sequences = cfg.source.load(&encoder, cfg.seed, classes.as_deref())?;
    let corpus_mode = cfg.source.task.is_none();

    std::fs::create_dir_all(&cfg.out)
        .map_err(|e| Error::Config(format!("{}: {e}", cfg.out.display())))?;
    let counts = if corpus_mode && cfg.mask.smoothing.is_some() {
        let packed: Vec<kd_data::PackedSequence> = sequences
            .iter()
            .map(|s| kd_data::PackedSequence {
                id: s.id,
                doc: 0,
                input_ids: s.input_ids.clone(),
            })
            .collect();
        let counts = TokenCounts::from_sequences(&packed, encoder.vocab_size())?;
        let json = counts.to_json()?;
        let file = FileRef {
            file: "token_counts.json".into(),
            sha256: sha256_hex(json.as_bytes()),
        };
        Some((counts, file, json))
    } else {
        None
    };
    let masker = corpus_mode
        .then(|| {
            Masker::new(
                cfg.mask,
                encoder.specials(),
                encoder.vocab_size(),
                counts.as_ref().map(|(c, _, _)| c),
            )
        })
        .transpose()?;
    Ok(Opened {
        teacher,
        encoder,
        sequences,
        counts,
        masker,
    })
}

/// The manifest of the cache this run makes, without its shards (its JSON is the run's
/// fingerprint).
fn describe_cache(cfg: &PrecomputeConfig, checked: &Checked, opened: &Opened) -> Result<Manifest> {
    let mut manifest = Manifest::new(checked.spec.clone(), cfg.backend);
    manifest.teacher = TeacherInfo {
        config: serde_json::to_value(&checked.teacher_cfg).expect("config serialises"),
        weights_sha256: kd_bert::checkpoint::weights_sha256(&cfg.teacher)?,
        source: Some(cfg.teacher.display().to_string()),
    };
    manifest.tokenizer_sha256 = sha256_file(&tokenizer_source(&cfg.teacher)?)?;
    manifest.corpus = cfg
        .source
        .files()?
        .iter()
        .map(|p| {
            Ok(CorpusFile {
                path: p.display().to_string(),
                sha256: sha256_file(p)?,
            })
        })
        .collect::<Result<_>>()?;
    manifest.masking = opened.masker.as_ref().map(|_| MaskingParams {
        seed: cfg.seed,
        mask_prob: cfg.mask.mask_prob,
        mask_frac: cfg.mask.mask_frac,
        keep_frac: cfg.mask.keep_frac,
        random_frac: cfg.mask.random_frac,
        smoothing: cfg.mask.smoothing,
    });
    manifest.epochs = cfg.epochs;
    manifest.token_counts = opened.counts.as_ref().map(|(_, r, _)| r.clone());
    manifest.part = checked.part.map(|(index, count)| Part { index, count });
    manifest.extra.insert(
        "source".into(),
        serde_json::to_value(&cfg.source).expect("source serialises"),
    );
    let provenance = manifest
        .corpus
        .iter()
        .filter_map(|f| {
            kd_data::read_provenance(Path::new(&f.path), &f.sha256)
                .map_err(|e| Error::Config(e.to_string()))
                .transpose()
                .map(|r| r.map(|r| (f.path.clone(), r)))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    if !provenance.is_empty() {
        manifest.extra.insert(
            "provenance".into(),
            serde_json::to_value(provenance).expect("provenance serialises"),
        );
    }
    manifest
        .extra
        .insert("vocab_size".into(), opened.encoder.vocab_size().into());
    manifest
        .extra
        .insert("sequences".into(), opened.sequences.len().into());
    Ok(manifest)
}

/// The finished cache in `out` when it is this configuration's; an error when it is another's;
/// `None` when there is none.
fn finished_cache(
    cfg: &PrecomputeConfig,
    described: &Manifest,
    fingerprint: &str,
) -> Result<Option<Manifest>> {
    if !Manifest::path(&cfg.out).exists() {
        return Ok(None);
    }
    let existing = Manifest::load(&cfg.out)?;
    let mut bare = existing.clone();
    bare.shards.clear();
    if sha256_hex(bare.to_json()?.as_bytes()) == fingerprint {
        return Ok(Some(existing));
    }
    let why = mismatch::differences(&bare, described);
    Err(Error::Config(mismatch::refusal(
        &cfg.out,
        "finished cache",
        &why,
    )))
}

/// The shards an unfinished run of this configuration already wrote (none on a fresh start);
/// an error when `out` holds an unfinished run of another configuration.
fn resume_progress(
    cfg: &PrecomputeConfig,
    described: &Manifest,
    fingerprint: String,
) -> Result<Progress> {
    let progress_path = cfg.out.join(PROGRESS_FILE);
    let mut progress: Progress = match std::fs::read_to_string(&progress_path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", progress_path.display())))?,
        Err(_) => Progress::default(),
    };
    if !progress.done.is_empty() && progress.fingerprint != fingerprint {
        let why = progress
            .described
            .as_ref()
            .map(|old| mismatch::differences(old, described))
            .unwrap_or_default();
        return Err(Error::Config(mismatch::refusal(
            &cfg.out,
            "unfinished run",
            &why,
        )));
    }
    progress.fingerprint = fingerprint;
    progress.described = Some(described.clone());
    Ok(progress)
}

/// Every shard of the cache, the slice this part covers, and the shards of it still to write.
struct RunPlan {
    all: Vec<ShardPlan>,
    range: std::ops::Range<usize>,
    todo: Vec<ShardPlan>,
    /// Real tokens of `todo` (the progress bar's length).
    total_tokens: u64,
}

/// Plans the shards and leaves out those `progress` has.
fn plan_run(
    cfg: &PrecomputeConfig,
    part: Option<(u32, u32)>,
    sequences: &[Sequence],
    progress: &Progress,
) -> RunPlan {
    let all = plan_shards(sequences.len(), cfg.epochs, cfg.rows_per_shard);
    let range = match part {
        Some((i, n)) => part_range(all.len(), i, n),
        None => 0..all.len(),
    };
    let todo: Vec<ShardPlan> = all[range.clone()]
        .iter()
        .filter(|s| !progress.done.contains_key(&s.index))
        .copied()
        .collect();
    let total_tokens: u64 = todo
        .iter()
        .map(|s| {
            sequences[s.start..s.end]
                .iter()
                .map(|q| q.input_ids.len() as u64)
                .sum::<u64>()
        })
        .sum();
    RunPlan {
        all,
        range,
        todo,
        total_tokens,
    }
}

/// Runs the teacher over the shards to write on this thread and the writer on another,
/// through a bounded queue; returns the writer's progress and the real tokens produced.
fn run_teacher_and_writer(
    cfg: &PrecomputeConfig,
    spec: &TargetSpec,
    opened: &Opened,
    plan: &RunPlan,
    progress: Progress,
) -> Result<(Progress, u64)> {
    let bar = kd_train::Progress::new(plan.total_tokens, "precompute");
    let options = WriterOptions {
        rows_per_shard: cfg.rows_per_shard as u64,
        zstd_level: cfg.zstd_level,
        ..WriterOptions::default()
    };
    let (tx, rx) = sync_channel::<Msg>(cfg.queue_depth.max(1));
    let writer = {
        let (out, backend) = (cfg.out.clone(), cfg.backend);
        let spec = spec.clone();
        std::thread::spawn(move || write_shards(rx, &out, backend, &spec, &options, progress))
    };
    let mut produced = 0u64;
    let mut produce = || -> Result<()> {
        for shard in &plan.todo {
            tx.send(Msg::Start(shard.index))
                .map_err(|_| Error::Config("the cache writer stopped".into()))?;
            let seqs = &opened.sequences[shard.start..shard.end];
            for batch in teacher_batches(
                seqs,
                shard.epoch,
                cfg,
                opened.masker.as_ref(),
                opened.encoder.specials().pad,
            ) {
                let records = extract_batch(&opened.teacher, &batch?, shard.epoch, spec, cfg.seed)?;
                for rec in records {
                    produced += rec.input_ids.len() as u64;
                    tx.send(Msg::Record(Box::new(rec)))
                        .map_err(|_| Error::Config("the cache writer stopped".into()))?;
                }
                bar.set_position(produced);
            }
            tx.send(Msg::Finish)
                .map_err(|_| Error::Config("the cache writer stopped".into()))?;
        }
        Ok(())
    };
    let produced_result = produce();
    drop(tx);
    let progress = writer
        .join()
        .map_err(|_| Error::Config("the cache writer panicked".into()))??;
    produced_result?;
    bar.finish();
    Ok((progress, produced))
}

fn report(
    out: &Path,
    m: &Manifest,
    written: usize,
    tokens: u64,
    started: Instant,
) -> PrecomputeReport {
    PrecomputeReport {
        out: out.to_path_buf(),
        rows: m.rows(),
        tokens: m.tokens(),
        bytes: m.bytes(),
        shards_written: written,
        shards: m.shards.len(),
        tokens_per_s: tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
        setup_seconds: 0.0,
    }
}

/// Messages from the teacher to the writer thread.
enum Msg {
    Start(usize),
    Record(Box<Record>),
    Finish,
}

/// Writer thread: one shard file at a time, committing each and recording it in
/// `progress.json` (atomically) before the next.
fn write_shards(
    rx: Receiver<Msg>,
    out: &Path,
    backend: Backend,
    spec: &TargetSpec,
    options: &WriterOptions,
    mut progress: Progress,
) -> Result<Progress> {
    let mut current: Option<(usize, ShardWriter)> = None;
    for msg in rx {
        match msg {
            Msg::Start(index) => {
                let name = format!("shard-{index:05}.{}", backend.extension());
                current = Some((
                    index,
                    ShardWriter::create(&out.join(name), backend, spec, options)?,
                ));
            }
            Msg::Record(rec) => match current.as_mut() {
                Some((_, w)) => w.write(&rec)?,
                None => return Err(Error::Config("record outside a shard".into())),
            },
            Msg::Finish => {
                let (index, w) = current
                    .take()
                    .ok_or_else(|| Error::Config("finish outside a shard".into()))?;
                progress.done.insert(index, w.finish()?);
                let text = serde_json::to_string_pretty(&progress).expect("progress serialises");
                kd_core::fs::write_atomic(&out.join(PROGRESS_FILE), text.as_bytes())?;
            }
        }
    }
    Ok(progress)
}

/// Masked, length-sorted batches of `seqs` for `epoch`.
fn teacher_batches<'a>(
    seqs: &'a [Sequence],
    epoch: u32,
    cfg: &'a PrecomputeConfig,
    masker: Option<&'a Masker>,
    pad: u32,
) -> impl Iterator<Item = Result<kd_data::Batch>> + 'a {
    let masked: Vec<Option<kd_data::MaskedSequence>> = seqs
        .par_iter()
        .map(|s| masker.map(|m| m.mask(&s.input_ids, cfg.seed, u64::from(epoch), s.id)))
        .collect();
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| (seqs[i].input_ids.len(), i));
    let chunks: Vec<Vec<usize>> = order
        .chunks(cfg.batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect();
    chunks.into_iter().map(move |idx| {
        let items: Vec<BatchItem> = idx
            .iter()
            .map(|&i| {
                let s = &seqs[i];
                let mut item = match &masked[i] {
                    Some(m) => BatchItem::masked(s.id, m),
                    None => BatchItem {
                        id: s.id,
                        input_ids: &s.input_ids,
                        token_type_ids: None,
                        mlm_positions: &[],
                        mlm_labels: &[],
                        label: None,
                    },
                };
                item.token_type_ids = s.token_type_ids.as_deref();
                item.label = s.label;
                item
            })
            .collect();
        Ok(collate(&items, pad)?)
    })
}
