//! Throughput of the BERT model: forward tokens/s and one training step (forward, backward,
//! AdamW) for a BERT-base-sized config and for MiniLM's config, batch 8 x 128 tokens.
//!
//! Prints one JSON object per measurement, the same shape as `benches/torch_bert.py`, so
//! `benches/run.sh` can report kd / torch ratios measured in the same run.

use candle_core::{DType, Device, Tensor};

/// candle allocates a fresh buffer per op; mimalloc reuses them instead of paging memory in
/// and out of the kernel on every large tensor.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use kd_bert::{init_model, Architecture, BertConfig, BertInput, ForwardCtx};
use kd_train::optim::{AdamW, AdamWConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

fn config(name: &str) -> BertConfig {
    let mut c = BertConfig::tiny(30522);
    c.max_position_embeddings = 512;
    let (h, l, heads, ffn) = match name {
        "bert-base" => (768, 12, 12, 3072),
        "minilm" => (384, 6, 12, 1536),
        other => panic!("unknown config {other}"),
    };
    c.hidden_size = h;
    c.num_hidden_layers = l;
    c.num_attention_heads = heads;
    c.intermediate_size = ffn;
    c
}

fn timed(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_secs_f64() / iters as f64
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn main() -> anyhow::Result<()> {
    // candle's element-wise worker pool spins 25k iterations after each op before parking; on
    // small machines that steals the core the GEMM threads need. Keep a user's explicit choice.
    // Keep freed tensor buffers mapped instead of returning them to the kernel and faulting
    // fresh zeroed pages in on the next op (option 15 = `mi_option_purge_delay`, -1 = never).
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option of the allocator; no memory is touched.
        unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    }
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "200");
    }
    let configs = arg("--configs", "minilm,bert-base");
    let batch: usize = arg("--batch", "8").parse()?;
    let len: usize = arg("--len", "128").parse()?;
    let iters: usize = arg("--iters", "3").parse()?;
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for name in configs.split(',') {
        let cfg = config(name);
        let m = init_model(&cfg, Architecture::MaskedLm, 0, &dev, DType::F32)?;
        let ids: Vec<u32> = (0..batch * len)
            .map(|_| rng.random_range(1000..30000))
            .collect();
        let input = BertInput {
            input_ids: Tensor::from_vec(ids.clone(), (batch, len), &dev)?,
            token_type_ids: None,
            attention_mask: Some(Tensor::ones((batch, len), DType::U32, &dev)?),
        };
        let t = timed(iters, || {
            m.model
                .encode(&input, &[], &mut ForwardCtx::eval())
                .expect("forward");
        });
        let report = |what: &str, t: f64| {
            println!(
                "{}",
                serde_json::json!({"impl": "kd", "config": name, "what": what,
                    "tokens_per_s": (batch * len) as f64 / t})
            );
        };
        report("forward", t);
        let n_mask = ((batch * len) as f64 * 0.15) as usize;
        let flat: Vec<u32> = (0..n_mask as u32)
            .map(|i| (i * 6) % (batch * len) as u32)
            .collect();
        let labels: Vec<u32> = flat.iter().map(|&p| ids[p as usize]).collect();
        let flat = Tensor::from_vec(flat, n_mask, &dev)?;
        let labels = Tensor::from_vec(labels, n_mask, &dev)?;
        let mut opt = AdamW::new(&m.varmap, AdamWConfig::default())?;
        opt.set_lr(1e-4)?;
        let mut drop_rng = ChaCha8Rng::seed_from_u64(1);
        let t = timed(iters, || {
            let mut ctx = ForwardCtx::train(&mut drop_rng);
            let out = m.model.encode(&input, &[], &mut ctx).expect("forward");
            let h =
                kd_bert::model::gather_positions(out.last_hidden_state(), &flat).expect("gather");
            let logits = m.model.mlm_logits(&h).expect("head");
            let loss = candle_nn::loss::cross_entropy(&logits, &labels).expect("loss");
            let grads = loss.backward().expect("backward");
            opt.step(&grads).expect("step");
        });
        report("train_step", t);
    }
    Ok(())
}
