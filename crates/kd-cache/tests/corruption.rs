//! Truncated, bit-flipped and missing shards are detected and named; readers
//! return errors instead of panicking.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use kd_cache::{verify, Backend, CacheReader, Manifest, Precision, Record, Shard, TargetSpec};

fn spec() -> TargetSpec {
    full_spec(Precision::F16, Precision::Int8, Precision::F16)
}

/// A cache of two shards; returns the folder and the path of the second shard.
fn make(backend: Backend) -> (tempfile::TempDir, PathBuf, Manifest) {
    let dir = tempfile::tempdir().unwrap();
    let records = random_records(42, &spec(), 12);
    let mut opts = small_options();
    opts.rows_per_shard = 6;
    let m = write_cache(dir.path(), manifest(&spec(), backend), &records, opts);
    let shard = dir.path().join(&m.shards[1].file);
    (dir, shard, m)
}

/// Reads every record of `path` directly (no manifest checks); true when
/// some error came back. Panics escaping the reader fail the test.
fn reader_reports_error(path: &Path, backend: Backend) -> bool {
    let spec = spec();
    let shard = match Shard::open(path, backend, &spec) {
        Ok(s) => s,
        Err(e) => {
            assert!(e.to_string().contains(&file_name(path)), "{e}");
            return true;
        }
    };
    let mut failed = false;
    for r in shard.iter(&spec) {
        if let Err(e) = r {
            assert!(e.to_string().contains(&file_name(path)), "{e}");
            failed = true;
        }
    }
    for i in 0..shard.len() {
        if shard.get(i, &spec).is_err() {
            failed = true;
        }
    }
    failed
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn check_truncations(backend: Backend) {
    let (dir, shard, _) = make(backend);
    let original = std::fs::read(&shard).unwrap();
    let len = original.len();
    for cut in [len - 1, len - 8, len - 41, len / 2, len / 3, 17, 4, 0] {
        std::fs::write(&shard, &original[..cut]).unwrap();
        let e = verify(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&file_name(&shard)), "cut {cut}: {e}");
        let e = CacheReader::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&file_name(&shard)) && e.contains("bytes"), "{e}");
        assert!(
            reader_reports_error(&shard, backend),
            "cut at {cut} went unnoticed"
        );
    }
    std::fs::write(&shard, &original).unwrap();
    verify(dir.path()).unwrap();
}

#[test]
fn truncated_mmap_shard_is_detected() {
    check_truncations(Backend::Mmap);
}

#[test]
fn truncated_parquet_shard_is_detected() {
    check_truncations(Backend::Parquet);
}

/// Offsets spread over the whole file, header and footer included.
fn offsets(len: usize, step: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..len).step_by(step).collect();
    v.extend([1, 9, 13, len / 2, len - 45, len - 30, len - 12, len - 1]);
    v
}

fn check_flips(backend: Backend, offsets: &[usize]) -> (usize, usize) {
    let (dir, shard, _) = make(backend);
    let original = std::fs::read(&shard).unwrap();
    let clean = read_shard(&shard, backend).unwrap();
    let (mut tried, mut named_record) = (0, 0);
    for &at in offsets {
        let mut bad = original.clone();
        bad[at] ^= 0x10;
        std::fs::write(&shard, &bad).unwrap();
        let e = verify(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&file_name(&shard)), "flip at {at}: {e}");
        assert!(e.contains("sha256"), "flip at {at}: {e}");
        if e.contains("first bad: record") || e.contains("first bad: row") {
            named_record += 1;
        }
        // Readers must not panic, and must notice every flip that changes
        // what they read (Parquet: bytes no reader looks at, such as the
        // leading magic or the page indexes, may change nothing).
        let noticed = reader_reports_error(&shard, backend);
        if backend == Backend::Mmap {
            assert!(noticed, "flip at {at} of {} went unnoticed", original.len());
        } else if !noticed {
            let got = read_shard(&shard, backend).unwrap();
            assert!(
                got == clean,
                "flip at {at} of {}: read different records",
                original.len()
            );
        }
        tried += 1;
    }
    std::fs::write(&shard, &original).unwrap();
    verify(dir.path()).unwrap();
    (tried, named_record)
}

#[test]
fn flipped_bytes_of_an_mmap_shard_are_detected() {
    // Every byte of the header, index and footer; every 7th of the blocks.
    let bytes = std::fs::read(make(Backend::Mmap).1).unwrap();
    let len = bytes.len();
    let mut footer = [0u8; 8];
    footer.copy_from_slice(&bytes[len - 40..len - 32]);
    let index = u64::from_le_bytes(footer) as usize;
    let mut at: Vec<usize> = (0..16).chain(index..len).collect();
    at.extend((16..index).step_by(7));
    let (tried, named) = check_flips(Backend::Mmap, &at);
    assert_eq!(tried, at.len());
    // Flips inside the blocks name the record.
    assert!(named >= (index - 16) / 7, "{named} of {tried}");
}

#[test]
fn flipped_bytes_of_a_parquet_shard_are_detected() {
    let len = std::fs::metadata(make(Backend::Parquet).1).unwrap().len() as usize;
    let (tried, named) = check_flips(Backend::Parquet, &offsets(len, 97));
    assert!(tried > 20);
    // Flips in data pages name the row group.
    assert!(named > tried / 3, "{named} of {tried}");
}

/// Records and `(epoch, length)` pairs of a cache.
type CacheContents = (Vec<Record>, Vec<(u32, u32)>);

/// Every record of the cache through the training path (manifest, then every
/// shard streamed), and each shard's `(epoch, length)` list.
fn read_through_cache(dir: &Path) -> kd_cache::Result<CacheContents> {
    let reader = CacheReader::open(dir)?;
    let records = reader.iter().collect::<kd_cache::Result<Vec<_>>>()?;
    let mut lengths = Vec::new();
    for s in 0..reader.num_shards() {
        lengths.extend(reader.shard(s).unwrap().epochs_and_lengths()?);
    }
    Ok((records, lengths))
}

/// Every record of one shard opened without a manifest (streamed, then by index).
fn read_shard(path: &Path, backend: Backend) -> kd_cache::Result<Vec<Record>> {
    let shard = Shard::open(path, backend, &spec())?;
    let streamed = shard.iter(&spec()).collect::<kd_cache::Result<Vec<_>>>()?;
    for (i, r) in streamed.iter().enumerate() {
        assert_eq!(
            &shard.get(i, &spec())?,
            r,
            "record {i}: random access != stream"
        );
    }
    Ok(streamed)
}

#[test]
fn parquet_flips_are_errors_or_clean_reads() {
    use rand::{Rng, SeedableRng};
    let (dir, shard, _) = make(Backend::Parquet);
    let clean = read_through_cache(dir.path()).unwrap();
    let clean_shard = read_shard(&shard, Backend::Parquet).unwrap();
    let original = std::fs::read(&shard).unwrap();
    // Data pages: after the leading magic, before the footer and its length.
    let footer_len = u32::from_le_bytes(original[original.len() - 8..][..4].try_into().unwrap());
    let data_end = original.len() - 8 - footer_len as usize;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    let name = file_name(&shard);
    let (mut errors, mut equal) = (0, 0);
    for case in 0..48 {
        // Data pages for most cases, the footer for the rest.
        let at = if case % 4 == 3 {
            rng.random_range(data_end..original.len())
        } else {
            rng.random_range(4..data_end)
        };
        let mut bad = original.clone();
        bad[at] ^= 1 << rng.random_range(0..8);
        std::fs::write(&shard, &bad).unwrap();
        match read_through_cache(dir.path()) {
            Err(e) => {
                assert!(e.to_string().contains(&name), "flip at {at}: {e}");
                errors += 1;
            }
            Ok(got) => {
                assert!(
                    got == clean,
                    "flip at {at} of {}: read a different cache",
                    bad.len()
                );
                equal += 1;
            }
        }
        match read_shard(&shard, Backend::Parquet) {
            Err(e) => assert!(e.to_string().contains(&name), "flip at {at}: {e}"),
            Ok(got) => assert!(got == clean_shard, "flip at {at}: shard read differs"),
        }
    }
    std::fs::write(&shard, &original).unwrap();
    assert!(errors > 0, "{errors} errors, {equal} clean reads");
}

#[test]
fn verify_names_the_record_of_a_bad_mmap_block() {
    let (dir, shard, _) = make(Backend::Mmap);
    let reader = Shard::open(&shard, Backend::Mmap, &spec()).unwrap();
    let Shard::Mmap(m) = &reader else { panic!() };
    let b = m.blocks()[1];
    let first = b.first_record;
    drop(reader);
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[b.offset as usize + 5] ^= 0xff;
    std::fs::write(&shard, &bytes).unwrap();
    let e = verify(dir.path()).unwrap_err().to_string();
    assert!(e.contains(&format!("record {first} (block 1)")), "{e}");
    // The reader opens (the index is intact) and fails on that record only.
    let reader = CacheReader::open(dir.path()).unwrap();
    let offset = reader.shard_range(1).start;
    let e = reader.get(offset + first as usize).unwrap_err().to_string();
    assert!(e.contains(&file_name(&shard)) && e.contains("crc32"), "{e}");
    assert!(reader.get(0).is_ok());
    let errors = reader.iter().filter(|r| r.is_err()).count();
    assert!(errors >= 1);
}

#[test]
fn missing_shard_is_named() {
    for backend in [Backend::Mmap, Backend::Parquet] {
        let (dir, shard, _) = make(backend);
        std::fs::remove_file(&shard).unwrap();
        let e = verify(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(&file_name(&shard)) && e.contains("missing"),
            "{e}"
        );
        let e = CacheReader::open(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(&file_name(&shard)) && e.contains("missing"),
            "{e}"
        );
    }
}

#[test]
fn wrong_checksum_in_manifest_is_reported() {
    let (dir, shard, mut m) = make(Backend::Parquet);
    m.shards[1].sha256 = "00".repeat(32);
    m.save(dir.path()).unwrap();
    let e = verify(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains(&file_name(&shard)) && e.contains("every record still decodes"),
        "{e}"
    );
}

#[test]
fn bad_manifest_and_token_counts_are_reported() {
    let (dir, _, mut m) = make(Backend::Mmap);
    std::fs::write(dir.path().join("token_counts.json"), "{\"counts\": [1, 2]}").unwrap();
    m.token_counts = Some(kd_cache::FileRef::for_file(dir.path(), "token_counts.json").unwrap());
    m.save(dir.path()).unwrap();
    assert!(verify(dir.path()).unwrap().token_counts_checked);
    std::fs::write(dir.path().join("token_counts.json"), "{\"counts\": [1, 3]}").unwrap();
    let e = verify(dir.path()).unwrap_err().to_string();
    assert!(e.contains("token_counts.json"), "{e}");

    let mut text = std::fs::read_to_string(Manifest::path(dir.path())).unwrap();
    text.truncate(text.len() / 2);
    std::fs::write(Manifest::path(dir.path()), text).unwrap();
    let e = CacheReader::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("manifest.json"), "{e}");

    m.schema_version = "kd-cache/4".into();
    m.save(dir.path()).unwrap();
    let e = CacheReader::open(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("kd-cache/4") && e.contains("not supported"),
        "{e}"
    );
}
