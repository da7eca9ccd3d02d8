//! Seeded mutations of Parquet shards, mmap shards and `manifest.json`, each
//! cache then read the way training reads it (open, every shard's
//! `(epoch, length)` list, every record streamed shard by shard, every record
//! by index) and verified.
//!
//! Allowed outcomes: an error whose message names the damaged file (or, for a
//! manifest, a file it lists), with the records read before it equal to the
//! clean ones; or a read equal to the clean one. Panics, errors that name no
//! file and silent differences fail the test, after a table of outcomes per
//! kind is printed.
//!
//! `KD_FUZZ_CASES` sets the cases per kind (default 2000); `KD_FUZZ_SEED`
//! the base seed (default 1); `KD_FUZZ_VERBOSE=1` prints every case. A
//! failure prints the case's seed.

mod common;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::*;
use kd_cache::{verify, Backend, CacheReader, Manifest, Precision, Record, TargetSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// What a cache reads as: records by stream, by index, and `(epoch, length)` lists.
#[derive(Debug, Clone, PartialEq)]
struct Contents {
    records: Vec<Record>,
    lengths: Vec<(u32, u32)>,
}

/// How one case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// An error naming the file.
    Error,
    /// The same contents as the clean cache.
    Same,
    /// `verify` passed (counted beside the read outcome).
    VerifyOk,
    /// Failures:
    Panic,
    Unnamed,
    Different,
}

const KINDS: [&str; 3] = ["parquet", "mmap", "manifest"];

fn spec() -> TargetSpec {
    full_spec(Precision::F16, Precision::Int8, Precision::Bf16)
}

/// Reads `dir` as training does; on error, also says which records came
/// back before it (must be a prefix of the clean stream).
fn read(dir: &Path, clean: &Contents) -> Result<Contents, (String, bool)> {
    let reader = CacheReader::open(dir).map_err(|e| (e.to_string(), true))?;
    let mut lengths = Vec::new();
    for s in 0..reader.num_shards() {
        let shard = reader.shard(s).ok_or(("no shard".to_string(), true))?;
        lengths.extend(
            shard
                .epochs_and_lengths()
                .map_err(|e| (e.to_string(), true))?,
        );
    }
    let mut records = Vec::new();
    for s in 0..reader.num_shards() {
        for r in reader.iter_shard(s) {
            match r {
                Ok(r) => records.push(r),
                Err(e) => {
                    let prefix = clean.records.get(..records.len()) == Some(&records[..]);
                    return Err((e.to_string(), prefix));
                }
            }
        }
    }
    for (i, r) in records.iter().enumerate() {
        let got = reader.get(i).map_err(|e| (e.to_string(), true))?;
        if &got != r {
            return Err((
                format!("record {i}: random access differs from the stream"),
                false,
            ));
        }
    }
    Ok(Contents { records, lengths })
}

/// A clean cache of two shards of each backend, with what it reads as.
struct Clean {
    _dir: tempfile::TempDir,
    contents: Contents,
    files: Vec<(String, Vec<u8>)>,
}

fn clean(backend: Backend) -> Clean {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = small_options();
    opts.rows_per_shard = 6;
    let records = random_records(77, &spec(), 12);
    let m = write_cache(dir.path(), manifest(&spec(), backend), &records, opts);
    verify(dir.path()).unwrap();
    let contents = read(
        dir.path(),
        &Contents {
            records: vec![],
            lengths: vec![],
        },
    )
    .unwrap();
    let mut files: Vec<(String, Vec<u8>)> = m
        .shards
        .iter()
        .map(|s| {
            (
                s.file.clone(),
                std::fs::read(dir.path().join(&s.file)).unwrap(),
            )
        })
        .collect();
    files.push((
        "manifest.json".into(),
        std::fs::read(Manifest::path(dir.path())).unwrap(),
    ));
    Clean {
        _dir: dir,
        contents,
        files,
    }
}

/// Mutates shard bytes; returns a description.
fn mutate_shard(bytes: &mut Vec<u8>, backend: Backend, rng: &mut ChaCha8Rng) -> String {
    let n = bytes.len();
    // The footer region: Parquet's Thrift footer, or the mmap index and footer.
    let footer_start = match backend {
        Backend::Parquet => {
            let len = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
            n - 8 - len
        }
        Backend::Mmap => u64::from_le_bytes(bytes[n - 40..n - 32].try_into().unwrap()) as usize,
    };
    match rng.random_range(0..5) {
        0 => {
            let flips: Vec<usize> = (0..rng.random_range(1..4))
                .map(|_| rng.random_range(0..n))
                .collect();
            for &at in &flips {
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
            format!("bit flips at {flips:?}")
        }
        1 => {
            let len = rng.random_range(1..=64usize).min(n);
            let at = rng.random_range(0..=n - len);
            let fill = rng.random_range(0..3);
            for b in &mut bytes[at..at + len] {
                *b = match fill {
                    0 => 0,
                    1 => 0xff,
                    _ => rng.random(),
                };
            }
            format!("run of {len} bytes at {at} (fill {fill})")
        }
        2 => {
            let cut = rng.random_range(0..n);
            bytes.truncate(cut);
            format!("truncated to {cut}")
        }
        3 => {
            let at = rng.random_range(footer_start..n);
            let len = rng.random_range(1..=8usize).min(n - at);
            for b in &mut bytes[at..at + len] {
                *b = rng.random();
            }
            format!("{len} random bytes in the footer at {at}")
        }
        _ => {
            let extra = rng.random_range(1..100usize);
            bytes.extend((0..extra).map(|_| rng.random::<u8>()));
            format!("{extra} bytes appended")
        }
    }
}

/// A random JSON value: huge and negative numbers, wrong types, hostile names.
fn random_value(rng: &mut ChaCha8Rng, names: &[String]) -> Value {
    match rng.random_range(0..14) {
        0 => Value::from(u64::MAX),
        1 => Value::from(u32::MAX),
        2 => Value::from(-1),
        3 => Value::from(1e300),
        4 => Value::from(0),
        5 => Value::from(rng.random_range(0..20u32)),
        6 => Value::Null,
        7 => Value::Bool(rng.random()),
        8 => Value::from("../shard-00000.parquet"),
        9 => Value::from(names[rng.random_range(0..names.len())].clone()),
        10 => Value::from("x".repeat(rng.random_range(0..3000))),
        11 => serde_json::json!([1, "a", null]),
        12 => serde_json::json!({"index": rng.random::<u32>(), "count": rng.random::<u32>()}),
        _ => Value::from("missing-shard.kdc"),
    }
}

/// Pointers (`/a/0/b`) to every node of `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, c)| pointers(c, format!("{at}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| pointers(c, format!("{at}/{i}"), out)),
        _ => {}
    }
    out.push(at);
}

/// Mutates manifest text; returns a description and the file names the
/// mutated manifest lists (an error may name any of them).
fn mutate_manifest(
    text: &mut Vec<u8>,
    names: &[String],
    rng: &mut ChaCha8Rng,
) -> (String, Vec<String>) {
    let mut v: Value = serde_json::from_slice(text).unwrap();
    let mut what = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let mut all = Vec::new();
        pointers(&v, String::new(), &mut all);
        let p = all[rng.random_range(0..all.len())].clone();
        match rng.random_range(0..6) {
            // Remove a key or an array element (not a whole shard: a manifest
            // listing fewer shards is a smaller cache, nothing to detect).
            3 if !p.starts_with("/shards/") || p.matches('/').count() > 2 => {
                let (parent, key) = p.rsplit_once('/').unwrap_or(("", ""));
                what.push(format!("removed {p}"));
                match v.pointer_mut(parent) {
                    Some(Value::Object(m)) => drop(m.remove(key)),
                    Some(Value::Array(a)) => {
                        if let Ok(i) = key.parse::<usize>() {
                            if i < a.len() {
                                a.remove(i);
                            }
                        }
                    }
                    _ => {}
                }
            }
            0..=3 => {
                let new = random_value(rng, names);
                what.push(format!("{p} = {}", trim(&new.to_string())));
                if let Some(slot) = v.pointer_mut(&p) {
                    *slot = new;
                }
            }
            4 => {
                let choices = [0u64, 1, 2, u64::from(u32::MAX), u64::MAX];
                let index = choices[rng.random_range(0..choices.len())];
                let count = choices[rng.random_range(0..choices.len())];
                let part = serde_json::json!({ "index": index, "count": count });
                what.push(format!("part = {part}"));
                if let Some(m) = v.as_object_mut() {
                    m.insert("part".into(), part);
                }
            }
            _ => {
                let i = rng.random_range(0..2);
                let name = [
                    "missing-shard.parquet",
                    "../../etc/passwd",
                    "manifest.json",
                    "",
                ][rng.random_range(0..4)];
                what.push(format!("shards[{i}].file = {name:?}"));
                if let Some(slot) = v.pointer_mut(&format!("/shards/{i}/file")) {
                    *slot = Value::from(name);
                }
            }
        }
    }
    let listed = (0..8)
        .map(|i| format!("/shards/{i}/file"))
        .chain(["/token_counts/file".to_string()])
        .filter_map(|p| v.pointer(&p).and_then(Value::as_str).map(str::to_string))
        .filter(|n| !n.is_empty())
        .collect();
    *text = serde_json::to_vec_pretty(&v).unwrap();
    if rng.random_range(0..8) == 0 {
        let cut = rng.random_range(0..text.len());
        text.truncate(cut);
        what.push(format!("text truncated to {cut}"));
    }
    (what.join("; "), listed)
}

fn trim(s: &str) -> String {
    s.chars().take(40).collect()
}

/// One case of `kind`: mutate a file of a scratch copy, read, verify, restore.
fn case(kind: usize, seed: u64, scratch: &Path, clean: &Clean) -> (Vec<Outcome>, String) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let backend = match kind {
        0 => Backend::Parquet,
        1 => Backend::Mmap,
        _ => {
            if seed.is_multiple_of(2) {
                Backend::Parquet
            } else {
                Backend::Mmap
            }
        }
    };
    let names: Vec<String> = clean.files.iter().map(|(n, _)| n.clone()).collect();
    let (file, original) = if kind == 2 {
        clean.files.last().unwrap().clone()
    } else {
        clean.files[rng.random_range(0..clean.files.len() - 1)].clone()
    };
    let mut bytes = original.clone();
    let (mut what, listed) = if kind == 2 {
        let (what, mut listed) = mutate_manifest(&mut bytes, &names, &mut rng);
        listed.extend(names.iter().cloned());
        (what, listed)
    } else {
        (
            mutate_shard(&mut bytes, backend, &mut rng),
            vec![file.clone()],
        )
    };
    if kind == 2 && rng.random_range(0..10) == 0 {
        // A shard missing on disk.
        let gone = &names[rng.random_range(0..names.len() - 1)];
        std::fs::remove_file(scratch.join(gone)).unwrap();
        what.push_str(&format!("; {gone} deleted"));
    }
    std::fs::write(scratch.join(&file), &bytes).unwrap();
    let named = |msg: &str| {
        listed.iter().any(|n| msg.contains(n.as_str())) || msg.contains("manifest.json")
    };
    let mut outcomes = Vec::new();
    let mut notes = Vec::new();
    match catch_unwind(AssertUnwindSafe(|| read(scratch, &clean.contents))) {
        Err(_) => outcomes.push(Outcome::Panic),
        Ok(Ok(c)) if c == clean.contents => outcomes.push(Outcome::Same),
        Ok(Ok(_)) => outcomes.push(Outcome::Different),
        Ok(Err((msg, prefix_ok))) => {
            outcomes.push(match (named(&msg), prefix_ok) {
                (true, true) => Outcome::Error,
                (false, _) => Outcome::Unnamed,
                (true, false) => Outcome::Different,
            });
            notes.push(msg);
        }
    }
    match catch_unwind(AssertUnwindSafe(|| verify(scratch))) {
        Err(_) => outcomes.push(Outcome::Panic),
        Ok(Ok(_)) => {
            outcomes.push(Outcome::VerifyOk);
            if outcomes[0] != Outcome::Same {
                outcomes.push(Outcome::Different);
                notes.push("verify passed a cache that reads differently".into());
            }
        }
        Ok(Err(e)) if !named(&e.to_string()) => {
            outcomes.push(Outcome::Unnamed);
            notes.push(format!("verify: {e}"));
        }
        Ok(Err(_)) => {}
    }
    // Restore the scratch copy.
    for (n, b) in &clean.files {
        let p = scratch.join(n);
        if std::fs::read(&p).ok().as_deref() != Some(&b[..]) {
            std::fs::write(&p, b).unwrap();
        }
    }
    (outcomes, format!("{what} -> {}", notes.join(" | ")))
}

#[test]
fn mutated_caches_read_cleanly_or_fail_naming_the_file() {
    let cases: u64 = std::env::var("KD_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let base: u64 = std::env::var("KD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let verbose = std::env::var_os("KD_FUZZ_VERBOSE").is_some();
    let start = std::time::Instant::now();
    let cleans = [clean(Backend::Parquet), clean(Backend::Mmap)];
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4) as u64;
    let table: Mutex<BTreeMap<(usize, Outcome), u64>> = Mutex::new(BTreeMap::new());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for w in 0..workers {
            let (table, failures, cleans) = (&table, &failures, &cleans);
            scope.spawn(move || {
                let scratch: Vec<(tempfile::TempDir, PathBuf)> = cleans
                    .iter()
                    .map(|c| {
                        let d = tempfile::tempdir().unwrap();
                        for (n, b) in &c.files {
                            std::fs::write(d.path().join(n), b).unwrap();
                        }
                        let p = d.path().to_path_buf();
                        (d, p)
                    })
                    .collect();
                for (kind, name) in KINDS.iter().enumerate() {
                    for i in (w..cases).step_by(workers as usize) {
                        let seed = base + i * 3 + kind as u64;
                        let c = match kind {
                            0 => 0,
                            1 => 1,
                            _ => (seed % 2) as usize,
                        };
                        let (outcomes, note) = case(kind, seed, &scratch[c].1, &cleans[c]);
                        let mut t = table.lock().unwrap();
                        for &o in &outcomes {
                            *t.entry((kind, o)).or_default() += 1;
                        }
                        if verbose {
                            println!("{name} seed {seed}: {outcomes:?}: {note}");
                        }
                        if outcomes.iter().any(|o| *o >= Outcome::Panic) {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{name} seed {seed}: {outcomes:?}: {note}"));
                        }
                    }
                }
            });
        }
    });
    let table = table.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    let cols = [
        Outcome::Error,
        Outcome::Same,
        Outcome::VerifyOk,
        Outcome::Panic,
        Outcome::Unnamed,
        Outcome::Different,
    ];
    println!(
        "{cases} cases per kind, {workers} threads, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    println!(
        "{:<10} {:>8} {:>8} {:>10} {:>7} {:>9} {:>10}",
        "kind", "error", "same", "verify ok", "PANIC", "UNNAMED", "DIFFERENT"
    );
    for (k, name) in KINDS.iter().enumerate() {
        let n: Vec<u64> = cols
            .iter()
            .map(|&o| table.get(&(k, o)).copied().unwrap_or(0))
            .collect();
        println!(
            "{name:<10} {:>8} {:>8} {:>10} {:>7} {:>9} {:>10}",
            n[0], n[1], n[2], n[3], n[4], n[5]
        );
    }
    assert!(
        failures.is_empty(),
        "{} failing cases, first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
