//! A shard truncated or rewritten while a reader holds it open gives an error
//! naming the shard, never a signal or different records.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use kd_cache::{Backend, CacheReader, Manifest, Precision, TargetSpec};

fn spec() -> TargetSpec {
    full_spec(Precision::F16, Precision::Int8, Precision::F16)
}

/// One shard of 12 records in many small blocks / row groups.
fn make(backend: Backend) -> (tempfile::TempDir, PathBuf, Manifest) {
    let dir = tempfile::tempdir().unwrap();
    let records = random_records(5, &spec(), 12);
    let mut opts = small_options();
    opts.rows_per_shard = 100;
    let m = write_cache(dir.path(), manifest(&spec(), backend), &records, opts);
    let shard = dir.path().join(&m.shards[0].file);
    (dir, shard, m)
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn truncating_an_open_shard_is_an_error_not_a_signal() {
    for backend in [Backend::Mmap, Backend::Parquet] {
        let (dir, shard, _) = make(backend);
        let reader = CacheReader::open(dir.path()).unwrap();
        let first = reader.get(0).unwrap();
        assert_eq!(first.seq_id, 3);
        let len = std::fs::metadata(&shard).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&shard)
            .unwrap()
            .set_len(len / 3)
            .unwrap();
        // Random access to a record in a later block, streaming, lengths.
        let e = reader.get(11).unwrap_err().to_string();
        assert!(e.contains(&name(&shard)), "{backend}: {e}");
        let errors: Vec<String> = reader
            .iter()
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        assert!(!errors.is_empty(), "{backend}: streaming saw no error");
        assert!(
            errors.iter().all(|e| e.contains(&name(&shard))),
            "{errors:?}"
        );
        let e = reader.shard(0).unwrap().epochs_and_lengths().unwrap_err();
        assert!(e.to_string().contains(&name(&shard)), "{backend}: {e}");
    }
}

#[test]
fn a_shard_rewritten_in_place_is_not_read_as_other_records() {
    for backend in [Backend::Mmap, Backend::Parquet] {
        let (dir, shard, _) = make(backend);
        let reader = CacheReader::open(dir.path()).unwrap();
        let clean: Vec<_> = reader.iter().map(|r| r.unwrap()).collect();
        // Same length, every byte after the first eighth inverted.
        let mut bytes = std::fs::read(&shard).unwrap();
        let from = bytes.len() / 8;
        for b in &mut bytes[from..] {
            *b ^= 0xff;
        }
        std::fs::write(&shard, &bytes).unwrap();
        for (i, r) in reader.iter().enumerate() {
            match r {
                Ok(r) => assert_eq!(r, clean[i], "{backend}: record {i} changed"),
                Err(e) => assert!(e.to_string().contains(&name(&shard)), "{e}"),
            }
        }
    }
}
