//! Throughput of the BiLSTM layer at Tang et al.'s shape: batch 50, hidden 150 per direction,
//! embedding 300 and 384 (MiniLM's width), lengths spread over 30..=60 (the same lengths as
//! `benches/lstm_torch.py`). `forward`: inference; `train_step`: forward + backward of
//! `sum(out * probe)` (gradients of the input and all eight parameters), also with the
//! composed step-by-step recurrence (`kd-composed`, `--composed 0` skips it);
//! `model_forward` / `model_step`: the whole classifier (embedding table 30522 x E, BiLSTM, max
//! pooling, ReLU layer 200, 2 classes), forward and forward + cross-entropy + backward.
//!
//! Prints one JSON object per measurement (`impl`, `config`, `what`, `tokens_per_s` over real
//! tokens), the shape `benches/lstm.sh` compares with PyTorch's in the same run.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use kd_bert::ForwardCtx;
use kd_data::{collate, BatchItem};
use kd_lstm::lstm::composed_recurrence;
use kd_lstm::{BiLstm, BiLstmConfig};
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

/// CPU time of this process so far (every thread), from `/proc/self/task/*/schedstat`.
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        * 1e-9
}

/// The fastest of `iters` calls after one warm-up, as (wall, CPU) seconds: on a shared
/// machine the minimum is the least disturbed measure, and the CPU time of a single-threaded
/// run does not count the waits for a core (`lstm_torch.py` takes the same).
fn timed(iters: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    (0..iters.max(1))
        .map(|_| {
            let (start, cpu) = (Instant::now(), cpu_seconds());
            f();
            (start.elapsed().as_secs_f64(), cpu_seconds() - cpu)
        })
        .fold((f64::INFINITY, f64::INFINITY), |a, b| {
            (a.0.min(b.0), a.1.min(b.1))
        })
}

/// One JSON line: real tokens per second of wall time, wall and CPU milliseconds per call.
fn report(imp: &str, config: &str, what: &str, tokens: usize, (wall, cpu): (f64, f64)) {
    println!(
        "{{\"impl\": \"{imp}\", \"config\": \"{config}\", \"what\": \"{what}\", \
         \"tokens_per_s\": {:.1}, \"ms\": {:.3}, \"cpu_ms\": {:.3}}}",
        tokens as f64 / wall,
        wall * 1e3,
        cpu * 1e3
    );
}

/// The lengths both benchmarks use: 30..=60 spread over the batch.
fn lengths(batch: usize, max_len: usize) -> Vec<usize> {
    (0..batch)
        .map(|i| (30 + (i * 7) % 31).min(max_len))
        .collect()
}

fn main() -> candle_core::Result<()> {
    // As the kd binary does: keep freed buffers mapped (option 15 = `mi_option_purge_delay`,
    // -1 = never) instead of faulting fresh zeroed pages in on the next op.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option of the allocator; no memory is touched.
        unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    }
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "200");
    }
    let batch: usize = arg("--batch", "50").parse().expect("--batch");
    let hidden: usize = arg("--hidden", "150").parse().expect("--hidden");
    let iters: usize = arg("--iters", "10").parse().expect("--iters");
    let embeds = arg("--embed", "300,384");
    let composed = arg("--composed", "1") == "1";
    let what = arg("--what", "forward,train_step,model_forward,model_step");
    let what: Vec<&str> = what.split(',').collect();
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
        let report = |what: &str, t: (f64, f64)| report("kd", &config, what, tokens, t);
        if what.contains(&"forward") {
            let fwd = timed(iters, || {
                lstm.forward(&x, &lens).expect("forward");
            });
            report("forward", fwd);
        }
        let xv = candle_core::Var::from_tensor(&x)?;
        if what.contains(&"train_step") {
            let step = timed(iters, || {
                let out = lstm.forward(xv.as_tensor(), &lens).expect("forward");
                let loss = (&out * &probe).and_then(|l| l.sum_all()).expect("loss");
                loss.backward().expect("backward");
            });
            report("train_step", step);
        }
        if composed && what.contains(&"train_step") {
            let w_hh = Tensor::stack(&[&lstm.forward.weight_hh, &lstm.reverse.weight_hh], 0)?;
            let step = timed(iters.min(3), || {
                let xw = lstm.input_projection(xv.as_tensor()).expect("projection");
                let out = composed_recurrence(&xw, &w_hh, &lens).expect("forward");
                let loss = (&out * &probe).and_then(|l| l.sum_all()).expect("loss");
                loss.backward().expect("backward");
            });
            self::report("kd-composed", &config, "train_step", tokens, step);
        }
        if what.iter().any(|w| w.starts_with("model_")) {
            model_steps(e, hidden, &lens, iters, &config, &mut rng)?;
        }
    }
    Ok(())
}

/// The whole classifier (vocabulary 30522, ReLU layer 200, 2 classes): `model_forward` and
/// `model_step` (forward, cross-entropy, backward; no optimizer).
fn model_steps(
    e: usize,
    hidden: usize,
    lens: &[usize],
    iters: usize,
    config: &str,
    rng: &mut ChaCha8Rng,
) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let cfg = BiLstmConfig {
        vocab_size: 30522,
        embedding_size: e,
        hidden_size: hidden,
        mlp_hidden_size: 200,
        num_labels: 2,
        dropout: 0.0,
        ..BiLstmConfig::default()
    };
    let built =
        kd_lstm::init::fresh(&cfg, 0, &dev).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let seqs: Vec<Vec<u32>> = lens
        .iter()
        .map(|&l| (0..l).map(|_| rng.random_range(1000..30000)).collect())
        .collect();
    let items: Vec<BatchItem> = seqs
        .iter()
        .enumerate()
        .map(|(i, s)| BatchItem {
            id: i as u64,
            input_ids: s,
            token_type_ids: None,
            mlm_positions: &[],
            mlm_labels: &[],
            label: None,
        })
        .collect();
    let batch = collate(&items, 0).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let labels: Vec<u32> = (0..lens.len() as u32).map(|i| i % 2).collect();
    let labels = Tensor::from_vec(labels, lens.len(), &dev)?;
    let tokens: usize = lens.iter().sum();
    let report = |what: &str, t: (f64, f64)| report("kd", config, what, tokens, t);
    let m = &built.model;
    let fwd = timed(iters, || {
        m.forward(&batch, &mut ForwardCtx::eval(), &dev)
            .expect("forward");
    });
    report("model_forward", fwd);
    let step = timed(iters, || {
        let logits = m
            .forward(&batch, &mut ForwardCtx::eval(), &dev)
            .expect("forward");
        let loss = candle_nn::loss::cross_entropy(&logits, &labels).expect("loss");
        loss.backward().expect("backward");
    });
    report("model_step", step);
    Ok(())
}
