//! Several students against one held-out cache (a pipeline's `eval` step): each student's
//! [`EvalReport`], a side-by-side table, and the reports as one JSON file.

use super::{evaluate_student, EvalOptions, EvalReport};
use crate::{Error, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Settings of an evaluation of several students on one cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSuite {
    /// The held-out cache.
    pub cache: PathBuf,
    /// Student model directories, in the order of the table.
    pub students: Vec<PathBuf>,
    /// Teacher directory, to time the teacher on the same batches.
    #[serde(default)]
    pub teacher: Option<PathBuf>,
    /// Records per forward pass.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Evaluate at most this many records (cache order).
    #[serde(default)]
    pub max_records: Option<usize>,
    /// Time each batch this many times and keep the fastest.
    #[serde(default = "default_repeats")]
    pub timing_repeats: usize,
    /// Where to write the reports as JSON (atomically); none when absent.
    #[serde(default)]
    pub out: Option<PathBuf>,
    /// Also compare these mapped layers (TinyBERT students), through the projections a
    /// training run saved beside each student (`<run>/projections.safetensors` for
    /// `<run>/model`).
    #[serde(default)]
    pub layers: Option<crate::layer_map::LayerMatch>,
}

fn default_batch_size() -> usize {
    32
}

fn default_repeats() -> usize {
    1
}

/// The reports of an [`EvalSuite`], one per student in order.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    /// The held-out cache.
    pub cache: String,
    /// One report per student.
    pub students: Vec<EvalReport>,
}

/// Evaluates every student of `suite` and writes the JSON report when `suite.out` is set.
pub fn run_suite(suite: &EvalSuite, device: &Device) -> Result<SuiteReport> {
    if suite.students.is_empty() {
        return Err(Error::Config("eval: `students` is empty".into()));
    }
    let opts = EvalOptions {
        teacher: suite.teacher.clone(),
        batch_size: suite.batch_size,
        max_records: suite.max_records,
        timing_repeats: suite.timing_repeats,
    };
    let mut students = Vec::with_capacity(suite.students.len());
    for dir in &suite.students {
        let mut report = evaluate_student(dir, &suite.cache, &opts, device)?;
        if let Some(layers) = &suite.layers {
            let projections = dir
                .parent()
                .map(|run| run.join(crate::projections::FILE))
                .filter(|p| p.is_file());
            report.layer_metrics = Some(super::evaluate_layers(
                dir,
                &suite.cache,
                layers,
                projections.as_deref(),
                suite.batch_size,
                suite.max_records,
                device,
            )?);
        }
        students.push(report);
    }
    let report = SuiteReport {
        cache: suite.cache.display().to_string(),
        students,
    };
    if let Some(out) = &suite.out {
        write_json_atomic(out, &report)?;
    }
    Ok(report)
}

/// Writes `value` as pretty JSON, atomically (kd-train's temp file + rename).
fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
    }
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Config(format!("cannot encode {}: {e}", path.display())))?;
    Ok(kd_core::fs::write_atomic(path, (text + "\n").as_bytes())?)
}

impl fmt::Display for SuiteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |v: Option<f64>| v.map_or("-".into(), |x| format!("{:.2}%", 100.0 * x));
        let num = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.4}"));
        let head = ["student", "top-1", "agreement", "KL", "cosine", "tokens/s"];
        let mut rows = vec![head.map(String::from)];
        if let Some(first) = self.students.first() {
            if first.teacher_top1.is_some() {
                let tps = first
                    .teacher_tokens_per_s
                    .map_or("-".into(), |t| format!("{t:.0}"));
                let dash = || "-".to_string();
                rows.push([
                    "(teacher)".into(),
                    pct(first.teacher_top1),
                    dash(),
                    dash(),
                    dash(),
                    tps,
                ]);
            }
        }
        for r in &self.students {
            rows.push([
                r.student.clone(),
                pct(Some(r.student_top1)),
                num(r.agreement),
                num(r.kl),
                num(r.hidden_cosine),
                format!("{:.0}", r.student_tokens_per_s),
            ]);
        }
        let width = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
        writeln!(f, "held-out cache {}", self.cache)?;
        for r in &rows {
            let line = format!(
                "{:<width$}{:>10}{:>11}{:>9}{:>9}{:>10}",
                r[0], r[1], r[2], r[3], r[4], r[5]
            );
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, top1: f64, agreement: Option<f64>) -> EvalReport {
        EvalReport {
            student: name.into(),
            cache: "c".into(),
            teacher: None,
            records: 1,
            tokens: 10,
            masked_positions: 2,
            layers: (3, 6),
            hidden_size: (384, 384),
            student_top1: top1,
            teacher_top1: Some(0.25),
            agreement,
            kl: agreement.map(|_| 0.5),
            topk: Some(32),
            hidden_cosine: None,
            student_params: 1,
            teacher_params: 2,
            student_tokens_per_s: 1234.4,
            teacher_tokens_per_s: None,
            smaller: 0.5,
            speedup: None,
            retained: None,
            layer_metrics: None,
            notes: vec![],
        }
    }

    #[test]
    fn table_lists_the_teacher_then_each_student() {
        let r = SuiteReport {
            cache: "heldout".into(),
            students: vec![report("a/model", 0.1512, Some(0.3)), report("b", 0.1, None)],
        };
        let text = r.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "held-out cache heldout");
        assert!(
            lines[2].starts_with("(teacher)") && lines[2].contains("25.00%"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("a/model") && lines[3].contains("15.12%"),
            "{text}"
        );
        assert!(
            lines[3].contains("0.3000") && lines[3].contains("0.5000"),
            "{text}"
        );
        let cells: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(cells, ["b", "10.00%", "-", "-", "-", "1234"], "{text}");
    }

    #[test]
    fn an_empty_student_list_is_refused() {
        let suite: EvalSuite = toml::from_str("cache = \"c\"\nstudents = []\n").unwrap();
        let e = run_suite(&suite, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("students"), "{e}");
        let bad = toml::from_str::<EvalSuite>("cache = \"c\"\nstudent = [\"x\"]\n");
        assert!(bad.unwrap_err().to_string().contains("student"));
    }
}
