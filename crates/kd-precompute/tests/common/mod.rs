//! Shared fixtures of the precompute tests: the offline assets, a small speech corpus in a
//! temporary folder, and run settings sized to finish in seconds on a CPU.
#![allow(dead_code)]

use kd_precompute::PrecomputeConfig;
use std::path::{Path, PathBuf};

/// An offline asset directory (`KD_ASSETS` or the workspace's `assets/`); panics with the fetch
/// command when absent, since CI fetches the assets before running the tests.
pub fn asset(name: &str) -> PathBuf {
    let root = std::env::var_os("KD_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(
                &std::env::var("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("../../assets")
        });
    let p = root.join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-assets.sh first",
        p.display()
    );
    p
}

/// Three of the shortest State of the Union speeches (one long line each).
pub const SPEECHES: [&str; 3] = [
    "1790_george_washington_n.txt",
    "1800_john_adams_f.txt",
    "1932_herbert_hoover_r.txt",
];

/// A temporary folder holding `corpus/` with the first `n` of [`SPEECHES`].
pub fn speech_corpus(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let corpus = dir.path().join("corpus");
    std::fs::create_dir(&corpus).expect("corpus dir");
    for name in &SPEECHES[..n] {
        std::fs::copy(asset("sotu").join(name), corpus.join(name)).expect("copy a speech");
    }
    dir
}

/// Settings of a small run of `teacher` over `corpus` into `out`: sequences of at most 64
/// tokens, a sample of `max_sequences`, shards of 8 and batches of 3 (so most batches pad).
pub fn small_run(
    teacher: &Path,
    corpus: &Path,
    out: &Path,
    targets: &str,
    max_sequences: usize,
) -> PrecomputeConfig {
    let mut c = PrecomputeConfig {
        teacher: teacher.to_path_buf(),
        out: out.to_path_buf(),
        targets: targets.into(),
        rows_per_shard: 8,
        batch_size: 3,
        seed: 17,
        ..PrecomputeConfig::default()
    };
    c.source.corpus = vec![corpus.to_path_buf()];
    c.source.max_len = 64;
    c.source.max_sequences = Some(max_sequences);
    c
}
