//! A task's labels against the classifier teacher that labels it: named labels are mapped to
//! the teacher's class ids by name (its `config.json` `id2label`), class ids must be below its
//! number of classes, regression needs a single output; anything else is refused naming the
//! file and line, so a cache never pairs a label with another class's logits.

use crate::{Error, Result};
use kd_bert::BertConfig;
use kd_data::{Label, TaskDataset};

/// The teacher's class names in id order (`LABEL_i` where `id2label` names none).
pub fn teacher_classes(cfg: &BertConfig) -> Vec<String> {
    let n = cfg.num_labels();
    let mut names: Vec<String> = (0..n).map(|i| format!("LABEL_{i}")).collect();
    for (k, v) in cfg.id2label.iter().flatten() {
        if let Some(slot) = k.parse::<usize>().ok().and_then(|i| names.get_mut(i)) {
            slot.clone_from(v);
        }
    }
    names
}

/// Checks `data`'s labels against the teacher's classes and rewrites named labels to the
/// teacher's ids. Generic teacher names (`LABEL_0`, ...) leave a named task's ids as read.
pub fn align_to_teacher(data: &mut TaskDataset, classes: &[String]) -> Result<()> {
    let at = |line: usize| format!("{}:{line}", data.path.display());
    let generic = classes
        .iter()
        .enumerate()
        .all(|(i, n)| *n == format!("LABEL_{i}"));
    let remap: Option<Vec<u32>> = (!data.label_names.is_empty() && !generic)
        .then(|| {
            data.label_names
                .iter()
                .map(|name| {
                    classes
                        .iter()
                        .position(|c| c == name)
                        .map(|i| i as u32)
                        .ok_or_else(|| {
                            let place = data
                                .examples
                                .iter()
                                .find(|e| {
                                    e.label.class().map(|c| &data.label_names[c as usize])
                                        == Some(name)
                                })
                                .map_or_else(|| data.path.display().to_string(), |e| at(e.line));
                            Error::Config(format!(
                            "{}: label {name:?} is not one of the teacher's labels {classes:?} \
                             (id2label of its config.json)",
                            place
                        ))
                        })
                })
                .collect::<Result<_>>()
        })
        .transpose()?;
    for ex in &mut data.examples {
        match ex.label {
            Label::Class(c) => {
                let id = remap.as_ref().map_or(c, |m| m[c as usize]);
                if id as usize >= classes.len() || classes.len() == 1 {
                    return Err(Error::Config(format!(
                        "{}: label {c} but the teacher has {} classes {classes:?} \
                         (id2label of its config.json)",
                        at(ex.line),
                        classes.len()
                    )));
                }
                ex.label = Label::Class(id);
            }
            Label::Value(_) if classes.len() != 1 => {
                return Err(Error::Config(format!(
                    "{}: a regression target, but the teacher is a classifier with {} classes \
                     {classes:?}",
                    at(ex.line),
                    classes.len()
                )));
            }
            Label::Value(_) => {}
        }
    }
    if remap.is_some() {
        data.label_names = classes.to_vec();
        data.num_labels = classes.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kd_data::TaskExample;

    fn data(labels: &[Label], names: &[&str]) -> TaskDataset {
        TaskDataset {
            path: "task.jsonl".into(),
            examples: labels
                .iter()
                .enumerate()
                .map(|(i, l)| TaskExample {
                    line: i + 1,
                    text: "x".into(),
                    text_pair: None,
                    label: *l,
                })
                .collect(),
            label_names: names.iter().map(|s| s.to_string()).collect(),
            num_labels: names.len().max(2),
        }
    }

    fn classes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn named_labels_take_the_teachers_ids() {
        // The task's sorted vocabulary is [neg, pos]; the teacher lists pos first.
        let mut d = data(&[Label::Class(0), Label::Class(1)], &["neg", "pos"]);
        align_to_teacher(&mut d, &classes(&["pos", "neg"])).unwrap();
        let got: Vec<_> = d.examples.iter().map(|e| e.label).collect();
        assert_eq!(got, [Label::Class(1), Label::Class(0)]);
        assert_eq!(d.label_names, ["pos", "neg"]);
        // Generic names keep the task's ids.
        let mut d = data(&[Label::Class(1)], &["neg", "pos"]);
        align_to_teacher(&mut d, &classes(&["LABEL_0", "LABEL_1"])).unwrap();
        assert_eq!(d.examples[0].label, Label::Class(1));
    }

    #[test]
    fn labels_the_teacher_does_not_know_are_refused_with_file_and_line() {
        let mut d = data(
            &[Label::Class(0), Label::Class(1)],
            &["neg", "neutral", "pos"],
        );
        let e = align_to_teacher(&mut d, &classes(&["neg", "pos"])).unwrap_err();
        assert!(
            e.to_string()
                .contains("task.jsonl:2: label \"neutral\" is not one of the teacher's labels"),
            "{e}"
        );
        let mut d = data(&[Label::Class(1), Label::Class(3)], &[]);
        let e = align_to_teacher(&mut d, &classes(&["LABEL_0", "LABEL_1"])).unwrap_err();
        assert!(
            e.to_string()
                .contains("task.jsonl:2: label 3 but the teacher has 2 classes"),
            "{e}"
        );
        let mut d = data(&[Label::Value(0.5)], &[]);
        let e = align_to_teacher(&mut d, &classes(&["neg", "pos"])).unwrap_err();
        assert!(
            e.to_string().contains("task.jsonl:1: a regression target"),
            "{e}"
        );
    }
}
