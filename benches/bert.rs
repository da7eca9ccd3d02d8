//! Throughput of the BERT model: forward tokens/s and one training step (forward, backward,
//! AdamW) for a BERT-base-sized config and for MiniLM's config, batch 8 x 128 tokens.
//! `--what maps_step` measures a TinyBERT-style step instead (forward + backward with the
//! attention scores of every layer kept and in the loss), fused CPU attention against the
//! composed candle ops in the same run (`--configs tinybert-4` is the TinyBERT-4 student).
//!
//! Prints one JSON object per measurement, the same shape as `benches/torch_bert.py`, so
//! `benches/run.sh` can report kd / torch ratios measured in the same run.

use candle_core::{DType, Device, Tensor, Var};

/// candle allocates a fresh buffer per op; mimalloc reuses them instead of paging memory in
/// and out of the kernel on every large tensor.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use kd_bert::model::BertAttention;
use kd_bert::{init_model, Architecture, BertConfig, BertInput, ForwardCtx, LoadedModel};
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
        "tinybert-4" => (312, 4, 12, 1200),
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
    let what = arg("--what", "forward,train_step");
    let what: Vec<&str> = what.split(',').collect();
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
        let report = |imp: &str, what: &str, t: f64| {
            println!(
                "{}",
                serde_json::json!({"impl": imp, "config": name, "what": what,
                    "tokens_per_s": (batch * len) as f64 / t})
            );
        };
        if what.contains(&"maps_step") {
            let timings = maps_step(&m, &input, iters)?;
            for (what, t) in ["maps_step", "maps_attention"].iter().zip(timings) {
                report("kd", what, t.fused);
                report("kd-composed", what, t.composed);
                println!(
                    "# {name} {what}: fused {:.4} s, composed {:.4} s, composed/fused {:.2}x",
                    t.fused,
                    t.composed,
                    t.composed / t.fused
                );
            }
        }
        if what.contains(&"forward") {
            let t = timed(iters, || {
                m.model
                    .encode(&input, &[], &mut ForwardCtx::eval())
                    .expect("forward");
            });
            report("kd", "forward", t);
        }
        if !what.contains(&"train_step") {
            continue;
        }
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
        report("kd", "train_step", t);
    }
    Ok(())
}

/// Seconds per TinyBERT-style step (forward with every layer's scores kept, MLM loss on 15% of
/// the tokens plus the attention loss on every layer, backward) and per attention block alone
/// (layer 1's attention with its scores kept, a random projection of its output plus the
/// attention loss, backward), fused attention and composed candle ops: `[step, block]`.
fn maps_step(m: &LoadedModel, input: &BertInput, iters: usize) -> anyhow::Result<[Timing; 2]> {
    let layers: Vec<usize> = (1..=m.model.config.num_hidden_layers).collect();
    let (b, l) = input.input_ids.dims2()?;
    let (h, heads) = (
        m.model.config.hidden_size,
        m.model.config.num_attention_heads,
    );
    let dev = Device::Cpu;
    let mut seeded = ChaCha8Rng::seed_from_u64(3);
    let mut uniform = |shape: &[usize]| -> anyhow::Result<Tensor> {
        let v: Vec<f32> = (0..shape.iter().product())
            .map(|_| seeded.random_range(-2.0..2.0))
            .collect();
        Ok(Tensor::from_vec(v, shape, &dev)?)
    };
    let target = uniform(&[b, heads, l, l])?;
    let (xs, r) = (
        Var::from_tensor(&uniform(&[b, l, h])?)?,
        uniform(&[b, l, h])?,
    );
    let mask = input.additive_mask(DType::F32)?;
    let positions: Vec<u32> = (0..(b * l) as u32).step_by(7).collect();
    let n = positions.len();
    let positions = Tensor::from_vec(positions, n, &dev)?;
    let labels = Tensor::from_vec(vec![1000u32; n], n, &dev)?;
    // TinyBERT's attention loss: masked scores (<= -100) count as 0, then the MSE.
    let attention_loss = |s: &Tensor| -> candle_core::Result<Tensor> {
        let floored = s.le(-100.0)?.where_cond(&s.zeros_like()?, s)?;
        floored.sub(&target)?.sqr()?.mean_all()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut step = || -> anyhow::Result<()> {
        let mut ctx = ForwardCtx::train(&mut rng);
        let out = m.model.encode(input, &layers, &mut ctx)?;
        let h = kd_bert::model::gather_positions(out.last_hidden_state(), &positions)?;
        let logits = m.model.mlm_logits(&h)?;
        let mut loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        for a in &out.attentions {
            loss = (loss + attention_loss(&a.maps.scores)?)?;
        }
        loss.backward()?;
        Ok(())
    };
    let step = alternate(iters, &mut step)?;
    let attention = m.model.encoder.layers[0].attention();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut block = || -> anyhow::Result<()> {
        let mut ctx = ForwardCtx::train(&mut rng);
        let (out, maps) = attention.forward(xs.as_tensor(), &mask, true, &mut ctx)?;
        let maps = maps.ok_or_else(|| anyhow::anyhow!("no attention maps"))?;
        let loss = (out.mul(&r)?.sum_all()? + attention_loss(&maps.scores)?)?;
        loss.backward()?;
        Ok(())
    };
    Ok([step, alternate(iters, &mut block)?])
}

/// Seconds of the fused and of the composed attention path.
struct Timing {
    fused: f64,
    composed: f64,
}

/// Times `f` with the fused attention and under [`BertAttention::with_composed`], alternating
/// per round so both see the same machine load; the fastest of `iters` rounds each (other
/// processes only ever add time), after one warm-up round.
fn alternate(iters: usize, f: &mut dyn FnMut() -> anyhow::Result<()>) -> anyhow::Result<Timing> {
    f()?;
    BertAttention::with_composed(&mut *f)?;
    let mut t = Timing {
        fused: f64::INFINITY,
        composed: f64::INFINITY,
    };
    for _ in 0..iters.max(1) {
        let start = Instant::now();
        f()?;
        t.fused = t.fused.min(start.elapsed().as_secs_f64());
        let start = Instant::now();
        BertAttention::with_composed(&mut *f)?;
        t.composed = t.composed.min(start.elapsed().as_secs_f64());
    }
    Ok(t)
}
