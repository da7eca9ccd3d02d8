//! Precompute throughput and cache size on the real MiniLM teacher (6 layers, H 384, 12 heads)
//! over State of the Union text:
//! - teacher forward tokens/s alone vs `kd precompute` tokens/s in the same run (the cost of
//!   extracting, encoding and writing targets);
//! - bytes/token of a DistilBERT target set (top-32 MLM + last hidden) and a TinyBERT-4-style
//!   set (embeddings + 4 hidden + 4 attention layers) at f16 and int8, next to the naive fp32
//!   size of the same tensors padded to 128 tokens;
//! - reader decode tokens/s (streaming every record back to f32).
//!
//! Needs `scripts/fetch-assets.sh`. Prints one JSON object per measurement.

use candle_core::{DType, Device};
use kd_bert::checkpoint::save_hf_dir;
use kd_bert::{load_model, Architecture, ForwardCtx, LoadOptions};
use kd_cache::reader::CacheReader;
use kd_precompute::sources::SourceConfig;
use kd_precompute::{run_precompute, PrecomputeConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEQUENCES: usize = 192;

fn teacher_with_head(tmp: &Path) -> anyhow::Result<PathBuf> {
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

fn config(teacher: &Path, out: PathBuf, targets: &str) -> PrecomputeConfig {
    PrecomputeConfig {
        teacher: teacher.to_path_buf(),
        source: SourceConfig {
            corpus: vec![PathBuf::from("assets/sotu")],
            max_sequences: Some(SEQUENCES),
            ..SourceConfig::default()
        },
        out,
        targets: targets.into(),
        rows_per_shard: 64,
        ..PrecomputeConfig::default()
    }
}

/// Teacher forward alone (encoder + MLM head at ~15% of positions) over the same sequences
/// and batches.
fn bare_forward(teacher: &Path) -> anyhow::Result<f64> {
    let opts = LoadOptions {
        architecture: Some(Architecture::MaskedLm),
        ..LoadOptions::default()
    };
    let loaded = load_model(teacher, &opts)?;
    let model = loaded.inference_model()?;
    let tok = kd_bert::tokenizer::load_tokenizer(teacher)?;
    let enc = kd_data::TextEncoder::new(&tok)?;
    let seqs = config(teacher, PathBuf::new(), "hidden:last")
        .source
        .load(&enc, 0, None)?;
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| seqs[i].input_ids.len());
    let start = Instant::now();
    let mut tokens = 0usize;
    for chunk in order.chunks(32) {
        let items: Vec<kd_data::BatchItem> = chunk
            .iter()
            .map(|&i| kd_data::BatchItem {
                id: seqs[i].id,
                input_ids: &seqs[i].input_ids,
                token_type_ids: None,
                mlm_positions: &[],
                mlm_labels: &[],
                label: None,
            })
            .collect();
        let batch = kd_data::collate(&items, 0)?;
        tokens += batch.num_tokens();
        let input = kd_bert::BertInput::from_batch(&batch, &Device::Cpu)?;
        let out = model.encode(&input, &[], &mut ForwardCtx::eval())?;
        // The teacher's own work for MLM targets: the head at ~15% of the positions.
        let n = batch.batch_size * batch.seq_len;
        let pos: Vec<u32> = (0..n as u32).filter(|p| p % 7 == 3).collect();
        let pos = candle_core::Tensor::from_vec(pos.clone(), pos.len(), &Device::Cpu)?;
        let h = kd_bert::model::gather_positions(out.last_hidden_state(), &pos)?;
        model
            .mlm_logits(&h)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()?;
    }
    Ok(tokens as f64 / start.elapsed().as_secs_f64())
}

/// Naive fp32 bytes per token of a target set, padded to 128 tokens.
fn naive_bytes_per_token(
    hidden_layers: usize,
    attention_layers: usize,
    topk: Option<usize>,
) -> f64 {
    let (l, h, heads) = (128.0, 384.0, 12.0);
    let mut per_token = hidden_layers as f64 * h * 4.0 + attention_layers as f64 * heads * l * 4.0;
    if let Some(k) = topk {
        per_token += 0.15 * k as f64 * 8.0;
    }
    per_token
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "200");
    }
    std::env::set_var("KD_NO_PROGRESS", "1");
    let tmp = tempfile::tempdir()?;
    let teacher = teacher_with_head(tmp.path())?;
    let sets = [
        ("distilbert", "mlm-topk:k=32,hidden:last", 1, 0, Some(32)),
        (
            "distilbert-int8",
            "mlm-topk:k=32,hidden:last@int8",
            1,
            0,
            Some(32),
        ),
        (
            "tinybert4",
            "hidden:0,2,3,5,6,attention:2,3,5,6@f16",
            5,
            4,
            None,
        ),
        (
            "tinybert4-int8",
            "hidden:0,2,3,5,6@int8,attention:2,3,5,6@int8",
            5,
            4,
            None,
        ),
    ];
    for (name, targets, nh, na, k) in sets {
        // Measured right before each precompute so both see the same machine load.
        let bare = bare_forward(&teacher)?;
        let out = tmp.path().join(name);
        let report = run_precompute(&config(&teacher, out.clone(), targets), &Device::Cpu)?;
        let start = Instant::now();
        let reader = CacheReader::open(&out)?;
        let mut tokens = 0usize;
        for rec in reader.iter() {
            let rec = rec?;
            tokens += rec.len();
            for l in rec.hidden.iter().chain(&rec.attention) {
                std::hint::black_box(l.values.decode());
            }
            if let Some(t) = &rec.mlm_topk {
                std::hint::black_box(t.logits.decode());
            }
        }
        let decode = tokens as f64 / start.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({"what": "precompute", "set": name, "targets": targets,
                "tokens_per_s": report.tokens_per_s, "teacher_forward_tokens_per_s": bare,
                "vs_teacher_forward": report.tokens_per_s / bare,
                "bytes_per_token": report.bytes as f64 / report.tokens as f64,
                "naive_fp32_bytes_per_token": naive_bytes_per_token(nh, na, k),
                "reader_decode_tokens_per_s": decode})
        );
    }
    Ok(())
}
