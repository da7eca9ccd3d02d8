//! Throughput of the BiLSTM layer at Tang et al.'s shape: batch 50, hidden 150 per direction,
//! embedding 300 and 384 (MiniLM's width), lengths spread over 30..=60 (the same lengths as
//! `benches/lstm_torch.py`). `forward`: inference, no graph; `train_step`: forward + backward
//! of `sum(out * probe)` (gradients of the input and all eight parameters).
//!
//! Prints one JSON object per measurement (`impl`, `config`, `what`, `tokens_per_s` over real
//! tokens), the shape `benches/lstm.sh` compares with PyTorch's in the same run.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use kd_lstm::BiLstm;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// Reuse freed buffers instead of faulting fresh pages in on every op.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// Median seconds per call over `iters` calls after one warm-up.
fn timed(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// The lengths both benchmarks use: 30..=60 spread over the batch.
fn lengths(batch: usize, max_len: usize) -> Vec<usize> {
    (0..batch)
        .map(|i| (30 + (i * 7) % 31).min(max_len))
        .collect()
}

fn main() -> candle_core::Result<()> {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "200");
    }
    let batch: usize = arg("--batch", "50").parse().expect("--batch");
    let hidden: usize = arg("--hidden", "150").parse().expect("--hidden");
    let iters: usize = arg("--iters", "10").parse().expect("--iters");
    let embeds = arg("--embed", "300,384");
    let dev = Device::Cpu;
    let lens = lengths(batch, 60);
    let t = *lens.iter().max().expect("batch > 0");
    let tokens: usize = lens.iter().sum();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for e in embeds.split(',') {
        let e: usize = e.parse().expect("--embed");
        let varmap = VarMap::new();
        let lstm = BiLstm::new(
            e,
            hidden,
            VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        )?;
        let x: Vec<f32> = (0..batch * t * e)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let x = Tensor::from_vec(x, (batch, t, e), &dev)?;
        let probe: Vec<f32> = (0..batch * t * 2 * hidden)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let probe = Tensor::from_vec(probe, (batch, t, 2 * hidden), &dev)?;
        let config = format!("E{e}-H{hidden}-B{batch}-T30..60");
        let report = |what: &str, secs: f64| {
            println!(
                "{{\"impl\": \"kd\", \"config\": \"{config}\", \"what\": \"{what}\", \
                 \"tokens_per_s\": {:.1}, \"ms\": {:.3}}}",
                tokens as f64 / secs,
                secs * 1e3
            );
        };
        let fwd = timed(iters, || {
            lstm.forward(&x, &lens).expect("forward");
        });
        report("forward", fwd);
        let xv = candle_core::Var::from_tensor(&x)?;
        let step = timed(iters, || {
            let out = lstm.forward(xv.as_tensor(), &lens).expect("forward");
            let loss = (&out * &probe).and_then(|l| l.sum_all()).expect("loss");
            loss.backward().expect("backward");
        });
        report("train_step", step);
    }
    Ok(())
}
