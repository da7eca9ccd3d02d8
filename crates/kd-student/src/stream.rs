//! Streaming a cache for training: the plan of an epoch (which masked view, window order,
//! shuffle windows, length-grouped batches), a pure function of (seed, epoch) so resumed runs
//! see the same order, and a thread that decodes ahead with bounded memory.

use crate::{Error, Result};
use kd_cache::reader::CacheReader;
use kd_cache::Record;
use kd_core::rng::{below_by_canon, shuffle_with, SeedHash};
use rand_chacha::ChaCha8Rng;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

/// How batches are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// Sequences per batch.
    pub batch_size: usize,
    /// Records per shuffle window (also the decode-ahead memory bound).
    pub window_records: usize,
    /// Batches decoded ahead of the trainer.
    pub prefetch_batches: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            window_records: 1024,
            prefetch_batches: 8,
        }
    }
}

/// A run of consecutive records of one shard, batched by length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Shard index.
    pub shard: usize,
    /// Global record range (within the shard).
    pub records: std::ops::Range<usize>,
    /// Batches of global record indices.
    pub batches: Vec<Vec<usize>>,
}

/// A cache opened for training: the reader, each shard's masked epoch, each record's length.
pub struct CachePlan {
    reader: Arc<CacheReader>,
    shard_epochs: Vec<u32>,
    lengths: Vec<u32>,
    cache_epochs: u32,
}

/// The stream of `what` (`shards`, `batches`) for (seed, epoch).
fn rng_for(seed: u64, epoch: u64, what: &[u8]) -> ChaCha8Rng {
    SeedHash::tagged(b"kd-student/stream/v1\0")
        .bytes(what)
        .u64(seed)
        .u64(epoch)
        .rng()
}

/// The order's shuffle: Fisher–Yates with Canon's draws, which caches' training orders were
/// written with (see [`below_by_canon`]).
fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    shuffle_with(v, rng, below_by_canon);
}

impl CachePlan {
    /// Opens the cache and reads each record's length from the token column alone (no record
    /// is decoded, so opening stays cheap for caches of hidden states and attention maps).
    pub fn open(reader: Arc<CacheReader>) -> Result<Self> {
        let mut shard_epochs = Vec::with_capacity(reader.num_shards());
        let mut lengths = Vec::with_capacity(reader.len());
        for s in 0..reader.num_shards() {
            let shard = reader.shard(s).ok_or_else(|| {
                Error::Config(format!("the cache lists shard {s} but did not open it"))
            })?;
            let rows = shard.epochs_and_lengths()?;
            shard_epochs.push(rows.first().map_or(0, |r| r.0));
            lengths.extend(rows.iter().map(|r| r.1));
        }
        let cache_epochs = reader.manifest().epochs.max(1);
        Ok(Self {
            reader,
            shard_epochs,
            lengths,
            cache_epochs,
        })
    }

    /// The reader.
    pub fn reader(&self) -> &Arc<CacheReader> {
        &self.reader
    }

    /// The masked view training epoch `epoch` uses (views are used in turn).
    pub fn view_of_epoch(&self, epoch: u64) -> u32 {
        (epoch % u64::from(self.cache_epochs)) as u32
    }

    /// Masked views the manifest declares.
    pub fn views(&self) -> u32 {
        self.cache_epochs
    }

    /// Masked views the shards actually hold, ascending.
    pub fn views_held(&self) -> Vec<u32> {
        let mut v = self.shard_epochs.clone();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Records of the masked view training epoch `epoch` uses (views are used in turn).
    pub fn records_in_epoch(&self, epoch: u64) -> usize {
        let view = (epoch % u64::from(self.cache_epochs)) as u32;
        (0..self.shard_epochs.len())
            .filter(|&s| self.shard_epochs[s] == view)
            .map(|s| self.reader.shard_range(s).len())
            .sum()
    }

    /// The windows of training epoch `epoch`: the shards of masked view `epoch % views`, each
    /// cut into windows of `window_records`, every window of the view in one seeded order (so
    /// consecutive windows come from different shards and length bands); in each window records
    /// are shuffled, sorted by length (stable), cut into batches, and the batches shuffled.
    pub fn epoch_windows(&self, seed: u64, epoch: u64, cfg: &StreamConfig) -> Vec<Window> {
        let view = (epoch % u64::from(self.cache_epochs)) as u32;
        let mut spans = Vec::new();
        for s in (0..self.shard_epochs.len()).filter(|&s| self.shard_epochs[s] == view) {
            let range = self.reader.shard_range(s);
            let mut start = range.start;
            while start < range.end {
                let end = (start + cfg.window_records.max(1)).min(range.end);
                spans.push((s, start..end));
                start = end;
            }
        }
        shuffle(&mut spans, &mut rng_for(seed, epoch, b"windows"));
        let mut rng = rng_for(seed, epoch, b"batches");
        spans
            .into_iter()
            .map(|(s, records)| {
                // Shuffled before the (stable) sort, so records of equal length meet other
                // batch mates every epoch.
                let mut idx: Vec<usize> = records.clone().collect();
                shuffle(&mut idx, &mut rng);
                idx.sort_by_key(|&i| self.lengths[i]);
                let mut batches: Vec<Vec<usize>> = idx
                    .chunks(cfg.batch_size.max(1))
                    .map(<[usize]>::to_vec)
                    .collect();
                shuffle(&mut batches, &mut rng);
                Window {
                    shard: s,
                    records,
                    batches,
                }
            })
            .collect()
    }
}

/// A decoded batch: its record indices and records.
pub type DecodedBatch = (Vec<usize>, Vec<Record>);

/// Decodes the batches of a plan ahead of the trainer on its own thread; at most
/// `prefetch_batches` batches plus one window of records are held in memory.
pub struct Prefetcher {
    rx: Receiver<Result<DecodedBatch>>,
    _handle: std::thread::JoinHandle<()>,
}

impl Prefetcher {
    /// Starts decoding `windows` from batch number `skip` on (earlier batches are skipped;
    /// whole windows before it are not decoded).
    pub fn start(
        reader: Arc<CacheReader>,
        windows: Vec<Window>,
        skip: usize,
        depth: usize,
    ) -> Self {
        let (tx, rx) = sync_channel(depth.max(1));
        let handle = std::thread::spawn(move || {
            let mut seen = 0usize;
            for w in windows {
                let n = w.batches.len();
                if seen + n <= skip {
                    seen += n;
                    continue;
                }
                // Random access from the window's first record: only the row groups (or
                // blocks) that hold the window are decoded, not the shard up to it.
                let records: Result<Vec<Record>> = w
                    .records
                    .clone()
                    .map(|i| reader.get(i).map_err(Error::from))
                    .collect();
                let records = match records {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                for b in w.batches {
                    seen += 1;
                    if seen <= skip {
                        continue;
                    }
                    let recs = b
                        .iter()
                        .map(|&i| records[i - w.records.start].clone())
                        .collect();
                    if tx.send(Ok((b, recs))).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            rx,
            _handle: handle,
        }
    }

    /// The next decoded batch, or an error when the plan is exhausted.
    pub fn next(&self) -> Result<DecodedBatch> {
        self.rx
            .recv()
            .map_err(|_| Error::Config("the cache reader stopped early".into()))?
    }
}
