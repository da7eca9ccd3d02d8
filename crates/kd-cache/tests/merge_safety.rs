//! Merging untrusted parts: part counts bound nothing, and a merge that moves
//! files either completes or leaves every part as it was.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use kd_cache::{merge, verify, Backend, Manifest, MergeMode, Part, Precision, Record, TargetSpec};

fn spec() -> TargetSpec {
    full_spec(Precision::F16, Precision::Int8, Precision::Bf16)
}

fn write_part(dir: &Path, backend: Backend, part: Part, records: &[Record]) -> Manifest {
    let mut m = manifest(&spec(), backend);
    m.part = Some(part);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("token_counts.json"), "{\"vocab_size\": 2}").unwrap();
    m.token_counts = Some(kd_cache::FileRef::for_file(dir, "token_counts.json").unwrap());
    write_cache(dir, m, records, small_options())
}

/// Every file in `dir` with its contents, sorted by name.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

#[test]
fn huge_part_counts_are_reported_compactly() {
    for count in [30_000_000u32, u32::MAX] {
        let root = tempfile::tempdir().unwrap();
        let records = random_records(9, &spec(), 4);
        let parts: Vec<PathBuf> = [0u32, 2]
            .iter()
            .map(|&index| {
                let dir = root.path().join(format!("p{index}"));
                write_part(&dir, Backend::Mmap, Part { index, count }, &records[..2]);
                dir
            })
            .collect();
        let start = std::time::Instant::now();
        let e = merge(&parts, &root.path().join("out"), MergeMode::Copy)
            .unwrap_err()
            .to_string();
        assert!(
            start.elapsed().as_secs() < 2,
            "{count}: took {:?}",
            start.elapsed()
        );
        assert!(e.len() < 300, "{count}: {} bytes of message", e.len());
        let last = count - 1;
        assert!(
            e.contains(&format!("parts 1, 3..{last} of {count} missing (found 2)")),
            "{e}"
        );
    }
}

#[test]
fn a_move_merge_with_a_missing_shard_moves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let records = random_records(11, &spec(), 20);
    let p0 = root.path().join("p0");
    let p1 = root.path().join("p1");
    write_part(
        &p0,
        Backend::Parquet,
        Part { index: 0, count: 2 },
        &records[..11],
    );
    let m1 = write_part(
        &p1,
        Backend::Parquet,
        Part { index: 1, count: 2 },
        &records[11..],
    );
    let lost = p1.join(&m1.shards[1].file);
    let kept = std::fs::read(&lost).unwrap();
    std::fs::remove_file(&lost).unwrap();
    let before = (snapshot(&p0), snapshot(&p1));
    let out = root.path().join("out");

    let e = merge(&[p0.clone(), p1.clone()], &out, MergeMode::Move).unwrap_err();
    assert!(e.to_string().contains(&m1.shards[1].file), "{e}");
    assert!(before == (snapshot(&p0), snapshot(&p1)), "a part changed");
    assert_eq!(snapshot(&out), vec![], "files left in the output");

    // A damaged shard (same size) is refused the same way.
    let victim = p0.join(&Manifest::load(&p0).unwrap().shards[0].file);
    let good = std::fs::read(&victim).unwrap();
    let mut bad = good.clone();
    bad[100] ^= 1;
    std::fs::write(&victim, &bad).unwrap();
    std::fs::write(&lost, &kept).unwrap();
    let e = merge(&[p0.clone(), p1.clone()], &out, MergeMode::Move).unwrap_err();
    assert!(e.to_string().contains("sha256"), "{e}");
    assert_eq!(snapshot(&out), vec![], "files left in the output");

    // Once the parts are whole again, the same command succeeds.
    std::fs::write(&victim, &good).unwrap();
    let merged = merge(&[p0.clone(), p1.clone()], &out, MergeMode::Move).unwrap();
    assert_eq!(merged.rows(), 20);
    verify(&out).unwrap();
}

#[test]
fn a_move_that_fails_midway_is_undone() {
    for backend in [Backend::Mmap, Backend::Parquet] {
        let root = tempfile::tempdir().unwrap();
        let records = random_records(12, &spec(), 20);
        let p0 = root.path().join("p0");
        let p1 = root.path().join("p1");
        write_part(&p0, backend, Part { index: 0, count: 2 }, &records[..11]);
        write_part(&p1, backend, Part { index: 1, count: 2 }, &records[11..]);
        let before = (snapshot(&p0), snapshot(&p1));
        // The third merged shard cannot land: a folder with a file holds its name.
        let out = root.path().join("out");
        let blocker = out.join(format!("shard-00002.{}", backend.extension()));
        std::fs::create_dir_all(blocker.join("occupied")).unwrap();

        let e = merge(&[p0.clone(), p1.clone()], &out, MergeMode::Move).unwrap_err();
        assert!(e.to_string().contains("shard-00002"), "{backend}: {e}");
        assert!(
            before == (snapshot(&p0), snapshot(&p1)),
            "{backend}: a part changed"
        );
        assert_eq!(
            snapshot(&out),
            vec![],
            "{backend}: files left in the output"
        );

        std::fs::remove_dir_all(&blocker).unwrap();
        merge(&[p0.clone(), p1.clone()], &out, MergeMode::Move).unwrap();
        verify(&out).unwrap();
        assert!(!Manifest::path(&p0).exists());
    }
}

#[test]
fn a_copy_that_fails_midway_leaves_no_partial_output() {
    let root = tempfile::tempdir().unwrap();
    let records = random_records(13, &spec(), 20);
    let p0 = root.path().join("p0");
    let p1 = root.path().join("p1");
    write_part(
        &p0,
        Backend::Mmap,
        Part { index: 0, count: 2 },
        &records[..11],
    );
    write_part(
        &p1,
        Backend::Mmap,
        Part { index: 1, count: 2 },
        &records[11..],
    );
    let out = root.path().join("out");
    let blocker = out.join("shard-00002.kdc");
    std::fs::create_dir_all(blocker.join("occupied")).unwrap();
    let e = merge(&[p0.clone(), p1.clone()], &out, MergeMode::Copy).unwrap_err();
    assert!(e.to_string().contains("shard-00002"), "{e}");
    assert_eq!(snapshot(&out), vec![], "files left in the output");
    verify(&p0).unwrap();
    verify(&p1).unwrap();
}
