//! The table of a [`TaskEvalReport`]: the teacher, then each model, one row each, and a
//! DistilBERT-style summary line per model against the teacher.

use super::{TaskEvalReport, TaskModelReport};
use std::fmt;

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.4}"))
}

impl TaskEvalReport {
    /// The quality columns: names and values of one model.
    fn quality(&self, r: &TaskModelReport) -> Vec<(&'static str, String)> {
        if self.regression {
            vec![
                ("pearson", num(r.pearson)),
                ("spearman", num(r.spearman)),
                ("mse", num(r.mse)),
            ]
        } else {
            vec![("accuracy", num(r.accuracy)), ("macro-F1", num(r.macro_f1))]
        }
    }
}

impl fmt::Display for TaskEvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels = if self.regression {
            "regression".to_string()
        } else if self.label_names.is_empty() {
            "class ids".to_string()
        } else {
            format!("labels {}", self.label_names.join(", "))
        };
        writeln!(
            f,
            "task {} ({} split): {} examples, {labels}\n",
            self.task.join(", "),
            format!("{:?}", self.split).to_lowercase(),
            thousands(self.examples)
        )?;
        let rows: Vec<(String, &TaskModelReport)> = (self.teacher.iter())
            .map(|t| (format!("(teacher) {}", t.dir), t))
            .chain(self.models.iter().map(|m| (m.dir.clone(), m)))
            .collect();
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(5);
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let q: String = (self.quality(first.1).iter())
            .map(|(name, _)| format!("{name:>10}"))
            .collect();
        let head = format!(
            "{:<width$}{:>13}{q}{:>11}{:>11}{:>13}{:>12}",
            "model", "parameters", "agreement", "retention", "sentences/s", "latency ms"
        );
        writeln!(f, "{}", head.trim_end())?;
        for (name, r) in &rows {
            let q: String = (self.quality(r).iter())
                .map(|(_, v)| format!("{v:>10}"))
                .collect();
            let line = format!(
                "{name:<width$}{:>13}{q}{:>11}{:>11}{:>13}{:>12.2}",
                thousands(r.parameters),
                num(r.agreement),
                num(r.retention),
                thousands(r.sentences_per_s.round() as usize),
                r.latency_ms
            );
            writeln!(f, "{}", line.trim_end())?;
        }
        if let Some(t) = &self.teacher {
            writeln!(f)?;
            for m in &self.models {
                let size = 1.0 - m.parameters as f64 / t.parameters.max(1) as f64;
                let word = if size >= 0.0 { "smaller" } else { "larger" };
                let mut parts = vec![format!("{:.1}% {word}", 100.0 * size.abs())];
                if let Some(s) = m.speedup {
                    let word = if s >= 1.0 { "faster" } else { "slower" };
                    parts.push(format!("{:.2}x throughput ({word})", s));
                }
                if t.latency_ms > 0.0 {
                    parts.push(format!(
                        "{:.2}x the teacher's latency",
                        m.latency_ms / t.latency_ms
                    ));
                }
                if let Some(r) = m.retention {
                    parts.push(format!("{:.1}% of the teacher", 100.0 * r));
                }
                writeln!(f, "{}: {}", m.dir, parts.join(", "))?;
            }
        }
        Ok(())
    }
}
