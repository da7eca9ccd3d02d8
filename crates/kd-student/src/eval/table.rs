//! The DistilBERT-style table of an [`EvalReport`].

use super::EvalReport;
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

fn opt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x != 0.0 && x.abs() < 1e-3 => format!("{x:.2e}"),
        Some(x) => format!("{x:.4}"),
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, tps) = (thousands, |v: f64| thousands(v.round() as usize));
        writeln!(
            f,
            "student {} on cache {}: {} records, {} tokens, {} masked positions\n",
            self.student,
            self.cache,
            self.records,
            n(self.tokens),
            n(self.masked_positions)
        )?;
        let word = if self.smaller >= 0.0 {
            "smaller"
        } else {
            "larger"
        };
        let smaller = format!("{:.1}% {word}", 100.0 * self.smaller.abs());
        let speed = self.speedup.map(|s| {
            let word = if s >= 1.0 { "faster" } else { "slower" };
            format!("{:.0}% {word}", 100.0 * (s - 1.0).abs())
        });
        let kept = (self.retained).map(|r| format!("{:.1}% of the teacher", 100.0 * r));
        let kl_note = (self.topk).map(|k| format!("nats/position, top-{k} + rest"));
        let (r, dash) = (self, || "-".to_string());
        let rows = [
            ("", "teacher".into(), "student".into(), None),
            ("layers", n(r.layers.1), n(r.layers.0), None),
            ("hidden size", n(r.hidden_size.1), n(r.hidden_size.0), None),
            (
                "parameters",
                n(r.teacher_params),
                n(r.student_params),
                Some(smaller.clone()),
            ),
            (
                "tokens/s",
                r.teacher_tokens_per_s.map_or_else(dash, tps),
                tps(r.student_tokens_per_s),
                r.speedup.map(|x| format!("{x:.2}x")),
            ),
            (
                "masked-token top-1",
                opt(r.teacher_top1),
                opt(Some(r.student_top1)),
                kept.clone(),
            ),
            ("top-1 agreement", dash(), opt(r.agreement), None),
            ("KL(teacher || student)", dash(), opt(r.kl), kl_note),
            ("last hidden cosine", dash(), opt(r.hidden_cosine), None),
        ];
        for (name, t, s, c) in rows {
            let line = format!("{name:<24}{t:>14}{s:>14}   {}", c.unwrap_or_default());
            writeln!(f, "{}", line.trim_end())?;
        }
        let summary: Vec<String> = [Some(smaller), speed, kept].into_iter().flatten().collect();
        writeln!(f, "\n{}", summary.join(", "))?;
        if let Some(layers) = &self.layer_metrics {
            let e = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4e}"));
            writeln!(
                f,
                "\nlayer (student -> teacher)  hidden MSE    cosine  attention MSE  attention KL"
            )?;
            for m in layers {
                let cos = m
                    .hidden_cosine
                    .map_or("-".to_string(), |c| format!("{c:.4}"));
                writeln!(
                    f,
                    "  {:>2} -> {:<2} {:>25} {:>9} {:>14} {:>13}",
                    m.student_layer,
                    m.teacher_layer,
                    e(m.hidden_mse),
                    cos,
                    e(m.attention_mse),
                    e(m.attention_kl)
                )?;
            }
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}
