//! Task datasets for sequence classification and regression, read from TSV
//! or JSONL, and their encoding as `[CLS] a [SEP] (b [SEP])`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::corpus::json_text_field;
use crate::error::{DataError, Result};
use crate::text::read_lines;

/// A column of a TSV file or a field of a JSONL record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnRef {
    /// By header name (TSV with header) or field name (JSONL).
    Name(String),
    /// By 0-based index (TSV only).
    Index(usize),
}

impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnRef::Name(n) => write!(f, "`{n}`"),
            ColumnRef::Index(i) => write!(f, "#{i}"),
        }
    }
}

/// File layout of a task dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskFormat {
    /// Tab-separated, no quoting; with or without a header row of column names.
    /// Blank lines are skipped; every row must have as many fields as the
    /// header (or, without header, as the first row).
    Tsv {
        /// Whether the first line holds the column names.
        header: bool,
    },
    /// One JSON object per line; blank lines skipped.
    Jsonl,
}

/// How label values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelKind {
    /// Non-negative integer class ids, used as they are.
    ClassId,
    /// Strings mapped to class ids through the sorted (byte-wise) list of
    /// distinct labels, e.g. `neg` -> 0, `pos` -> 1.
    Named,
    /// Real-valued targets (regression).
    Regression,
}

/// What to read from a task file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// File layout.
    pub format: TaskFormat,
    /// Column of the (first) text.
    pub text: ColumnRef,
    /// Column of the second text of a pair, if any.
    pub text_pair: Option<ColumnRef>,
    /// Column of the label.
    pub label: ColumnRef,
    /// How labels are read.
    pub label_kind: LabelKind,
}

/// A label.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Label {
    /// A class id.
    Class(u32),
    /// A regression target.
    Value(f32),
}

impl Label {
    /// The class id, if this is a class label.
    pub fn class(self) -> Option<u32> {
        match self {
            Label::Class(c) => Some(c),
            Label::Value(_) => None,
        }
    }

    /// The label as a float (a class id converted).
    pub fn as_f32(self) -> f32 {
        match self {
            Label::Class(c) => c as f32,
            Label::Value(v) => v,
        }
    }
}

/// One example.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskExample {
    /// 1-based line in the file.
    pub line: usize,
    /// The (first) text.
    pub text: String,
    /// The second text, for pair tasks.
    pub text_pair: Option<String>,
    /// The label.
    pub label: Label,
}

/// A task file, read.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDataset {
    /// The file.
    pub path: PathBuf,
    /// Examples in file order.
    pub examples: Vec<TaskExample>,
    /// For [`LabelKind::Named`]: the label vocabulary, index = class id.
    /// Empty for the other kinds.
    pub label_names: Vec<String>,
    /// Number of classes (largest id + 1, or vocabulary size); 1 for regression.
    pub num_labels: usize,
}

struct RawRow {
    line: usize,
    text: String,
    pair: Option<String>,
    label: String,
}

/// Reads a task file; a file without examples is an error. Label strings are
/// trimmed. With [`LabelKind::Named`] the label vocabulary is built from this
/// file; use [`read_task_with_labels`] for dev/test files so that
/// they share the training file's vocabulary.
pub fn read_task(path: &Path, spec: &TaskSpec) -> Result<TaskDataset> {
    read_task_impl(path, spec, None)
}

/// Reads a task file with a fixed label vocabulary (only used with
/// [`LabelKind::Named`]); a label outside it is a [`DataError::BadLabel`].
pub fn read_task_with_labels(
    path: &Path,
    spec: &TaskSpec,
    label_names: &[String],
) -> Result<TaskDataset> {
    read_task_impl(path, spec, Some(label_names))
}

fn read_task_impl(path: &Path, spec: &TaskSpec, names: Option<&[String]>) -> Result<TaskDataset> {
    let rows = match spec.format {
        TaskFormat::Tsv { header } => read_tsv_rows(path, spec, header)?,
        TaskFormat::Jsonl => read_jsonl_rows(path, spec)?,
    };
    if rows.is_empty() {
        return Err(DataError::EmptyDataset {
            path: path.to_path_buf(),
        });
    }
    let column = spec.label.to_string();
    let bad = |row: &RawRow, problem: &str| DataError::BadLabel {
        path: path.to_path_buf(),
        line: row.line,
        column: column.clone(),
        value: row.label.clone(),
        problem: problem.to_string(),
    };
    let mut label_names = Vec::new();
    let mut labels = Vec::with_capacity(rows.len());
    match spec.label_kind {
        LabelKind::ClassId => {
            for row in &rows {
                let id = row
                    .label
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| bad(row, "expected a non-negative integer class id, found"))?;
                labels.push(Label::Class(id));
            }
        }
        LabelKind::Regression => {
            for row in &rows {
                let v = row
                    .label
                    .trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite());
                let v = v.ok_or_else(|| bad(row, "expected a finite number, found"))?;
                labels.push(Label::Value(v));
            }
        }
        LabelKind::Named => {
            label_names = match names {
                Some(n) => n.to_vec(),
                None => {
                    let mut n: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
                    n.sort();
                    n.dedup();
                    n
                }
            };
            for row in &rows {
                let id = label_names
                    .iter()
                    .position(|n| *n == row.label)
                    .ok_or_else(|| bad(row, "label not in the label vocabulary"))?;
                labels.push(Label::Class(id as u32));
            }
        }
    }
    let num_labels = match spec.label_kind {
        LabelKind::Regression => 1,
        LabelKind::Named => label_names.len(),
        LabelKind::ClassId => labels
            .iter()
            .filter_map(|l| l.class())
            .max()
            .map_or(0, |m| m as usize + 1),
    };
    let examples = rows
        .into_iter()
        .zip(labels)
        .map(|(r, label)| TaskExample {
            line: r.line,
            text: r.text,
            text_pair: r.pair,
            label,
        })
        .collect();
    Ok(TaskDataset {
        path: path.to_path_buf(),
        examples,
        label_names,
        num_labels,
    })
}

fn read_tsv_rows(path: &Path, spec: &TaskSpec, header: bool) -> Result<Vec<RawRow>> {
    let lines = read_lines(path)?;
    let mut lines = lines.into_iter().filter(|l| !l.text.trim().is_empty());
    let names: Option<Vec<String>> = if header {
        let h = lines.next();
        Some(h.map_or_else(Vec::new, |h| {
            h.text.split('\t').map(|s| s.trim().to_string()).collect()
        }))
    } else {
        None
    };
    let rows: Vec<_> = lines.collect();
    let width = match &names {
        Some(n) => n.len(),
        None => rows.first().map_or(0, |r| r.text.split('\t').count()),
    };
    let available = || match &names {
        Some(n) => n.clone(),
        None => (0..width).map(|i| format!("#{i}")).collect(),
    };
    let resolve = |c: &ColumnRef| -> Result<usize> {
        let found = match (c, &names) {
            (ColumnRef::Index(i), _) => Some(*i).filter(|&i| i < width),
            (ColumnRef::Name(n), Some(names)) => names.iter().position(|h| h == n),
            (ColumnRef::Name(_), None) => None,
        };
        found.ok_or_else(|| DataError::MissingColumn {
            path: path.to_path_buf(),
            column: c.to_string(),
            available: available(),
        })
    };
    let text_col = resolve(&spec.text)?;
    let pair_col = spec.text_pair.as_ref().map(resolve).transpose()?;
    let label_col = resolve(&spec.label)?;
    rows.into_iter()
        .map(|l| {
            let fields: Vec<&str> = l.text.split('\t').collect();
            if fields.len() != width {
                return Err(DataError::FieldCount {
                    path: path.to_path_buf(),
                    line: l.number,
                    expected: width,
                    found: fields.len(),
                });
            }
            Ok(RawRow {
                line: l.number,
                text: fields[text_col].to_string(),
                pair: pair_col.map(|c| fields[c].to_string()),
                label: fields[label_col].trim().to_string(),
            })
        })
        .collect()
}

fn read_jsonl_rows(path: &Path, spec: &TaskSpec) -> Result<Vec<RawRow>> {
    let name = |c: &ColumnRef| match c {
        ColumnRef::Name(n) => Ok(n.clone()),
        ColumnRef::Index(i) => Err(DataError::Invalid(format!(
            "{}: JSONL columns are field names, not indices (#{i})",
            path.display()
        ))),
    };
    let text_field = name(&spec.text)?;
    let pair_field = spec.text_pair.as_ref().map(name).transpose()?;
    let label_field = name(&spec.label)?;
    let mut rows = Vec::new();
    for line in read_lines(path)? {
        if line.text.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line.text).map_err(|e| DataError::Json {
                path: path.to_path_buf(),
                line: line.number,
                message: e.to_string(),
            })?;
        let text = json_text_field(path, line.number, &value, &text_field)?.to_string();
        let pair = pair_field
            .as_deref()
            .map(|f| json_text_field(path, line.number, &value, f).map(str::to_string))
            .transpose()?;
        let label = json_label(path, line.number, &value, &label_field)?
            .trim()
            .to_string();
        rows.push(RawRow {
            line: line.number,
            text,
            pair,
            label,
        });
    }
    Ok(rows)
}

fn json_label(path: &Path, line: usize, value: &serde_json::Value, field: &str) -> Result<String> {
    match value.get(field) {
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Ok(b.to_string()),
        _ => json_text_field(path, line, value, field).map(str::to_string),
    }
}
