//! Attention targets as maps, as query/key projections or as input hidden states with the
//! query/key weights once per cache, on the real MiniLM teacher over State of the Union text,
//! at L = 128 and L = 512 (the packing's `max_len`):
//! - per form (maps f32 / f16 / int8; Q/K f16 / int8, and int8 with coarser scale groups;
//!   inputs f16 / int8 with a scale per (token, head), per (token, 64 or 128 values) or per
//!   token),
//!   the bytes per real token of its columns in zstd Parquet shards written as `kd precompute`
//!   writes them, and the error of the scores a student sees against the teacher's own f32
//!   scores: max |error|, RMS, and the mean KL(teacher || stored) of the attention
//!   distributions of the real query rows;
//! - the bytes per token of the whole TinyBERT target set (`hidden:0,2,4,6` at f16 or int8,
//!   attention of 2,4,6 in each form, `mlm-topk:k=32,t=1`): real shard bytes / real tokens,
//!   and the ratio to today's set (f16 hidden, f16 maps); the input form's weights file is a
//!   fixed size per cache, printed beside (not in the per-token bytes).
//!
//! The teacher is `runs/quickstart/teacher/model` (MiniLM with its fitted MLM head) when
//! present, else MiniLM with a fresh MLM head (the top-k bytes barely depend on the head).
//! One precompute per L writes the f32 reference (maps, Q/K, every hidden state, and the
//! input form reusing them with its weights file); every other cache is written from its
//! records. Needs `scripts/fetch-assets.sh`; `cargo bench -p kd-precompute --bench
//! attention_forms [-- SEQ128 SEQ512]`. Prints a table and one JSON object per row.

use candle_core::Device;
use kd_bert::checkpoint::save_hf_dir;
use kd_bert::{load_model, Architecture, LoadOptions};
use kd_cache::writer::{CacheWriter, WriterOptions};
use kd_cache::{attention_input, inspect, AttentionWeights, Backend, CacheReader, LayerValues};
use kd_cache::{Manifest, Precision, Quantized, Record, TargetSpec};
use kd_precompute::sources::SourceConfig;
use kd_precompute::{run_precompute, PrecomputeConfig};
use std::path::{Path, PathBuf};

const LAYERS: [u32; 3] = [2, 4, 6];
const HIDDEN: usize = 384;
const HEADS: usize = 12;
const REFERENCE: &str = "mlm-topk:k=32,t=1@f16,hidden:0,1,2,3,4,5,6@f32,attention:2,4,6@f32,\
                         attention-qk:2,4,6@f32,attention-input:2,4,6@f32";

/// How a form stores a layer's attention.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// The scores (`attention`).
    Maps,
    /// Query and key projections (`attention-qk`).
    Qk,
    /// The layer's input hidden state (`attention-input`).
    Input,
}

/// One way to store the attention targets of a layer.
#[derive(Clone, Copy)]
struct Form {
    name: &'static str,
    kind: Kind,
    precision: Precision,
    /// int8 Q/K or input scale group width (values per scale); 0 for the other forms.
    group: usize,
}

const fn form(name: &'static str, kind: Kind, precision: Precision, group: usize) -> Form {
    Form {
        name,
        kind,
        precision,
        group,
    }
}

const FORMS: [Form; 12] = [
    form("maps f32", Kind::Maps, Precision::F32, 0),
    form("maps f16", Kind::Maps, Precision::F16, 0),
    form("maps int8", Kind::Maps, Precision::Int8, 0),
    form("Q/K f16", Kind::Qk, Precision::F16, 0),
    form(
        "Q/K int8 (token,q|k,head)",
        Kind::Qk,
        Precision::Int8,
        HIDDEN / HEADS,
    ),
    form("Q/K int8 (token,q|k)", Kind::Qk, Precision::Int8, HIDDEN),
    form("Q/K int8 (token)", Kind::Qk, Precision::Int8, 2 * HIDDEN),
    form("input f16", Kind::Input, Precision::F16, 0),
    form(
        "input int8 (token,head)",
        Kind::Input,
        Precision::Int8,
        HIDDEN / HEADS,
    ),
    form("input int8 (token)", Kind::Input, Precision::Int8, HIDDEN),
    form(
        "input int8 (token,64 values) (kd's)",
        Kind::Input,
        Precision::Int8,
        2 * HIDDEN / HEADS,
    ),
    form(
        "input int8 (token,128 values)",
        Kind::Input,
        Precision::Int8,
        4 * HIDDEN / HEADS,
    ),
];

/// Attention forms of the full-set comparison (index into [`FORMS`]) and hidden precisions.
const SET_FORMS: [usize; 9] = [1, 2, 3, 4, 7, 8, 9, 10, 11];
const SET_HIDDEN: [Precision; 2] = [Precision::F16, Precision::Int8];

fn teacher(tmp: &Path) -> anyhow::Result<PathBuf> {
    let trained = PathBuf::from("runs/quickstart/teacher/model");
    if trained.join("config.json").exists() {
        return Ok(trained);
    }
    let dir = tmp.join("teacher");
    let opts = LoadOptions {
        architecture: Some(Architecture::MaskedLm),
        fresh_heads: true,
        ..LoadOptions::default()
    };
    let m = load_model(Path::new("assets/minilm"), &opts)?;
    save_hf_dir(&m.model, &m.varmap, &dir, Some(Path::new("assets/minilm")))?;
    Ok(dir)
}

/// The attention tensors of `rec` in `form` (from the f32 reference maps, Q/K or hidden
/// states), for the layers `spec` stores.
fn attention_in(rec: &Record, spec: &TargetSpec, form: Form) -> anyhow::Result<Vec<LayerValues>> {
    let inputs: Vec<LayerValues>;
    let src = match form.kind {
        Kind::Qk => &rec.attention_qk,
        Kind::Maps => &rec.attention,
        Kind::Input => {
            inputs = attention_input::stored_layers(spec)
                .into_iter()
                .map(|layer| LayerValues {
                    layer,
                    values: rec.hidden_layer(layer - 1).expect("input").clone(),
                })
                .collect();
            &inputs
        }
    };
    src.iter()
        .map(|l| {
            let cols = match (form.kind, form.precision) {
                (Kind::Qk | Kind::Input, Precision::Int8) => form.group,
                (Kind::Qk, _) => 2 * HIDDEN,
                (Kind::Input, _) => HIDDEN,
                _ => rec.len(),
            };
            let values = Quantized::encode(&l.values.decode(), cols, form.precision)?;
            Ok(LayerValues {
                layer: l.layer,
                values,
            })
        })
        .collect()
}

/// `rec` holding only `spec`'s targets, attention in `form`, hidden at `spec`'s precision.
fn convert(rec: &Record, spec: &TargetSpec, form: Form) -> anyhow::Result<Record> {
    let layers = spec
        .hidden
        .as_ref()
        .map(|h| h.layers.clone())
        .unwrap_or_default();
    let mut r = Record {
        hidden: rec
            .hidden
            .iter()
            .filter(|l| layers.contains(&l.layer))
            .cloned()
            .collect(),
        mlm_topk: spec.mlm_topk.as_ref().and(rec.mlm_topk.clone()),
        attention: Vec::new(),
        attention_qk: Vec::new(),
        attention_input: Vec::new(),
        ..rec.clone()
    };
    match form.kind {
        Kind::Qk => r.attention_qk = attention_in(rec, spec, form)?,
        Kind::Maps => r.attention = attention_in(rec, spec, form)?,
        Kind::Input => r.attention_input = attention_in(rec, spec, form)?,
    }
    r.conform(spec)?;
    Ok(r)
}

/// The spec of `form` alone, or (`hidden` given) of the TinyBERT set with it.
fn spec_for(form: Form, hidden: Option<Precision>) -> TargetSpec {
    let p = form.precision;
    let text = match (form.kind, hidden) {
        (Kind::Maps, None) => format!("attention:2,4,6@{p}"),
        (Kind::Qk, None) => format!("attention-qk:2,4,6@{p}"),
        (Kind::Input, None) => format!("attention-input:2,4,6@{p}"),
        (Kind::Maps, Some(h)) => format!("hidden:0,2,4,6@{h},attention:2,4,6@{p}"),
        (Kind::Qk, Some(h)) => format!("hidden:0,2,4,6@{h},attention-qk:2,4,6@{p}"),
        (Kind::Input, Some(h)) => format!("hidden:0,2,4,6@{h},attention-input:2,4,6@{p}"),
    };
    let text = match hidden {
        Some(_) => format!("mlm-topk:k=32,t=1@f16,{text}"),
        None => text,
    };
    TargetSpec::parse(&text, 6).expect("a valid target string")
}

/// Running score errors of one form.
#[derive(Default)]
struct Errors {
    max: f64,
    sq: f64,
    entries: usize,
    kl: f64,
    rows: usize,
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let z = x
        .iter()
        .map(|&v| (f64::from(v) - m).exp())
        .sum::<f64>()
        .ln()
        + m;
    x.iter().map(|&v| f64::from(v) - z).collect()
}

impl Errors {
    fn add(&mut self, reference: &[f32], got: &[f32], n: usize) {
        for (a, b) in reference.iter().zip(got) {
            let e = f64::from(a - b);
            self.max = self.max.max(e.abs());
            self.sq += e * e;
        }
        self.entries += reference.len();
        for (p, q) in reference.chunks(n).zip(got.chunks(n)) {
            let (lp, lq) = (log_softmax(p), log_softmax(q));
            self.kl += lp
                .iter()
                .zip(&lq)
                .map(|(a, b)| a.exp() * (a - b))
                .sum::<f64>();
            self.rows += 1;
        }
    }
}

fn writer(
    dir: &Path,
    spec: &TargetSpec,
    base: &Manifest,
    weights: &AttentionWeights,
) -> anyhow::Result<CacheWriter> {
    let mut m = Manifest::new(spec.clone(), Backend::Parquet);
    m.teacher = base.teacher.clone();
    m.tokenizer_sha256 = base.tokenizer_sha256.clone();
    let options = WriterOptions {
        zstd_level: PrecomputeConfig::default().zstd_level,
        ..WriterOptions::default()
    };
    let mut w = CacheWriter::create(dir, m, options)?;
    if spec.attention_input.is_some() {
        w.set_attention_weights(weights)?;
    }
    Ok(w)
}

fn run_length(max_len: usize, sequences: usize, teacher: &Path, tmp: &Path) -> anyhow::Result<()> {
    let base_dir = tmp.join(format!("reference-{max_len}"));
    let cfg = PrecomputeConfig {
        teacher: teacher.to_path_buf(),
        source: SourceConfig {
            corpus: vec![PathBuf::from("assets/sotu")],
            max_sequences: Some(sequences),
            max_len,
            ..SourceConfig::default()
        },
        out: base_dir.clone(),
        targets: REFERENCE.into(),
        rows_per_shard: 100_000,
        batch_size: if max_len > 256 { 8 } else { 32 },
        ..PrecomputeConfig::default()
    };
    run_precompute(&cfg, &Device::Cpu)?;
    let base = CacheReader::open(&base_dir)?;
    let manifest = base.manifest().clone();
    let weights = base
        .attention_weights()
        .expect("the reference's weights")
        .clone();
    let weights_bytes = manifest.attention_weights.as_ref().map_or(0, |w| w.bytes);

    let mut forms = Vec::new();
    for (i, f) in FORMS.iter().enumerate() {
        let spec = spec_for(*f, None);
        forms.push((
            spec.clone(),
            writer(
                &tmp.join(format!("form-{max_len}-{i}")),
                &spec,
                &manifest,
                &weights,
            )?,
        ));
    }
    let mut sets = Vec::new();
    for &h in &SET_HIDDEN {
        for &i in &SET_FORMS {
            let spec = spec_for(FORMS[i], Some(h));
            let dir = tmp.join(format!("set-{max_len}-{h}-{i}"));
            let w = writer(&dir, &spec, &manifest, &weights)?;
            sets.push((h, i, spec.clone(), w));
        }
    }
    let mut errors: Vec<Errors> = FORMS.iter().map(|_| Errors::default()).collect();
    let (mut tokens, mut records) = (0usize, 0usize);
    for rec in base.iter() {
        let rec = rec?;
        let n = rec.len();
        tokens += n;
        records += 1;
        for (i, f) in FORMS.iter().enumerate() {
            let r = convert(&rec, &forms[i].0, *f)?;
            for &layer in &LAYERS {
                let reference = rec.attention_layer(layer).expect("reference maps").decode();
                let got = r.attention_scores(layer, HIDDEN, HEADS)?.expect("stored");
                errors[i].add(&reference, &got, n);
            }
            forms[i].1.write(&r)?;
        }
        for (_, i, spec, w) in &mut sets {
            w.write(&convert(&rec, spec, FORMS[*i])?)?;
        }
    }

    println!(
        "\nL = {max_len}: {records} sequences, {tokens} real tokens ({:.1} per sequence)",
        tokens as f64 / records.max(1) as f64
    );
    println!("| form | attention B/token (3 layers) | max abs err | RMS err | mean KL (nats) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (i, (_, w)) in forms.into_iter().enumerate() {
        let m = w.finish()?;
        let dir = tmp.join(format!("form-{max_len}-{i}"));
        let report = inspect(&dir)?;
        let att: u64 = report
            .columns
            .iter()
            .filter(|c| c.name.starts_with("attention") || c.name.starts_with("hidden"))
            .map(|c| c.bytes)
            .sum();
        let per_token = att as f64 / m.tokens() as f64;
        let e = &errors[i];
        let rms = (e.sq / e.entries.max(1) as f64).sqrt();
        let kl = e.kl / e.rows.max(1) as f64;
        println!(
            "| {} | {per_token:.1} | {:.3e} | {rms:.3e} | {kl:.3e} |",
            FORMS[i].name, e.max
        );
        println!(
            "{}",
            serde_json::json!({"bench": "attention_forms", "max_len": max_len,
                "form": FORMS[i].name, "attention_bytes_per_token": per_token,
                "shard_bytes_per_token": report.bytes_per_token(), "max_abs_error": e.max,
                "rms_error": rms, "mean_kl": kl, "tokens": m.tokens()})
        );
    }
    println!("| TinyBERT set (mlm-topk:k=32,t=1 + hidden:0,2,4,6 + attention 2,4,6) | B/token | ratio to f16 hidden + f16 maps |");
    println!("| --- | ---: | ---: |");
    let mut done = Vec::new();
    for (h, i, _, w) in sets {
        let m = w.finish()?;
        done.push((h, i, m.bytes() as f64 / m.tokens() as f64));
    }
    let today = done
        .iter()
        .find(|(h, i, _)| *h == Precision::F16 && *i == 1)
        .map(|d| d.2)
        .unwrap_or(f64::NAN);
    println!(
        "(input forms: plus one weights file of {weights_bytes} bytes per cache, {:.1} B/token \
         over these {} tokens)",
        weights_bytes as f64 / tokens.max(1) as f64,
        tokens
    );
    for (h, i, b) in done {
        let name = FORMS[i].name.to_string();
        println!("| hidden {h}, {name} | {b:.1} | {:.3} |", b / today);
        println!(
            "{}",
            serde_json::json!({"bench": "attention_forms_set", "max_len": max_len,
                "hidden": h.to_string(), "attention": name,
                "bytes_per_token": b, "ratio_to_today": b / today})
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // Run from the workspace root whatever cargo's working directory is.
    std::env::set_current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))?;
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (s128, s512) = (
        args.first().copied().unwrap_or(96),
        args.get(1).copied().unwrap_or(24),
    );
    let tmp = tempfile::tempdir()?;
    let teacher = teacher(tmp.path())?;
    println!("teacher: {}", teacher.display());
    run_length(128, s128, &teacher, tmp.path())?;
    run_length(512, s512, &teacher, tmp.path())?;
    Ok(())
}
