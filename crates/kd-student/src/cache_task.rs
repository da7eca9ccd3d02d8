//! Training any [`Student`] from a teacher cache: the epoch plan and the decode-ahead stream,
//! records collated into a batch, the student's forward pass, and the weighted terms of the
//! loss list. With an online teacher, the same records are recomputed by the teacher in
//! process (the reference for cache-equals-online).

use crate::error::to_train;
use crate::loss_spec::LossSpec;
use crate::loss_terms::{term, wants, ResolvedLoss, TermInputs, TopKLayout};
use crate::stream::{CachePlan, Prefetcher, StreamConfig, Window};
use crate::student::{Student, Wants};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use kd_bert::{Bert, ForwardCtx};
use kd_cache::{Record, TargetSpec};
use kd_distill::LossWeights;
use kd_train::{MicroBatch, TrainTask};
use rand_chacha::ChaCha8Rng;

/// The records of a batch as one padded kd-data batch (labels carried when present).
pub fn collate_records(records: &[Record], pad: u32) -> Result<kd_data::Batch> {
    let items: Vec<kd_data::BatchItem> = records
        .iter()
        .map(|r| kd_data::BatchItem {
            id: r.seq_id,
            input_ids: &r.input_ids,
            token_type_ids: r.token_type_ids.as_deref(),
            mlm_positions: &r.mlm_positions,
            mlm_labels: &r.mlm_labels,
            label: r.label.map(|l| match l {
                kd_cache::Label::Class(c) => kd_data::Label::Class(c),
                kd_cache::Label::Value(v) => kd_data::Label::Value(v),
            }),
        })
        .collect();
    Ok(kd_data::collate(&items, pad)?)
}

/// A student, its loss list and a cache, as a [`TrainTask`].
pub struct CacheTask<'a> {
    student: &'a dyn Student,
    losses: Vec<ResolvedLoss>,
    names: Vec<String>,
    weights: LossWeights,
    wants: Wants,
    plan: CachePlan,
    stream: StreamConfig,
    seed: u64,
    windows: Vec<Window>,
    /// The decode-ahead thread and the plan index of the batch it yields next.
    prefetch: Option<(usize, Prefetcher)>,
    topk: TopKLayout,
    pad: u32,
    device: Device,
    online: Option<(Bert, TargetSpec)>,
}

impl<'a> CacheTask<'a> {
    /// A task over `plan` for `student` with resolved `losses`; `online` makes a teacher
    /// recompute every batch's records.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        student: &'a dyn Student,
        losses: Vec<ResolvedLoss>,
        plan: CachePlan,
        stream: StreamConfig,
        seed: u64,
        topk: TopKLayout,
        pad: u32,
        online: Option<(Bert, TargetSpec)>,
    ) -> Self {
        let mut names: Vec<String> = Vec::new();
        let mut weights = LossWeights::new();
        for (i, l) in losses.iter().enumerate() {
            let base = l.spec.term_name();
            let name = if names.iter().any(|n| n == base) {
                format!("{base}.{}", i + 1)
            } else {
                base.to_string()
            };
            weights.set(name.clone(), l.spec.weight());
            names.push(name);
        }
        let wants = wants(&losses);
        let device = student.device().clone();
        Self {
            student,
            losses,
            names,
            weights,
            wants,
            plan,
            stream,
            seed,
            windows: Vec::new(),
            prefetch: None,
            topk,
            pad,
            device,
            online,
        }
    }

    /// The records of the batch at `index` of this epoch's plan (`batch` holds its record
    /// indices), from the decode-ahead thread, restarted at `index` when the trainer jumps
    /// (on resume).
    fn fetch(&mut self, index: usize, batch: &[usize]) -> Result<Vec<Record>> {
        let (idx, recs) = match &mut self.prefetch {
            Some((next, p)) if *next == index => {
                *next += 1;
                p.next()?
            }
            _ => {
                let p = Prefetcher::start(
                    self.plan.reader().clone(),
                    self.windows.clone(),
                    index,
                    self.stream.prefetch_batches,
                );
                let got = p.next()?;
                self.prefetch = Some((index + 1, p));
                got
            }
        };
        if idx != batch {
            return Err(Error::Config(format!(
                "the decode-ahead thread lost its place at batch {index}"
            )));
        }
        Ok(recs)
    }

    /// The loss of one batch of records.
    fn step(&self, records: &[Record], rng: &mut ChaCha8Rng) -> Result<MicroBatch> {
        let batch = collate_records(records, self.pad)?;
        let out = self
            .student
            .forward(&batch, &self.wants, &mut ForwardCtx::train(rng))?;
        let inputs = TermInputs {
            records,
            batch: &batch,
            topk: &self.topk,
            device: &self.device,
        };
        let mut terms: Vec<(&str, Tensor)> = Vec::with_capacity(self.losses.len());
        for (loss, name) in self.losses.iter().zip(&self.names) {
            let needs_masks = match &loss.spec {
                LossSpec::SoftCe(s) => s.positions.is_masked(),
                LossSpec::MlmCe(_) => true,
                _ => false,
            };
            if needs_masks && batch.mlm_positions.is_empty() {
                continue;
            }
            terms.push((name, term(loss, &out, &inputs)?));
        }
        let weighted = self.weights.combine(&terms)?;
        Ok(MicroBatch {
            loss: weighted.total,
            terms: weighted.terms,
            tokens: records.iter().map(Record::len).sum(),
        })
    }
}

impl TrainTask for CacheTask<'_> {
    fn epoch_batches(&mut self, epoch: u64) -> kd_train::Result<Vec<Vec<usize>>> {
        self.windows = self.plan.epoch_windows(self.seed, epoch, &self.stream);
        self.prefetch = None;
        if self.windows.is_empty() {
            return Err(to_train(Error::Config(format!(
                "the cache holds no record for training epoch {epoch} (masked view {} of {}; \
                 its shards hold views {:?}): nothing to train on",
                self.plan.view_of_epoch(epoch),
                self.plan.views(),
                self.plan.views_held()
            ))));
        }
        Ok(self
            .windows
            .iter()
            .flat_map(|w| w.batches.clone())
            .collect())
    }

    fn micro_batch(
        &mut self,
        index: usize,
        batch: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> kd_train::Result<MicroBatch> {
        let mut records = self.fetch(index, batch).map_err(to_train)?;
        if let Some((teacher, spec)) = &self.online {
            records = crate::online::teacher_records(teacher, spec, &records, self.pad)
                .map_err(to_train)?;
        }
        self.step(&records, rng).map_err(to_train)
    }
}
