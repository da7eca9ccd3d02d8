//! The transfer set as JSONL: one object per row with `text`, `text_b` (pairs only), `label`,
//! `source_id` (the example's 0-based index in the input) and `method` (`original`, `tinybert`
//! or `tang`). kd-data reads it back as a task file (JSONL, text field `text`, pair field
//! `text_b`, label field `label`, the input's label kind): class ids are written as integers,
//! named labels as their names, regression targets as numbers.

use kd_data::{Label, LabelKind, TaskDataset};
use serde::Serialize;
use std::io::Write;

/// The label as written.
#[derive(Serialize)]
#[serde(untagged)]
enum LabelOut<'a> {
    Id(u32),
    Name(&'a str),
    Value(f32),
}

#[derive(Serialize)]
struct Row<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text_b: Option<&'a str>,
    label: LabelOut<'a>,
    source_id: u64,
    method: &'a str,
}

/// Writes one row (a JSON line) of example `source_id` of `data`.
pub fn write_row(
    out: &mut impl Write,
    data: &TaskDataset,
    kind: LabelKind,
    source_id: u64,
    texts: (&str, Option<&str>),
    method: &str,
) -> std::io::Result<()> {
    let ex = &data.examples[source_id as usize];
    let label = match (ex.label, kind) {
        (Label::Class(c), LabelKind::Named) => data
            .label_names
            .get(c as usize)
            .map_or(LabelOut::Id(c), |n| LabelOut::Name(n)),
        (Label::Class(c), _) => LabelOut::Id(c),
        (Label::Value(v), _) => LabelOut::Value(v),
    };
    let row = Row {
        text: texts.0,
        text_b: texts.1,
        label,
        source_id,
        method,
    };
    let mut line = serde_json::to_vec(&row)?;
    line.push(b'\n');
    out.write_all(&line)
}
