//! Per-batch scoring of a student against cached teacher targets, summed over the cache.

use crate::{Error, Result};
use kd_cache::Record;

/// Sums over masked positions and tokens.
#[derive(Default)]
pub(super) struct Totals {
    pub(super) records: usize,
    pub(super) tokens: usize,
    pub(super) positions: usize,
    pub(super) student_hits: usize,
    pub(super) topk_positions: usize,
    pub(super) teacher_hits: usize,
    pub(super) agree: usize,
    pub(super) kl: f64,
    pub(super) kl_positions: usize,
    pub(super) cos: f64,
    pub(super) cos_tokens: usize,
    pub(super) student_s: f64,
    pub(super) teacher_s: f64,
}

impl Totals {
    /// Scores one batch: student `logits` (one `vocab` row per masked position, in record
    /// order) and, for the cosine, its last hidden states `[B, L, H]` with the slot of the
    /// cached layer.
    pub(super) fn add_batch(
        &mut self,
        chunk: &[Record],
        logits: &[f32],
        vocab: usize,
        hidden: Option<(Vec<Vec<Vec<f32>>>, usize)>,
        temps: &[f32],
    ) -> Result<()> {
        let mut rows = logits.chunks_exact(vocab);
        for (r, rec) in chunk.iter().enumerate() {
            self.records += 1;
            self.tokens += rec.input_ids.len();
            for (m, &label) in rec.mlm_labels.iter().enumerate() {
                let z = rows.next().expect("one logit row per masked position");
                self.score_position(z, label, rec, m, temps)?;
            }
            if let Some((h, slot)) = &hidden {
                let t = &rec.hidden[*slot].values;
                for (l, t) in t.decode().chunks_exact(t.cols()).enumerate() {
                    self.cos += cosine(&h[r][l], t);
                    self.cos_tokens += 1;
                }
            }
        }
        Ok(())
    }

    /// Accuracy, agreement and KL at masked position `m` of `rec`, student logits `z`.
    pub(super) fn score_position(
        &mut self,
        z: &[f32],
        label: u32,
        rec: &Record,
        m: usize,
        temps: &[f32],
    ) -> Result<()> {
        let (mut best, mut max) = (0usize, f32::NEG_INFINITY);
        for (v, &x) in z.iter().enumerate() {
            if x > max {
                (best, max) = (v, x);
            }
        }
        self.positions += 1;
        self.student_hits += usize::from(best as u32 == label);
        let Some(topk) = &rec.mlm_topk else {
            return Ok(());
        };
        let k = topk.logits.cols();
        let ids = &topk.ids[m * k..(m + 1) * k];
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= z.len()) {
            return Err(Error::Config(format!(
                "cached token id {bad} is outside the student vocabulary ({})",
                z.len()
            )));
        }
        self.topk_positions += 1;
        self.teacher_hits += usize::from(ids[0] == label);
        self.agree += usize::from(ids[0] as usize == best);
        if !temps.contains(&1.0) {
            return Ok(());
        }
        let (p, p_rest) = topk.probs(m, temps, 1.0)?;
        let max = f64::from(max);
        let total: f64 = z.iter().map(|&x| (f64::from(x) - max).exp()).sum();
        let log_total = total.ln();
        let mut support = 0f64;
        let log_q: Vec<f64> = ids
            .iter()
            .map(|&id| {
                let shifted = f64::from(z[id as usize]) - max;
                support += shifted.exp();
                shifted - log_total
            })
            .collect();
        let log_q_rest = (total - support).max(f64::MIN_POSITIVE).ln() - log_total;
        self.kl += kd_distill::kl::rest_bucket_kl(&p, p_rest, &log_q, log_q_rest);
        self.kl_positions += 1;
        Ok(())
    }
}

pub(super) fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    dot / (na.sqrt() * nb.sqrt()).max(1e-12)
}
