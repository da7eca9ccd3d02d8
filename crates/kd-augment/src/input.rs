//! The examples to augment: a task file as kd-data reads it (the movie-review file with a
//! split, or a JSONL / TSV task file), checked for empty texts.

use crate::error::{AugmentError, Result};
use kd_data::movie_reviews::{load_movie_reviews, Split, FILE_NAME};
use kd_data::{read_task, ColumnRef, LabelKind, TaskDataset, TaskFormat, TaskSpec, TaskSplit};
use std::path::Path;

/// How the input file is read.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec<'a> {
    /// The split taken from the movie-review file.
    pub split: TaskSplit,
    /// Text column / field.
    pub text: &'a str,
    /// Second text of a pair, if any.
    pub text_pair: Option<&'a str>,
    /// Label column / field.
    pub label: &'a str,
    /// `class`, `named` or `regression`.
    pub label_kind: LabelKind,
}

/// The label kind named in settings (`class`, `named` or `regression`).
pub fn parse_label_kind(kind: &str) -> Result<LabelKind> {
    match kind {
        "class" => Ok(LabelKind::ClassId),
        "named" => Ok(LabelKind::Named),
        "regression" => Ok(LabelKind::Regression),
        other => Err(AugmentError::Setting(format!(
            "label_kind: unknown value {other:?} (expected class, named or regression)"
        ))),
    }
}

/// Reads `path`: `movieReviewSnippets_GroundTruth.txt` gives the split `spec.split` (binary
/// labels, or the ratings with `regression`); any other file is a task file, JSONL when its
/// name ends in `.jsonl`, else TSV with a header row.
pub fn read_examples(path: &Path, spec: &InputSpec) -> Result<TaskDataset> {
    let data = if path.file_name().is_some_and(|n| n == FILE_NAME) {
        let split = match spec.split {
            TaskSplit::Train => Split::Train,
            TaskSplit::Dev => Split::Dev,
            TaskSplit::Test => Split::Test,
        };
        let regression = spec.label_kind == LabelKind::Regression;
        let mr = load_movie_reviews(path)?;
        mr.task_dataset(split, regression)
    } else {
        if spec.split != TaskSplit::Train {
            return Err(AugmentError::Setting(format!(
                "split: {} is a task file, which is one split as it is; a split is chosen only \
                 in the movie-review file {FILE_NAME}",
                path.display()
            )));
        }
        let format = if path.extension().is_some_and(|e| e == "jsonl") {
            TaskFormat::Jsonl
        } else {
            TaskFormat::Tsv { header: true }
        };
        let task_spec = TaskSpec {
            format,
            text: ColumnRef::Name(spec.text.to_string()),
            text_pair: spec.text_pair.map(|c| ColumnRef::Name(c.to_string())),
            label: ColumnRef::Name(spec.label.to_string()),
            label_kind: spec.label_kind,
        };
        read_task(path, &task_spec)?
    };
    for ex in &data.examples {
        let empty = |which: &str| AugmentError::Example {
            path: path.to_path_buf(),
            line: ex.line,
            message: format!("empty {which}: there is nothing to augment"),
        };
        if ex.text.trim().is_empty() {
            return Err(empty("text"));
        }
        if ex.text_pair.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(empty("second text (text_pair)"));
        }
    }
    Ok(data)
}
