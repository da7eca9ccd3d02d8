//! The online reference: the teacher in process recomputes the records of each batch from the
//! same masked inputs the cache stored, so a run with `online` differs from a cache run only
//! by where the targets come from.

use crate::Result;
use kd_bert::Bert;
use kd_cache::{Record, TargetSpec};

/// Recomputes the targets of `records` with `teacher` on the same masked inputs: one forward
/// pass over the padded batch.
pub fn teacher_records(
    teacher: &Bert,
    spec: &TargetSpec,
    records: &[Record],
    pad: u32,
) -> Result<Vec<Record>> {
    let batch = crate::cache_task::collate_records(records, pad)?;
    let epoch = records.first().map(|r| r.epoch).unwrap_or(0);
    let mut out = kd_teacher::targets::extract_batch(teacher, &batch, epoch, spec, 0)?;
    // Sampled targets are drawn per sequence from the manifest's seed in precompute; keep the
    // cached draws so that both modes see the same estimator noise.
    for (o, r) in out.iter_mut().zip(records) {
        if r.mlm_sampled.is_some() {
            o.mlm_sampled = r.mlm_sampled.clone();
        }
    }
    Ok(out)
}
