//! Seeded mutations of the files of a model directory, each loaded through `load_model` (the
//! call every command uses): safetensors headers, PyTorch zip checkpoints and `config.json`.
//!
//! Every case must end in a clean error whose message names the mutated file, or in a model
//! whose tensors equal those of the unmutated directory. Panics, errors that do not name the
//! file and silently different tensors are counted and fail the test. `KD_FUZZ_CASES` sets the
//! number of cases per kind (default 3000, 6 to 17 s in release on 2 cores; a longer run is a
//! larger number), `KD_FUZZ_SEED` shifts the seeds, `KD_FUZZ_LOG` prints every case and its
//! outcome.

mod common;
mod fuzz;

use common::param_bits;
use fuzz::{mutate_config, mutate_pth, mutate_safetensors, opts, Base, Case};
use kd_bert::load_model;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// What one case produced.
enum Outcome {
    /// Loaded, with the clean directory's tensors.
    Equal,
    /// A clean error naming the mutated file.
    Error(String),
    /// An error that does not name the mutated file.
    Unnamed(String),
    /// A panic.
    Panic(String),
    /// Loaded, with different tensors.
    Silent(String),
}

impl Outcome {
    fn describe(&self) -> String {
        match self {
            Outcome::Equal => "equal".into(),
            Outcome::Error(m) => format!("error: {m}"),
            Outcome::Unnamed(m) => format!("error without the file name: {m}"),
            Outcome::Panic(m) => format!("panic: {m}"),
            Outcome::Silent(m) => format!("silent difference: {m}"),
        }
    }
}

thread_local! {
    static PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Writes `case` into `dir` and loads it, classifying the result against `base`.
fn run_case(dir: &Path, base: &Base, case: &Case, blamed: &str) -> Outcome {
    for f in ["model.safetensors", "pytorch_model.bin", "config.json"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    std::fs::write(dir.join("config.json"), &case.config).unwrap();
    std::fs::write(dir.join(base.weights_name), &case.weights).unwrap();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        load_model(dir, &opts(case.fresh_heads))
    }));
    match res {
        Err(_) => Outcome::Panic(PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default()),
        Ok(Err(e)) => {
            let shown = e.to_string();
            if shown.contains(blamed) {
                Outcome::Error(shown)
            } else {
                Outcome::Unnamed(shown)
            }
        }
        Ok(Ok(loaded)) => {
            let clean = &base.clean[usize::from(case.fresh_heads)];
            let got = param_bits(&loaded.varmap);
            // A config may choose fewer heads; every tensor loaded must be the clean one.
            let differing: Vec<&String> = got
                .iter()
                .filter(|(n, bits)| clean.get(*n) != Some(*bits))
                .map(|(n, _)| n)
                .collect();
            let missing = clean.keys().filter(|n| !got.contains_key(*n)).count();
            if !differing.is_empty() || (blamed != "config.json" && missing > 0) {
                Outcome::Silent(format!("{differing:?} differ, {missing} missing"))
            } else {
                Outcome::Equal
            }
        }
    }
}

/// Per-kind counts.
#[derive(Default)]
struct Tally {
    cases: usize,
    equal: usize,
    error: usize,
    unnamed: usize,
    panic: usize,
    silent: usize,
    secs: f64,
    examples: Vec<String>,
}

fn run_kind(
    kind: &str,
    bases: &[Base],
    cases: usize,
    seed: u64,
    mutate: fn(&Base, &mut ChaCha8Rng) -> Case,
    blamed: fn(&Base) -> &str,
) -> Tally {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir_all(&dir).unwrap();
    let mut t = Tally::default();
    let log = std::env::var_os("KD_FUZZ_LOG").is_some();
    let start = Instant::now();
    for i in 0..cases {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(i as u64));
        let base = &bases[i % bases.len()];
        let case = mutate(base, &mut rng);
        let outcome = run_case(&dir, base, &case, blamed(base));
        if log {
            let what = outcome.describe();
            println!("{kind} case {i} ({}, {}): {what}", base.fixture, case.desc);
        }
        t.cases += 1;
        let bad = match &outcome {
            Outcome::Equal => {
                t.equal += 1;
                None
            }
            Outcome::Error(_) => {
                t.error += 1;
                None
            }
            Outcome::Unnamed(_) => {
                t.unnamed += 1;
                Some(outcome.describe())
            }
            Outcome::Panic(_) => {
                t.panic += 1;
                Some(outcome.describe())
            }
            Outcome::Silent(_) => {
                t.silent += 1;
                Some(outcome.describe())
            }
        };
        if let Some(why) = bad {
            if t.examples.len() < 12 {
                t.examples.push(format!(
                    "{kind} case {i} ({}, {}): {}: {why}",
                    base.fixture, case.desc, seed
                ));
            }
        }
    }
    t.secs = start.elapsed().as_secs_f64();
    t
}

// ---------------------------------------------------------------- the run

fn cases_per_kind() -> usize {
    std::env::var("KD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

#[test]
fn mutated_model_files_never_crash_or_load_differently() {
    let n = cases_per_kind();
    let seed: u64 = std::env::var("KD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let safetensors = [
        Base::new("tiny_mlm", "model.safetensors"),
        Base::new("tiny_relu", "model.safetensors"),
    ];
    let pth = [Base::new("tiny_cls", "pytorch_model.bin")];
    let configs = [
        Base::new("tiny_mlm", "model.safetensors"),
        Base::new("tiny_cls", "pytorch_model.bin"),
    ];
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
    }));
    let results: Mutex<Vec<(&str, Tally)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let r = &results;
        s.spawn(|| {
            let t = run_kind(
                "safetensors",
                &safetensors,
                n,
                seed,
                mutate_safetensors,
                |b| b.weights_name,
            );
            r.lock().unwrap().push(("safetensors", t));
        });
        s.spawn(|| {
            let t = run_kind("pytorch .bin", &pth, n, seed ^ 0x5eed, mutate_pth, |b| {
                b.weights_name
            });
            r.lock().unwrap().push(("pytorch .bin", t));
        });
        s.spawn(|| {
            let t = run_kind(
                "config.json",
                &configs,
                n,
                seed ^ 0xc0f1,
                mutate_config,
                |_| "config.json",
            );
            r.lock().unwrap().push(("config.json", t));
        });
    });
    std::panic::set_hook(default_hook);
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(k, _)| *k);
    println!(
        "\n{:<14} {:>6} {:>7} {:>7} {:>8} {:>6} {:>7} {:>7}",
        "kind", "cases", "equal", "error", "unnamed", "panic", "silent", "secs"
    );
    let mut failures = Vec::new();
    for (kind, t) in &results {
        println!(
            "{kind:<14} {:>6} {:>7} {:>7} {:>8} {:>6} {:>7} {:>7.1}",
            t.cases, t.equal, t.error, t.unnamed, t.panic, t.silent, t.secs
        );
        failures.extend(t.examples.iter().cloned());
    }
    assert!(
        failures.is_empty(),
        "cases that crashed, lost the file name or loaded differently:\n{}",
        failures.join("\n")
    );
}
