//! What a precompute run covers: the sequences, their split into shards per masked epoch,
//! and the slice of shards a `--shard i/N` part produces.

use serde::{Deserialize, Serialize};

/// One shard of work: `rows` consecutive sequences of the run's list, masked for `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    /// Global shard index (also the file name: `shard-{index:05}`).
    pub index: usize,
    /// Masked epoch.
    pub epoch: u32,
    /// First sequence (index into the run's sequence list).
    pub start: usize,
    /// One past the last sequence.
    pub end: usize,
}

/// Every shard of a run, epoch-major: epoch 0's shards, then epoch 1's, ...
pub fn plan_shards(sequences: usize, epochs: u32, rows_per_shard: usize) -> Vec<ShardPlan> {
    let rows = rows_per_shard.max(1);
    let per_epoch = sequences.div_ceil(rows);
    let mut out = Vec::with_capacity(per_epoch * epochs as usize);
    for epoch in 0..epochs {
        for j in 0..per_epoch {
            out.push(ShardPlan {
                index: out.len(),
                epoch,
                start: j * rows,
                end: ((j + 1) * rows).min(sequences),
            });
        }
    }
    out
}

/// The contiguous range of shards that part `index` of `count` produces; concatenating the
/// parts in order gives back every shard in order, so merged parts equal a single run.
pub fn part_range(total: usize, index: u32, count: u32) -> std::ops::Range<usize> {
    let (i, n) = (index as usize, count.max(1) as usize);
    (i * total / n)..((i + 1) * total / n)
}

/// Parses `i/N` (0-based `i < N`).
pub fn parse_part(text: &str) -> Result<(u32, u32), String> {
    let (i, n) = text
        .split_once('/')
        .ok_or_else(|| format!("--shard {text:?}: expected INDEX/COUNT, e.g. 0/4"))?;
    let i: u32 = i
        .trim()
        .parse()
        .map_err(|_| format!("--shard {text:?}: bad index"))?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("--shard {text:?}: bad count"))?;
    if n == 0 || i >= n {
        return Err(format!("--shard {text:?}: need 0 <= INDEX < COUNT"));
    }
    Ok((i, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_sequence_of_every_epoch() {
        let p = plan_shards(10, 2, 4);
        assert_eq!(p.len(), 6);
        assert_eq!((p[2].start, p[2].end, p[2].epoch), (8, 10, 0));
        assert_eq!((p[3].index, p[3].epoch, p[3].start), (3, 1, 0));
    }

    #[test]
    fn parts_partition_the_shards_in_order() {
        for total in [0, 1, 5, 7, 16] {
            for n in 1..5u32 {
                let all: Vec<usize> = (0..n).flat_map(|i| part_range(total, i, n)).collect();
                assert_eq!(all, (0..total).collect::<Vec<_>>());
            }
        }
        assert_eq!(parse_part("1/4"), Ok((1, 4)));
        assert!(parse_part("4/4").is_err());
        assert!(parse_part("x").is_err());
    }
}
