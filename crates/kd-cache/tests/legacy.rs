//! Caches written before Parquet shards carried checksums still read, and
//! damage to them is still caught when they are opened through their manifest.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use kd_cache::{verify, Backend, CacheReader, Precision, Record, Shard};

/// A copy of the fixture (written by the previous writer: no checksums).
fn fixture() -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-parquet");
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let shard = dir.path().join("shard-00001.parquet");
    (dir, shard)
}

#[test]
fn a_parquet_cache_without_checksums_still_reads() {
    let spec = full_spec(Precision::F16, Precision::Int8, Precision::Bf16);
    let want = random_records(7, &spec, 10);
    let (dir, shard) = fixture();
    let reader = CacheReader::open(dir.path()).unwrap();
    let got: Vec<Record> = reader.iter().map(|r| r.unwrap()).collect();
    assert_eq!(got.len(), want.len());
    for (w, g) in want.iter().zip(&got) {
        assert_record_close(w, g, &spec);
    }
    for s in 0..reader.num_shards() {
        let lengths = reader.shard(s).unwrap().epochs_and_lengths().unwrap();
        let expect: Vec<(u32, u32)> = reader
            .shard_range(s)
            .map(|i| (got[i].epoch, got[i].input_ids.len() as u32))
            .collect();
        assert_eq!(lengths, expect);
    }
    verify(dir.path()).unwrap();
    let Shard::Parquet(p) = Shard::open(&shard, Backend::Parquet, &spec).unwrap() else {
        panic!("not a Parquet shard");
    };
    assert!(!p.has_checksums());
}

#[test]
fn damage_to_a_cache_without_checksums_is_caught_when_opening_it() {
    let (dir, shard) = fixture();
    let clean = std::fs::read(&shard).unwrap();
    let n = clean.len();
    let footer_len = u32::from_le_bytes(clean[n - 8..n - 4].try_into().unwrap()) as usize;
    let data_end = n - 8 - footer_len;
    // In data pages (only the checksum can tell), then in the footer.
    for (at, why) in [(200, "sha256"), (data_end / 2, "sha256"), (n - 200, "")] {
        let mut bad = clean.clone();
        bad[at] ^= 0x04;
        std::fs::write(&shard, &bad).unwrap();
        let e = CacheReader::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("shard-00001.parquet") && e.contains(why), "{e}");
    }
}
