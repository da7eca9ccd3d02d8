//! A write that fails leaves no temporary file behind, whichever step fails.

mod common;

use std::path::Path;

use common::*;
use kd_cache::{Backend, Precision, ShardWriter, TargetSpec, WriterOptions};

fn spec() -> TargetSpec {
    full_spec(Precision::F16, Precision::Int8, Precision::F16)
}

/// Names of the files in `dir` that end in `.tmp`.
fn tmp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn a_shard_whose_commit_fails_leaves_no_tmp() {
    for backend in [Backend::Parquet, Backend::Mmap] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join(format!("shard-00000.{}", backend.extension()));
        let mut w = ShardWriter::create(&path, backend, &spec(), &small_options()).unwrap();
        for r in random_records(1, &spec(), 8) {
            w.write(&r).unwrap();
        }
        // A folder with something in it where the shard should land: the
        // final rename fails after every byte was written.
        std::fs::create_dir_all(path.join("occupied")).unwrap();
        let e = w.finish().unwrap_err().to_string();
        assert!(e.contains("shard-00000"), "{backend}: {e}");
        assert_eq!(tmp_files(dir.path()), Vec::<String>::new(), "{backend}");
    }
}

#[test]
fn a_shard_that_cannot_start_leaves_no_tmp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-00000.parquet");
    let options = WriterOptions {
        zstd_level: 1000,
        ..small_options()
    };
    let e = ShardWriter::create(&path, Backend::Parquet, &spec(), &options).unwrap_err();
    assert!(e.to_string().contains("zstd level"), "{e}");
    assert_eq!(tmp_files(dir.path()), Vec::<String>::new());
}

#[test]
fn a_record_refused_midway_then_dropping_the_writer_leaves_no_tmp() {
    for backend in [Backend::Parquet, Backend::Mmap] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join(format!("shard-00000.{}", backend.extension()));
        let mut w = ShardWriter::create(&path, backend, &spec(), &small_options()).unwrap();
        let records = random_records(2, &spec(), 8);
        for r in &records[..7] {
            w.write(r).unwrap();
        }
        let mut bad = records[7].clone();
        bad.mlm_labels.pop();
        assert!(w.write(&bad).is_err());
        assert_eq!(tmp_files(dir.path()).len(), 1, "{backend}: still writing");
        drop(w);
        assert_eq!(tmp_files(dir.path()), Vec::<String>::new(), "{backend}");
        assert!(!path.exists());
    }
}

#[test]
fn a_failed_atomic_write_leaves_no_tmp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.json");
    std::fs::create_dir_all(path.join("occupied")).unwrap();
    let e = kd_core::fs::write_atomic(&path, b"{}").unwrap_err();
    assert!(e.to_string().contains("manifest.json"), "{e}");
    assert_eq!(tmp_files(dir.path()), Vec::<String>::new());
}
