//! Joining the parts of a sharded run (`--shard i/N`) into one cache.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{CacheError, Result};
use crate::fsutil::{HashingWriter, TmpFile};
use crate::manifest::{Manifest, ShardInfo, SCHEMA_VERSION};

/// How shard files get into the merged cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeMode {
    /// Copy them (checking each copy's SHA-256); the parts stay usable.
    Copy,
    /// Rename them (copy across file systems); each part's `manifest.json`
    /// is then removed, and its folder too if nothing else is left in it.
    Move,
}

fn bad(msg: String) -> CacheError {
    CacheError::Incompatible(msg)
}

fn show(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        s.chars().take(57).collect::<String>() + "..."
    } else {
        s
    }
}

/// The first path where `a` and `b` differ, with both values.
fn first_difference(
    a: &serde_json::Value,
    b: &serde_json::Value,
    path: &str,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let null = Value::Null;
                first_difference(x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), &p)
            })
        }
        _ if a == b => None,
        _ => Some((path.to_string(), show(a), show(b))),
    }
}

fn comparable(m: &Manifest) -> Result<serde_json::Value> {
    let mut m = m.clone();
    m.shards.clear();
    m.part = None;
    serde_json::to_value(&m).map_err(|e| CacheError::Invalid(e.to_string()))
}

/// Copies `from` to `to` (via `to.tmp`, removed on error), returning the
/// copy's SHA-256.
fn copy_file(from: &Path, to: &Path) -> Result<String> {
    let src = File::open(from).map_err(|e| CacheError::io(from, e))?;
    let (guard, dst) = TmpFile::create(to)?;
    let tmp = guard.tmp().to_path_buf();
    let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, dst));
    std::io::copy(&mut BufReader::with_capacity(1 << 20, src), &mut out)
        .and_then(|_| out.flush())
        .map_err(|e| CacheError::io(&tmp, e))?;
    let (buf, sha, _) = out.finish();
    buf.into_inner()
        .map_err(|e| CacheError::io(&tmp, e.into_error()))?;
    guard.commit()?;
    Ok(sha)
}

/// Checks that `parts` are all the parts of one run; returns them sorted by index.
fn check_parts(inputs: &[PathBuf]) -> Result<Vec<(PathBuf, Manifest)>> {
    if inputs.is_empty() {
        return Err(CacheError::Invalid("merge needs at least one part".into()));
    }
    let mut parts = Vec::new();
    for dir in inputs {
        let m = Manifest::load(dir)?;
        if m.schema_version != SCHEMA_VERSION {
            return Err(bad(format!(
                "{}: schema {} != {SCHEMA_VERSION}",
                dir.display(),
                m.schema_version
            )));
        }
        if m.part.is_none() {
            return Err(bad(format!(
                "{}: not a part of a sharded run (no `part` in manifest.json)",
                dir.display()
            )));
        }
        parts.push((dir.clone(), m));
    }
    parts.sort_by_key(|(_, m)| m.part.map(|p| p.index));
    let count = parts[0].1.part.map(|p| p.count).unwrap_or(0);
    let base = comparable(&parts[0].1)?;
    for (i, (dir, m)) in parts.iter().enumerate() {
        let p = m
            .part
            .unwrap_or(crate::manifest::Part { index: 0, count: 0 });
        if p.count != count {
            return Err(bad(format!(
                "{} is part {}/{}, {} is part {}/{count}",
                dir.display(),
                p.index,
                p.count,
                parts[0].0.display(),
                parts[0].1.part.map(|q| q.index).unwrap_or(0)
            )));
        }
        if i > 0 && parts[i - 1].1.part.map(|q| q.index) == Some(p.index) {
            return Err(bad(format!(
                "{} and {} are both part {}/{count}",
                parts[i - 1].0.display(),
                dir.display(),
                p.index
            )));
        }
        if let Some((field, a, b)) = first_difference(&base, &comparable(m)?, "") {
            return Err(bad(format!(
                "{} differs from {} in `{field}`: {b} vs {a}",
                dir.display(),
                parts[0].0.display()
            )));
        }
    }
    let have: Vec<u32> = parts
        .iter()
        .filter_map(|(_, m)| m.part.map(|p| p.index))
        .collect();
    let missing: Vec<String> = (0..count)
        .filter(|i| !have.contains(i))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "missing part(s) {} of {count} (given: {})",
            missing.join(", "),
            have.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(parts)
}

/// Joins the caches in `inputs` (every part of one `--shard i/N` run, in any
/// order) into a new cache `out`: shards in part order renamed
/// `shard-00000...`, the token-count file copied from part 0, and a manifest
/// equal to the parts' except for `shards` and `part` (removed). Refuses,
/// naming the difference, parts of different runs or settings, repeated or
/// missing parts, and an `out` that already holds a cache.
pub fn merge(inputs: &[PathBuf], out: &Path, mode: MergeMode) -> Result<Manifest> {
    let parts = check_parts(inputs)?;
    std::fs::create_dir_all(out).map_err(|e| CacheError::io(out, e))?;
    if Manifest::path(out).exists() {
        return Err(CacheError::Invalid(format!(
            "{} already exists: refusing to overwrite a cache",
            Manifest::path(out).display()
        )));
    }
    let mut merged = parts[0].1.clone();
    merged.part = None;
    merged.shards = Vec::new();
    let ext = merged.backend.extension();
    for (dir, m) in &parts {
        for s in &m.shards {
            let from = dir.join(&s.file);
            let name = format!("shard-{:05}.{ext}", merged.shards.len());
            let to = out.join(&name);
            match mode {
                MergeMode::Copy => {
                    let sha = copy_file(&from, &to)?;
                    if !sha.eq_ignore_ascii_case(&s.sha256) {
                        let _ = std::fs::remove_file(&to);
                        return Err(CacheError::corrupt(
                            &from,
                            "file",
                            "sha256 differs from its manifest.json (run verify on the part)",
                        ));
                    }
                }
                MergeMode::Move => {
                    if std::fs::rename(&from, &to).is_err() {
                        copy_file(&from, &to)?;
                        std::fs::remove_file(&from).map_err(|e| CacheError::io(&from, e))?;
                    }
                }
            }
            merged.shards.push(ShardInfo {
                file: name,
                ..s.clone()
            });
        }
    }
    if let Some(tc) = &merged.token_counts {
        let sha = copy_file(&parts[0].0.join(&tc.file), &out.join(&tc.file))?;
        if !sha.eq_ignore_ascii_case(&tc.sha256) {
            return Err(CacheError::corrupt(
                parts[0].0.join(&tc.file),
                "file",
                "sha256 differs from manifest.json",
            ));
        }
    }
    merged.save(out)?;
    if mode == MergeMode::Move {
        for (dir, m) in &parts {
            let _ = std::fs::remove_file(Manifest::path(dir));
            if let Some(tc) = &m.token_counts {
                let _ = std::fs::remove_file(dir.join(&tc.file));
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
    Ok(merged)
}
