//! A task's labelled data as settings name it: the movie-review set with its fixed split, or
//! TSV/JSONL files per split; read into train/dev/test [`TaskDataset`]s labelled consistently.

use crate::movie_reviews::{load_movie_reviews, Split};
use crate::task::{
    read_task, read_task_with_labels, ColumnRef, LabelKind, TaskDataset, TaskFormat, TaskSpec,
};
use crate::{DataError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the task data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskData {
    /// The movie-review sentiment set with its fixed split by id.
    MovieReviews {
        /// `movieReviewSnippets_GroundTruth.txt`.
        path: PathBuf,
    },
    /// Separate TSV (with header) or JSONL files per split.
    Files {
        /// Training file.
        train: PathBuf,
        /// Development file (model selection).
        dev: PathBuf,
        /// Test file, if any.
        test: Option<PathBuf>,
        /// Text column / field.
        text: String,
        /// Second text of a pair, if any.
        text_pair: Option<String>,
        /// Label column / field.
        label: String,
        /// `class` (integer ids), `named` (strings) or `regression`.
        label_kind: String,
    },
}

/// A split of a task dataset (in settings: `train`, `dev` or `test`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskSplit {
    /// The training split.
    #[default]
    Train,
    /// The development split.
    Dev,
    /// The test split.
    Test,
}

/// The three splits, read and labelled consistently.
pub struct Splits {
    /// Training examples.
    pub train: TaskDataset,
    /// Development examples.
    pub dev: TaskDataset,
    /// Test examples, if any.
    pub test: Option<TaskDataset>,
}

impl Splits {
    /// The examples of one split; an error if `split` is `test` and there is none.
    pub fn take(self, split: TaskSplit) -> Result<TaskDataset> {
        match split {
            TaskSplit::Train => Ok(self.train),
            TaskSplit::Dev => Ok(self.dev),
            TaskSplit::Test => self
                .test
                .ok_or_else(|| DataError::Setting("the task data has no test split".into())),
        }
    }
}

impl TaskData {
    /// The input files in reading order.
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            TaskData::MovieReviews { path } => vec![path.clone()],
            TaskData::Files {
                train, dev, test, ..
            } => [Some(train), Some(dev), test.as_ref()]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
        }
    }

    /// Reads the splits.
    pub fn load(&self) -> Result<Splits> {
        match self {
            TaskData::MovieReviews { path } => {
                let mr = load_movie_reviews(path)?;
                Ok(Splits {
                    train: mr.task_dataset(Split::Train, false),
                    dev: mr.task_dataset(Split::Dev, false),
                    test: Some(mr.task_dataset(Split::Test, false)),
                })
            }
            TaskData::Files {
                train,
                dev,
                test,
                text,
                text_pair,
                label,
                label_kind,
            } => {
                let kind = match label_kind.as_str() {
                    "class" => LabelKind::ClassId,
                    "named" => LabelKind::Named,
                    "regression" => LabelKind::Regression,
                    other => {
                        return Err(DataError::Setting(format!(
                        "label_kind: unknown value {other:?} (expected class, named or regression)"
                    )))
                    }
                };
                let spec_for = |p: &Path| TaskSpec {
                    format: if p.extension().is_some_and(|e| e == "jsonl") {
                        TaskFormat::Jsonl
                    } else {
                        TaskFormat::Tsv { header: true }
                    },
                    text: ColumnRef::Name(text.clone()),
                    text_pair: text_pair.clone().map(ColumnRef::Name),
                    label: ColumnRef::Name(label.clone()),
                    label_kind: kind,
                };
                let tr = read_task(train, &spec_for(train))?;
                let names = tr.label_names.clone();
                let dv = read_task_with_labels(dev, &spec_for(dev), &names)?;
                let te = test
                    .as_ref()
                    .map(|t| read_task_with_labels(t, &spec_for(t), &names))
                    .transpose()?;
                Ok(Splits {
                    train: tr,
                    dev: dv,
                    test: te,
                })
            }
        }
    }
}
