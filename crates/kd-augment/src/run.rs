//! `kd augment` as a function: settings in, transfer set file and report out.

use crate::error::{AugmentError, Result};
use crate::input::{parse_label_kind, read_examples, InputSpec};
use crate::lexicon::Lexicon;
use crate::neighbours::Neighbours;
use crate::output::write_row;
use crate::parquet_out::ParquetRows;
use crate::rng::copy_rng;
use crate::tang::{TangSettings, TangText};
use crate::teacher::MlmTeacher;
use crate::tinybert::{prepare, TinyBertSettings};
use candle_core::Device;
use kd_core::fs::TmpFile;
use kd_data::{TaskExample, TaskSplit};
use kd_train::Progress;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Examples prepared and written per step (the teacher's batches are cut from each step's
/// masked inputs).
const EXAMPLES_PER_STEP: usize = 64;

/// The augmentation family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// TinyBERT: teacher-MLM and embedding-neighbour word replacement.
    #[default]
    Tinybert,
    /// Tang et al.: masking, POS-guided replacement, n-gram sampling.
    Tang,
}

impl Method {
    /// The name written in the `method` column.
    pub fn name(self) -> &'static str {
        match self {
            Method::Tinybert => "tinybert",
            Method::Tang => "tang",
        }
    }
}

/// Settings of an augmentation run (a pipeline `augment` step's table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// The task file: `movieReviewSnippets_GroundTruth.txt`, or a JSONL / TSV task file.
    pub input: PathBuf,
    /// Split of the movie-review file (`train`, `dev` or `test`).
    pub split: TaskSplit,
    /// Text column / field of a task file.
    pub text: String,
    /// Second text of a pair, if any.
    pub text_pair: Option<String>,
    /// Label column / field of a task file.
    pub label: String,
    /// `class` (integer ids), `named` (strings) or `regression` (the movie-review ratings).
    pub label_kind: String,
    /// `tinybert` or `tang`.
    pub method: Method,
    /// Output JSONL file (written atomically).
    pub out: PathBuf,
    /// Also write the rows as Parquet beside it (`out` with the extension `.parquet`).
    pub parquet: bool,
    /// Augmented copies drawn per example (duplicates are dropped, so fewer may be written).
    pub copies: usize,
    /// Seed of every draw; the same seed writes the same bytes.
    pub seed: u64,
    /// Augment only the first this-many examples, in file order (for a quick look: files
    /// sorted by label, as the movie-review file lists positive reviews first, would give a
    /// one-sided transfer set: `sample` draws across the file).
    pub limit: Option<usize>,
    /// Or augment a seeded sample of this many examples (drawn with `seed`, written in file
    /// order; each keeps its file position as `source_id` and draws the copies it would draw
    /// in a full run).
    pub sample: Option<usize>,
    /// Teacher with an MLM head (`tinybert`).
    pub teacher: Option<PathBuf>,
    /// Masked inputs per teacher forward pass (`tinybert`).
    pub batch_size: usize,
    /// Brill's lexicon, `lexicon.js` of npm `pos@0.4.2` (`tang`).
    pub lexicon: PathBuf,
    /// TinyBERT's rule.
    pub tinybert: TinyBertSettings,
    /// Tang et al.'s rules.
    pub tang: TangSettings,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            input: PathBuf::new(),
            split: TaskSplit::Train,
            text: "text".into(),
            text_pair: None,
            label: "label".into(),
            label_kind: "class".into(),
            method: Method::Tinybert,
            out: PathBuf::from("runs/augment/transfer.jsonl"),
            parquet: false,
            copies: 20,
            seed: 0,
            limit: None,
            sample: None,
            teacher: None,
            batch_size: 32,
            lexicon: PathBuf::from("assets/pos/lexicon.js"),
            tinybert: TinyBertSettings::default(),
            tang: TangSettings::default(),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AugmentReport {
    /// `tinybert` or `tang`.
    pub method: String,
    /// The transfer set written.
    pub out: PathBuf,
    /// Examples read.
    pub examples_in: usize,
    /// Augmented rows written (originals not counted).
    pub copies_out: usize,
    /// Copies dropped as duplicates of the original or of an earlier copy.
    pub duplicates_dropped: usize,
    /// All rows written (originals and copies).
    pub rows: usize,
    /// Wall time of the augmentation (loading included).
    pub seconds: f64,
    /// Input examples per second.
    pub sentences_per_s: f64,
}

impl std::fmt::Display for AugmentReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "augment ({}): {} examples in, {} copies out, {} duplicates dropped, {} rows, \
             {:.1} sentences/s -> {}",
            self.method,
            self.examples_in,
            self.copies_out,
            self.duplicates_dropped,
            self.rows,
            self.sentences_per_s,
            self.out.display()
        )
    }
}

/// The copies of a run of examples, per example a list of `(text, text_b)`.
type Copies = Vec<Vec<(String, Option<String>)>>;

/// One family's augmenter.
enum Augmenter {
    Tang(Lexicon),
    TinyBert {
        teacher: Box<MlmTeacher>,
        neighbours: Neighbours,
        cache: HashMap<String, Vec<u32>>,
    },
}

impl Augmenter {
    fn open(cfg: &AugmentConfig, device: &Device) -> Result<Self> {
        Ok(match cfg.method {
            Method::Tang => Augmenter::Tang(Lexicon::load(&cfg.lexicon)?),
            Method::Tinybert => {
                let dir = cfg.teacher.as_deref().ok_or_else(|| {
                    AugmentError::Setting(
                        "teacher: TinyBERT's augmentation needs a teacher with an MLM head \
                         (--teacher DIR)"
                            .into(),
                    )
                })?;
                let teacher = MlmTeacher::load(dir, device)?;
                let neighbours = Neighbours::new(&teacher)?;
                Augmenter::TinyBert {
                    teacher: Box::new(teacher),
                    neighbours,
                    cache: HashMap::new(),
                }
            }
        })
    }

    /// `cfg.copies` copies of each of `examples`, the first being example `first`.
    fn copies(
        &mut self,
        cfg: &AugmentConfig,
        examples: &[&TaskExample],
        ids: &[u64],
    ) -> Result<Copies> {
        let method = cfg.method.name().as_bytes();
        let mut out = Vec::with_capacity(examples.len());
        match self {
            Augmenter::Tang(lexicon) => {
                for (k, ex) in examples.iter().enumerate() {
                    let a = TangText::new(&ex.text, lexicon);
                    let b = ex.text_pair.as_deref().map(|t| TangText::new(t, lexicon));
                    let copies = (0..cfg.copies as u64)
                        .map(|c| {
                            let mut rng = copy_rng(method, cfg.seed, ids[k], c);
                            let ta = a.augment(lexicon, &cfg.tang, &mut rng);
                            let tb = b.as_ref().map(|b| b.augment(lexicon, &cfg.tang, &mut rng));
                            (ta, tb)
                        })
                        .collect();
                    out.push(copies);
                }
            }
            Augmenter::TinyBert {
                teacher,
                neighbours,
                cache,
            } => {
                let texts: Vec<&str> = examples
                    .iter()
                    .flat_map(|ex| std::iter::once(ex.text.as_str()).chain(ex.text_pair.as_deref()))
                    .collect();
                let prepared = prepare(
                    teacher,
                    neighbours,
                    cache,
                    &texts,
                    &cfg.tinybert,
                    cfg.batch_size,
                )?;
                let mut it = prepared.iter();
                let p = cfg.tinybert.replace_prob;
                for (k, ex) in examples.iter().enumerate() {
                    let a = it.next().expect("one prepared text per text");
                    let b = ex.text_pair.as_ref().map(|_| it.next().expect("pair text"));
                    let copies = (0..cfg.copies as u64)
                        .map(|c| {
                            let mut rng = copy_rng(method, cfg.seed, ids[k], c);
                            let ta = a.augment(p, &mut rng);
                            let tb = b.map(|b| b.augment(p, &mut rng));
                            (ta, tb)
                        })
                        .collect();
                    out.push(copies);
                }
            }
        }
        Ok(out)
    }
}

impl AugmentConfig {
    /// Checks the settings that can be checked without reading files.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(AugmentError::Setting(m));
        if self.input.as_os_str().is_empty() {
            return bad("input: no task file given".into());
        }
        if self.out.as_os_str().is_empty() {
            return bad("out: no output file given".into());
        }
        if self.parquet && parquet_path(&self.out) == self.out {
            return bad(format!(
                "out: {} ends in .parquet; with parquet = true the JSONL goes to `out` and the \
                 Parquet copy beside it",
                self.out.display()
            ));
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.limit.is_some() && self.sample.is_some() {
            return bad(
                "limit and sample: give one (the first N examples, or a seeded sample)".into(),
            );
        }
        self.tinybert.check().map_err(AugmentError::Setting)?;
        self.tang.check().map_err(AugmentError::Setting)?;
        parse_label_kind(&self.label_kind)?;
        Ok(())
    }
}

/// Reads the task file, augments every example and writes the transfer set: each example's
/// original first, then its distinct copies.
pub fn run_augment(cfg: &AugmentConfig, device: &Device) -> Result<AugmentReport> {
    let started = Instant::now();
    cfg.check()?;
    let kind = parse_label_kind(&cfg.label_kind)?;
    let spec = InputSpec {
        split: cfg.split,
        text: &cfg.text,
        text_pair: cfg.text_pair.as_deref(),
        label: &cfg.label,
        label_kind: kind,
    };
    let data = read_examples(&cfg.input, &spec)?;
    let selected = selected_examples(cfg, data.examples.len());
    let mut augmenter = Augmenter::open(cfg, device)?;
    if let Some(dir) = cfg.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|cause| AugmentError::Io {
            path: dir.to_path_buf(),
            cause,
        })?;
    }
    let (guard, file) = TmpFile::create(&cfg.out)?;
    let io_err = |cause| AugmentError::Io {
        path: guard.tmp().to_path_buf(),
        cause,
    };
    let mut w = BufWriter::new(file);
    let progress = Progress::new(selected.len() as u64, "augment");
    let mut columns = cfg.parquet.then(ParquetRows::default);
    let (mut copies_out, mut duplicates, mut rows) = (0, 0, 0);
    for ids in selected.chunks(EXAMPLES_PER_STEP) {
        let chunk: Vec<&TaskExample> = ids.iter().map(|&i| &data.examples[i as usize]).collect();
        let copies = augmenter.copies(cfg, &chunk, ids)?;
        for ((ex, copies), &id) in chunk.iter().zip(copies).zip(ids) {
            let original = (ex.text.as_str(), ex.text_pair.as_deref());
            write_row(&mut w, &data, kind, id, original, "original").map_err(io_err)?;
            if let Some(c) = columns.as_mut() {
                c.push(id, original, "original");
            }
            rows += 1;
            let mut seen: HashSet<(String, Option<String>)> = HashSet::new();
            seen.insert((ex.text.clone(), ex.text_pair.clone()));
            for (a, b) in copies {
                if seen.contains(&(a.clone(), b.clone())) {
                    duplicates += 1;
                    continue;
                }
                write_row(
                    &mut w,
                    &data,
                    kind,
                    id,
                    (&a, b.as_deref()),
                    cfg.method.name(),
                )
                .map_err(io_err)?;
                if let Some(c) = columns.as_mut() {
                    c.push(id, (&a, b.as_deref()), cfg.method.name());
                }
                seen.insert((a, b));
                copies_out += 1;
                rows += 1;
            }
        }
        progress.inc(chunk.len() as u64);
    }
    w.flush().map_err(io_err)?;
    drop(w);
    if let Some(c) = &columns {
        c.write(&parquet_path(&cfg.out), &data, kind)?;
    }
    guard.commit()?;
    write_provenance(cfg)?;
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let report = AugmentReport {
        method: cfg.method.name().into(),
        out: cfg.out.clone(),
        examples_in: selected.len(),
        copies_out,
        duplicates_dropped: duplicates,
        rows,
        seconds,
        sentences_per_s: selected.len() as f64 / seconds.max(1e-9),
    };
    progress.println(report.to_string());
    Ok(report)
}

/// The file positions of the examples to augment, ascending: the first `limit`, a seeded
/// sample of `sample`, or all `n`.
fn selected_examples(cfg: &AugmentConfig, n: usize) -> Vec<u64> {
    let mut ids: Vec<u64> = (0..n as u64).collect();
    if let Some(k) = cfg.sample.filter(|&k| k < n) {
        let mut rng = kd_core::rng::SeedHash::tagged(b"kd-augment/sample/v1\0")
            .u64(cfg.seed)
            .rng();
        kd_core::rng::shuffle_with(&mut ids, &mut rng, kd_core::rng::below_by_canon);
        ids.truncate(k);
        ids.sort_unstable();
    }
    if let Some(k) = cfg.limit {
        ids.truncate(k);
    }
    ids
}

/// Records beside the transfer set what wrote it (settings, input and output checksums), so
/// a cache precomputed over it can carry the augmentation settings in its manifest.
fn write_provenance(cfg: &AugmentConfig) -> Result<()> {
    let record = kd_data::Provenance {
        tool: format!("kd augment {}", env!("CARGO_PKG_VERSION")),
        input: cfg.input.display().to_string(),
        input_sha256: kd_core::fs::sha256_file(&cfg.input)?,
        sha256: kd_core::fs::sha256_file(&cfg.out)?,
        settings: serde_json::to_value(cfg).expect("settings serialise"),
    };
    let json = serde_json::to_string_pretty(&record).expect("provenance serialises");
    kd_core::fs::write_atomic(&kd_data::provenance_path(&cfg.out), json.as_bytes())?;
    Ok(())
}

/// Where the Parquet copy of the transfer set `out` goes: `out` with the extension `.parquet`.
pub fn parquet_path(out: &Path) -> PathBuf {
    out.with_extension("parquet")
}
