//! One settings shape for every run: the table a pipeline step holds is what `--config FILE`
//! of the single commands holds, `--set key=value` overrides a key in either, and each
//! settings type declares its defaults once (its `Default`): a table that names one key
//! leaves every other key at that default, nested tables included.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

/// `user` laid over the defaults of `T` (tables merged key by key, recursively; any other
/// value replaces the default), then read as a `T`.
pub fn with_defaults<T: Serialize + DeserializeOwned + Default>(user: toml::Value) -> Result<T> {
    let mut merged = toml::Value::try_from(T::default()).context("defaults do not serialise")?;
    merge(&mut merged, user);
    Ok(merged.try_into()?)
}

/// Lays `over` onto `base`: tables key by key, recursively; anything else replaces, and so
/// does a table whose `kind` differs from the base's (another variant of a tagged enum).
pub fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o))
            if b.get("kind").is_none() || b.get("kind") == o.get("kind") =>
        {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Reads a settings file for a run of `kind` (`train`, `finetune_mlm`, ...): the table a
/// pipeline step of that kind holds (its `kind` key, if any, must match). The older form, the
/// same table under a `[section]` header, is still read. `overrides` (`key.path=value`) are
/// applied before the defaults fill the rest.
pub fn from_file<T: Serialize + DeserializeOwned + Default>(
    path: Option<&Path>,
    kind: &str,
    section: &str,
    overrides: &[String],
) -> Result<T> {
    let mut table = match path {
        None => toml::Table::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let t: toml::Table = toml::from_str(&text)
                .with_context(|| format!("{}: invalid TOML", path.display()))?;
            unwrap_section::<T>(t, section)
        }
    };
    if let Some(k) = table.remove("kind") {
        if k.as_str() != Some(kind) {
            bail!(
                "{}: kind = {k}, but this command runs kind = {kind:?}",
                path.map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
    }
    let mut value = toml::Value::Table(table);
    for o in overrides {
        crate::pipeline::apply_override(&mut value, o).with_context(|| format!("--set {o}"))?;
    }
    let name = path.map_or("settings".to_string(), |p| p.display().to_string());
    with_defaults(value).with_context(|| format!("{name}: invalid settings"))
}

/// The older form `[section] ...` holds the settings one level down. It is recognised when
/// `section` is the file's only key and the table under it is not simply `T`'s own field of
/// that name (as `[train]` is for the loop settings of a training run).
fn unwrap_section<T: Serialize + Default>(mut t: toml::Table, section: &str) -> toml::Table {
    let inner = match t.get(section) {
        Some(toml::Value::Table(inner)) if t.len() == 1 => inner.clone(),
        _ => return t,
    };
    let own_field = toml::Value::try_from(T::default())
        .ok()
        .and_then(|d| d.get(section).and_then(|f| f.as_table()).cloned());
    match own_field {
        Some(fields) if inner.keys().all(|k| fields.contains_key(k)) => t,
        _ => {
            t.remove(section);
            inner
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_merge_unless_their_kind_differs() {
        let mut base: toml::Value =
            toml::from_str("a = 1\n[t]\nx = 1\ny = 2\n[e]\nkind = \"p\"\npath = \"f\"\n").unwrap();
        let over: toml::Value =
            toml::from_str("[t]\ny = 3\n[e]\nkind = \"q\"\ntrain = \"g\"\n").unwrap();
        merge(&mut base, over);
        let want: toml::Value =
            toml::from_str("a = 1\n[t]\nx = 1\ny = 3\n[e]\nkind = \"q\"\ntrain = \"g\"\n").unwrap();
        assert_eq!(base, want);
    }
    use kd_student::distil::DistilConfig;

    fn parse(text: &str) -> DistilConfig {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, text).unwrap();
        from_file(Some(&p), "train", "train", &[]).unwrap()
    }

    #[test]
    fn a_table_naming_one_key_leaves_every_other_at_the_trainers_default() {
        let want = DistilConfig::default();
        for text in [
            "[train]\ncheckpoint_every = 2\n",
            "[train.train]\ncheckpoint_every = 2\n",
            "kind = \"train\"\n[train]\ncheckpoint_every = 2\n",
        ] {
            let c = parse(text);
            assert_eq!(c.train.checkpoint_every, 2, "{text}");
            let mut expect = want.clone();
            expect.train.checkpoint_every = 2;
            assert_eq!(c, expect, "{text}");
            assert_eq!(c.train.lr, 5e-4);
            assert_eq!(c.train.warmup_fraction, 0.05);
            assert_eq!(c.train.max_grad_norm, Some(5.0));
        }
        let c = parse("batch_size = 4\n[optimizer]\neps = 1e-8\n");
        assert_eq!((c.batch_size, c.optimizer.eps), (4, 1e-8));
        assert_eq!((c.optimizer.beta2, c.train.lr), (0.98, 5e-4));
    }

    #[test]
    fn overrides_and_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, "kind = \"train\"\nbatch_size = 4\n").unwrap();
        let c: DistilConfig =
            from_file(Some(&p), "train", "train", &["train.lr=0.001".into()]).unwrap();
        assert_eq!(
            (c.batch_size, c.train.lr, c.train.warmup_fraction),
            (4, 1e-3, 0.05)
        );
        let e = from_file::<DistilConfig>(Some(&p), "precompute", "precompute", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("kind"), "{e}");
        std::fs::write(&p, "batch_sise = 4\n").unwrap();
        let e = format!(
            "{:#}",
            from_file::<DistilConfig>(Some(&p), "train", "train", &[]).unwrap_err()
        );
        assert!(e.contains("batch_sise") && e.contains("s.toml"), "{e}");
    }
}
