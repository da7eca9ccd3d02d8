//! The sampled soft-target estimator is unbiased for the full-KD gradient; top-k is not.
//!
//! With `p̂` the empirical teacher frequencies of `K` draws at a position, the sampled loss has
//! gradient `T/N · (q − p̂)` w.r.t. the student logits (`T²` scaling, `q = softmax(s/T)`), the
//! full loss `T/N · (q − p)`. Averaging `R` independent rounds of `K` draws gives `M = R·K`
//! draws in all, so the difference to the full gradient is `T/N · (p − p̄)` with
//! `sd = T/N · √(p(1 − p)/M)` per element and `E‖Δ‖² = (T/N)² Σ_n (1 − Σ_v p²)/M`.
//! Top-k renormalised has a fixed (deterministic) difference that no amount of data removes.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use kd_distill::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ROUNDS: usize = 4000;
const K: usize = 12;

fn softmax_rows(x: &[Vec<f32>], t: f64) -> Vec<Vec<f64>> {
    x.iter()
        .map(|r| {
            let m = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f64> = r.iter().map(|&v| (f64::from(v - m) / t).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        })
        .collect()
}

/// `K` draws per row from `p`, as (offsets, distinct ascending ids, counts).
fn draw(p: &[Vec<f64>], rng: &mut ChaCha8Rng) -> (Vec<u32>, Vec<u32>, Vec<u16>) {
    let (mut offsets, mut ids, mut counts) = (vec![0u32], vec![], vec![]);
    for row in p {
        let mut c = vec![0u16; row.len()];
        for _ in 0..K {
            let u: f64 = rng.random();
            let mut acc = 0.0;
            let i = row
                .iter()
                .position(|&pv| {
                    acc += pv;
                    u < acc
                })
                .unwrap_or(row.len() - 1);
            c[i] += 1;
        }
        for (i, &n) in c.iter().enumerate().filter(|(_, &n)| n > 0) {
            ids.push(i as u32);
            counts.push(n);
        }
        offsets.push(ids.len() as u32);
    }
    (offsets, ids, counts)
}

fn grad_of(student: &Tensor, loss: impl Fn(&Tensor) -> Result<Tensor>) -> (f64, Tensor) {
    let s = var(student);
    let l = loss(s.as_tensor()).unwrap();
    let (v, g) = value_and_grads(&[&s], &l);
    (v, g[0].to_dtype(DType::F64).unwrap())
}

fn norm(t: &Tensor) -> f64 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .sqrt()
}

#[test]
fn sampled_gradient_is_unbiased_and_topk_is_not() {
    let f = fixture("soft_targets.safetensors");
    let (student, teacher) = (get(&f, "student"), get(&f, "teacher"));
    let t = scalar(&get(&f, "temperature"));
    let cfg = SoftTargetConfig::new(t);
    let (n, v) = student.dims2().unwrap();
    let p = softmax_rows(&teacher.to_vec2::<f32>().unwrap(), t);

    let (full_value, g_full) = grad_of(&student, |s| soft_target_full(s, &teacher, &cfg));

    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut g_sum = Tensor::zeros((n, v), DType::F64, &Device::Cpu).unwrap();
    let (mut v_sum, mut v_sq) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        let (offsets, ids, counts) = draw(&p, &mut rng);
        let targets = SampledTargets::from_slices(&offsets, &ids, &counts, &Device::Cpu).unwrap();
        let (value, g) = grad_of(&student, |s| soft_target_sampled(s, &targets, &cfg));
        g_sum = (g_sum + g).unwrap();
        v_sum += value;
        v_sq += value * value;
    }
    let g_mean = g_sum.affine(1.0 / ROUNDS as f64, 0.0).unwrap();
    let delta = (&g_mean - &g_full).unwrap();

    // Per-element bound: 5 standard deviations of the mean of M = R·K draws.
    let m = (ROUNDS * K) as f64;
    let scale = t / n as f64;
    let d = delta.to_vec2::<f64>().unwrap();
    let mut worst: f64 = 0.0;
    for (r, row) in p.iter().enumerate() {
        for (c, &pv) in row.iter().enumerate() {
            let sd = scale * (pv * (1.0 - pv) / m).sqrt();
            let z = d[r][c].abs() / (sd + 1e-12);
            worst = worst.max(z);
            assert!(
                d[r][c].abs() <= 5.0 * sd + 1e-6,
                "[{r}, {c}]: {} vs sd {sd}",
                d[r][c]
            );
        }
    }
    // Norm bound: E‖Δ‖² = (T/N)² Σ_n (1 − Σ p²) / M.
    let expected_rms = scale
        * (p.iter()
            .map(|r| 1.0 - r.iter().map(|x| x * x).sum::<f64>())
            .sum::<f64>()
            / m)
            .sqrt();
    let sampled_err = norm(&delta);
    println!(
        "sampled ({ROUNDS} x {K} draws): ‖Δ‖ {sampled_err:.3e}, expected rms {expected_rms:.3e}, worst |z| {worst:.2}"
    );
    assert!(sampled_err <= 2.0 * expected_rms);

    // Top-k (k = 8) is biased: its difference is deterministic and far above the sampling noise.
    let targets = TopKTargets::new(
        &get_u32(&f, "topk.ids"),
        &get(&f, "topk.logits"),
        &get(&f, "topk.log_partition"),
        t,
    )
    .unwrap();
    for tail in [TailMode::Renormalize, TailMode::RestBucket] {
        let (_, g) = grad_of(&student, |s| soft_target_topk(s, &targets, tail, &cfg));
        let bias = norm(&(&g - &g_full).unwrap());
        println!(
            "top-8 {tail:?}: ‖bias‖ {bias:.3e} ({:.0}x the sampled error)",
            bias / sampled_err
        );
        assert!(bias >= 10.0 * expected_rms, "{tail:?} bias {bias}");
    }

    // The value estimates the cross-entropy T² · mean_n H(p_n, q_n) = full KL + T² · mean H(p).
    let q = softmax_rows(&student.to_vec2::<f32>().unwrap(), t);
    let cross: f64 = p
        .iter()
        .zip(&q)
        .map(|(pr, qr)| -pr.iter().zip(qr).map(|(a, b)| a * b.ln()).sum::<f64>())
        .sum::<f64>()
        * t
        * t
        / n as f64;
    let entropy: f64 = p
        .iter()
        .map(|r| {
            -r.iter()
                .filter(|&&x| x > 0.0)
                .map(|x| x * x.ln())
                .sum::<f64>()
        })
        .sum::<f64>()
        * t
        * t
        / n as f64;
    assert_scalar(
        "full KL + T² H(p) = T² H(p, q)",
        full_value + entropy,
        cross,
        1e-5,
    );
    let mean = v_sum / ROUNDS as f64;
    let sd_mean = ((v_sq / ROUNDS as f64 - mean * mean) / ROUNDS as f64).sqrt();
    println!("sampled value {mean:.5} vs cross-entropy {cross:.5} (sd of mean {sd_mean:.2e})");
    assert!((mean - cross).abs() <= 5.0 * sd_mean);
}
