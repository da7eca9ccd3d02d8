//! Helpers shared by kd-augment's tests: asset paths, small task files, binomial bounds.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// An offline asset (`KD_ASSETS` or the repository's `assets/`); panics with the fetch command
/// when absent.
pub fn asset(name: &str) -> PathBuf {
    let root = std::env::var_os("KD_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets"));
    let p = root.join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-assets.sh first",
        p.display()
    );
    p
}

/// The movie-review file.
pub fn movie_reviews() -> PathBuf {
    asset("movie-reviews/movieReviewSnippets_GroundTruth.txt")
}

/// Brill's lexicon.
pub fn lexicon() -> PathBuf {
    asset("pos/lexicon.js")
}

/// Asserts that `hits` successes in `n` trials agree with probability `p` within 5 standard
/// deviations of the binomial (a false alarm about once in 3.5 million runs).
pub fn assert_binomial(hits: usize, n: usize, p: f64, what: &str) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let z = (hits as f64 - mean) / sd;
    assert!(
        z.abs() < 5.0,
        "{what}: {hits} of {n} = {:.4}, expected p = {p} (z = {z:.2})",
        hits as f64 / n as f64
    );
}

/// The rows of a transfer set.
pub fn rows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
