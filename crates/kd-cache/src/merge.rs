//! Joining the parts of a sharded run (`--shard i/N`) into one cache.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{CacheError, Result};
use crate::manifest::{check_schema, Manifest, ShardInfo, MANIFEST_FILE};
use kd_core::fs::{sha256_file, HashingWriter, TmpFile};

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
        check_schema(&m.schema_version, &m.targets)
            .map_err(|e| bad(format!("{}: {e}", dir.display())))?;
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
    if let Some(missing) = missing_parts(&have, count) {
        return Err(bad(missing));
    }
    Ok(parts)
}

/// Ranges listed in a missing-part report before the rest is only counted.
const SHOWN_RANGES: usize = 6;

/// The report of the indices in `0..count` that are not in `have` (sorted,
/// distinct, each `< count`), or `None` when none is missing:
/// `parts 1, 3..29999999 of 30000000 missing (found 2)`. The work is bounded
/// by the parts found, not by `count`.
fn missing_parts(have: &[u32], count: u32) -> Option<String> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut next = 0u64;
    for h in have.iter().map(|&h| u64::from(h)).chain([u64::from(count)]) {
        if h > next {
            ranges.push((next, h - 1));
        }
        next = next.max(h + 1);
    }
    if ranges.is_empty() {
        return None;
    }
    let total: u64 = ranges.iter().map(|(a, b)| b - a + 1).sum();
    let mut shown: Vec<String> = ranges
        .iter()
        .take(SHOWN_RANGES)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..{b}")
            }
        })
        .collect();
    if ranges.len() > SHOWN_RANGES {
        shown.push(format!("and {} more ranges", ranges.len() - SHOWN_RANGES));
    }
    Some(format!(
        "{} {} of {count} missing (found {})",
        if total == 1 { "part" } else { "parts" },
        shown.join(", "),
        have.len()
    ))
}

/// Checks, before anything is written or moved, that every shard of every
/// part exists with the size its manifest gives (and, when moving, the
/// SHA-256), and so does part 0's token-count file.
fn check_files(parts: &[(PathBuf, Manifest)], mode: MergeMode) -> Result<()> {
    let mut files: Vec<(PathBuf, Option<u64>, &str)> = Vec::new();
    for (dir, m) in parts {
        for s in &m.shards {
            files.push((dir.join(&s.file), Some(s.bytes), &s.sha256));
        }
    }
    if let Some(tc) = &parts[0].1.token_counts {
        files.push((parts[0].0.join(&tc.file), None, &tc.sha256));
    }
    // The weights file of every part (their manifests name the same SHA-256): each must be
    // present with its size before anything moves.
    for (dir, m) in parts {
        if let Some(w) = &m.attention_weights {
            files.push((dir.join(&w.file), Some(w.bytes), &w.sha256));
        }
    }
    for (path, bytes, sha) in files {
        let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                CacheError::corrupt(&path, "file", "listed in manifest.json but missing")
            }
            _ => CacheError::io(&path, e),
        })?;
        if bytes.is_some_and(|b| b != meta.len()) {
            return Err(CacheError::corrupt(
                &path,
                "file",
                format!(
                    "{} bytes, manifest.json says {}",
                    meta.len(),
                    bytes.unwrap_or(0)
                ),
            ));
        }
        if mode == MergeMode::Move && !sha256_file(&path)?.eq_ignore_ascii_case(sha) {
            return Err(CacheError::corrupt(
                &path,
                "file",
                "sha256 differs from its manifest.json (run verify on the part)",
            ));
        }
    }
    Ok(())
}

/// How a file got into the merged cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// Renamed: undone by renaming it back.
    Renamed,
    /// Copied (the source is still there): undone by removing the copy.
    Copied,
}

/// The files placed in the output so far, to undo them if the merge fails.
#[derive(Debug, Default)]
struct Placed(Vec<(PathBuf, PathBuf, How)>);

impl Placed {
    /// Moves or copies `from` to `to` and remembers it. A copy must have
    /// SHA-256 `sha` (when given); it is removed otherwise.
    fn place(&mut self, from: &Path, to: &Path, mode: MergeMode, sha: Option<&str>) -> Result<()> {
        if mode == MergeMode::Move && std::fs::rename(from, to).is_ok() {
            self.0
                .push((from.to_path_buf(), to.to_path_buf(), How::Renamed));
            return Ok(());
        }
        let got = copy_file(from, to)?;
        self.0
            .push((from.to_path_buf(), to.to_path_buf(), How::Copied));
        if sha.is_some_and(|sha| !got.eq_ignore_ascii_case(sha)) {
            return Err(CacheError::corrupt(
                from,
                "file",
                "sha256 differs from its manifest.json (run verify on the part)",
            ));
        }
        Ok(())
    }

    /// Puts everything back where it was; returns what could not be undone.
    fn undo(self) -> Vec<String> {
        let mut failed = Vec::new();
        for (from, to, how) in self.0.into_iter().rev() {
            let r = match how {
                How::Renamed => std::fs::rename(&to, &from),
                How::Copied => std::fs::remove_file(&to),
            };
            if let Err(e) = r {
                failed.push(format!("{} -> {}: {e}", to.display(), from.display()));
            }
        }
        failed
    }

    /// Sources of the files copied in move mode (to remove once the merge is complete).
    fn copied_sources(&self) -> impl Iterator<Item = &Path> {
        self.0
            .iter()
            .filter(|(_, _, h)| *h == How::Copied)
            .map(|(from, _, _)| from.as_path())
    }
}

/// Places every shard and the token-count file in `out` and writes the
/// merged manifest.
fn place_all(
    parts: &[(PathBuf, Manifest)],
    out: &Path,
    mode: MergeMode,
    merged: &mut Manifest,
    placed: &mut Placed,
) -> Result<()> {
    let ext = merged.backend.extension();
    for (dir, m) in parts {
        for s in &m.shards {
            let name = format!("shard-{:05}.{ext}", merged.shards.len());
            placed.place(&dir.join(&s.file), &out.join(&name), mode, Some(&s.sha256))?;
            merged.shards.push(ShardInfo {
                file: name,
                ..s.clone()
            });
        }
    }
    if let Some(tc) = &merged.token_counts {
        if merged.shards.iter().any(|s| s.file == tc.file) || tc.file == MANIFEST_FILE {
            return Err(bad(format!(
                "the token-count file `{}` would overwrite a file of the merged cache",
                tc.file
            )));
        }
        let from = parts[0].0.join(&tc.file);
        // Copied, never moved: every part keeps its own until the merge is complete.
        placed.place(
            &from,
            &out.join(&tc.file),
            MergeMode::Copy,
            Some(&tc.sha256),
        )?;
    }
    if let Some(w) = &merged.attention_weights {
        if merged.shards.iter().any(|s| s.file == w.file)
            || w.file == MANIFEST_FILE
            || merged
                .token_counts
                .as_ref()
                .is_some_and(|t| t.file == w.file)
        {
            return Err(bad(format!(
                "the attention weights file `{}` would overwrite a file of the merged cache",
                w.file
            )));
        }
        // Copied (checked against its SHA-256 as it is made), never moved.
        placed.place(
            &parts[0].0.join(&w.file),
            &out.join(&w.file),
            MergeMode::Copy,
            Some(&w.sha256),
        )?;
    }
    merged.save(out)
}

/// Joins the caches in `inputs` (every part of one `--shard i/N` run, in any
/// order) into a new cache `out`: shards in part order renamed
/// `shard-00000...`, the token-count file copied from part 0, and a manifest
/// equal to the parts' except for `shards` and `part` (removed). Refuses,
/// naming the difference, parts of different runs or settings, repeated or
/// missing parts, and an `out` that already holds a cache.
///
/// Every shard is checked (present, size, and SHA-256 when moving) before
/// the first is placed; when placing fails midway, the files placed so far
/// are moved back or removed, so the parts stay as they were and the command
/// can be run again.
pub fn merge(inputs: &[PathBuf], out: &Path, mode: MergeMode) -> Result<Manifest> {
    let parts = check_parts(inputs)?;
    check_files(&parts, mode)?;
    let created_out = !out.exists();
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
    let mut placed = Placed::default();
    if let Err(e) = place_all(&parts, out, mode, &mut merged, &mut placed) {
        let failed = placed.undo();
        if created_out {
            let _ = std::fs::remove_dir(out);
        }
        if failed.is_empty() {
            return Err(e);
        }
        return Err(CacheError::Invalid(format!(
            "{e}; undoing the merge failed for: {}",
            failed.join("; ")
        )));
    }
    if mode == MergeMode::Move {
        for from in placed.copied_sources() {
            let _ = std::fs::remove_file(from);
        }
        for (dir, m) in &parts {
            let _ = std::fs::remove_file(Manifest::path(dir));
            if let Some(tc) = &m.token_counts {
                let _ = std::fs::remove_file(dir.join(&tc.file));
            }
            if let Some(w) = &m.attention_weights {
                let _ = std::fs::remove_file(dir.join(&w.file));
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
    Ok(merged)
}
