//! The settings a run started with, kept in its directory so that a rerun into the same
//! directory resumes only the same run.
//!
//! A fresh run writes `run-settings.json`; a rerun that finds checkpoints compares its own
//! settings with that file, key by key, and is refused when any differs (other than keys that
//! only change logging or checkpointing), naming each key with both values.

use crate::checkpoint::list_checkpoints;
use crate::error::{Error, Result};
use kd_core::fs::write_atomic;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Name of the settings file in a run directory.
pub const SETTINGS_FILE: &str = "run-settings.json";

/// Keys that may change between a run and its resumption: they affect logging, checkpointing
/// and decode-ahead only, never the weights.
pub const OPERATIONAL_KEYS: &[&str] = &[
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_last",
    "prefetch_batches",
];

/// Records `settings` for a fresh run in `run_dir`, or, when `run_dir/checkpoints` holds a
/// checkpoint, checks that `settings` equal those the run started with (keys listed in
/// [`OPERATIONAL_KEYS`] excepted). A run directory from before settings were recorded gets
/// them recorded now.
pub fn check_or_record(run_dir: &Path, settings: &Value) -> Result<()> {
    let path = run_dir.join(SETTINGS_FILE);
    let resuming = !list_checkpoints(&run_dir.join("checkpoints"))?.is_empty();
    if resuming && path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let stored: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.clone(),
            cause: e,
        })?;
        let diffs = differences(&stored, settings);
        if !diffs.is_empty() {
            let list: Vec<String> = diffs
                .iter()
                .map(|(k, (was, now))| format!("{k} was {was}, now {now}"))
                .collect();
            return Err(Error::InvalidConfig(format!(
                "{} holds checkpoints of a run with other settings ({}); rerun with the same \
                 settings to resume it, or start fresh in another output directory (or delete \
                 {})",
                run_dir.display(),
                list.join("; "),
                run_dir.display()
            )));
        }
        return Ok(());
    }
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    let text = serde_json::to_string_pretty(settings).map_err(|e| Error::Json {
        path: path.clone(),
        cause: e,
    })?;
    Ok(write_atomic(&path, text.as_bytes())?)
}

/// The keys (dotted paths) whose values differ between `was` and `now`, with both values
/// (`absent` where a side lacks the key), operational keys excepted.
pub fn differences(was: &Value, now: &Value) -> BTreeMap<String, (String, String)> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", was, &mut a);
    flatten("", now, &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let show = |v: Option<&Value>| v.map_or("absent".to_string(), |v| v.to_string());
    keys.into_iter()
        .filter(|k| !OPERATIONAL_KEYS.contains(&k.as_str()))
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| (k.clone(), (show(a.get(k)), show(b.get(k)))))
        .collect()
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_name_nested_keys_and_skip_operational_ones() {
        let was = json!({"cache": "a", "train": {"lr": 5e-4, "log_every": 10}, "x": [1, 2]});
        let now = json!({"cache": "b", "train": {"lr": 5e-4, "log_every": 1}, "y": 3, "x": [1]});
        let d = differences(&was, &now);
        let keys: Vec<&str> = d.keys().map(String::as_str).collect();
        assert_eq!(keys, ["cache", "x", "y"]);
        assert_eq!(d["cache"], ("\"a\"".to_string(), "\"b\"".to_string()));
        assert_eq!(d["y"], ("absent".to_string(), "3".to_string()));
    }
}
