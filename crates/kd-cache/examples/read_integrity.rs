//! What checking shard integrity costs while reading, measured in one run.
//!
//! `cargo run --release -p kd-cache --example read_integrity [records] [repeats]`
//!
//! Writes one Parquet cache and one mmap cache of the same synthetic records
//! (MiniLM-like: H = 384, 110-128 tokens, top-32 logits at T = 1, 2, hidden
//! states of two layers at f16), then a copy of every Parquet shard without
//! its checksums (the same row groups and encoding, rewritten by the `parquet`
//! crate alone, as caches written before checksums existed). It then times,
//! best of `repeats` with the files in the page cache:
//!
//! - streaming every record: Parquet with its CRC-32 per column chunk checked,
//!   the same shards without checksums (opened without a manifest: nothing is
//!   checked), the shards without checksums through the manifest (the whole
//!   file's SHA-256 is checked when opening), and the mmap backend (CRC-32 per
//!   block);
//! - reading every record's `(epoch, length)` (the projection training reads
//!   when it opens a cache), Parquet with and without checksums.
//!
//! - CRC-32 over every byte of the Parquet shards held in memory (the cost of
//!   the check alone);
//!
//! and prints MB/s of shard bytes and the with/without ratios.

use std::path::{Path, PathBuf};
use std::time::Instant;

use kd_cache::{
    Backend, CacheReader, CacheWriter, LayerValues, Manifest, Precision, Quantized, Record, Shard,
    TargetSpec, TopK, WriterOptions,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

const H: usize = 384;
const VOCAB: usize = 2000;
const MASKED: usize = 16;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A timed read: label, the read (returns a count), and the MB it reads.
type Timed<'a> = (&'a str, Box<dyn FnMut() -> Res<usize> + 'a>, f64);

fn record(rng: &mut ChaCha8Rng, seq_id: u64, spec: &TargetSpec) -> Record {
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let n = rng.random_range(110..=128usize);
    let input_ids: Vec<u32> = (0..n).map(|_| rng.random_range(1000..30000)).collect();
    let mut positions: Vec<u32> = (1..n as u32 - 1).collect();
    for i in 0..MASKED {
        let j = rng.random_range(i..positions.len());
        positions.swap(i, j);
    }
    positions.truncate(MASKED);
    positions.sort_unstable();
    let mut r = Record {
        seq_id,
        epoch: 0,
        mlm_labels: positions.iter().map(|&p| input_ids[p as usize]).collect(),
        mlm_positions: positions,
        input_ids,
        ..Record::default()
    };
    if let Some(t) = &spec.mlm_topk {
        let logits: Vec<f32> = (0..MASKED * VOCAB)
            .map(|_| 3.0 * normal.sample(rng))
            .collect();
        let topk = TopK::from_vocab_logits(
            &logits,
            VOCAB,
            t.k as usize,
            &t.temperatures,
            Precision::F32,
        );
        r.mlm_topk = Some(topk.unwrap());
    }
    if let Some(h) = &spec.hidden {
        for &layer in &h.layers {
            let v: Vec<f32> = (0..n * H)
                .map(|i| normal.sample(rng) * if i % H < 3 { 15.0 } else { 0.6 })
                .collect();
            let values = Quantized::from_f32(&v, H).unwrap();
            r.hidden.push(LayerValues { layer, values });
        }
    }
    r
}

fn write(dir: &Path, backend: Backend, spec: &TargetSpec, records: u64) -> Res<Manifest> {
    let mut m = Manifest::new(spec.clone(), backend);
    m.teacher.config = serde_json::json!({"model_type": "bert", "hidden_size": H});
    let options = WriterOptions {
        rows_per_shard: 1000,
        row_group_rows: 250,
        ..WriterOptions::default()
    };
    let mut w = CacheWriter::create(dir, m, options)?;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for i in 0..records {
        w.write(&record(&mut rng, i, spec))?;
    }
    Ok(w.finish()?)
}

/// Rewrites the Parquet shard `from` to `to` with the same row groups,
/// schema and encoding, without the cache's checksum metadata.
fn strip(from: &Path, to: &Path) -> Res<()> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(from)?)?;
    let row_groups: Vec<usize> = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| rg.num_rows() as usize)
        .collect();
    let mut schema = builder.schema().as_ref().clone();
    schema
        .metadata
        .retain(|k, _| !k.starts_with("kd.checksums"));
    let schema = std::sync::Arc::new(schema);
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_size(usize::MAX)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::None);
    for c in ["seq_id", "epoch"] {
        props = props.set_column_statistics_enabled(ColumnPath::from(c), EnabledStatistics::Chunk);
    }
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(to)?,
        schema.clone(),
        Some(props.build()),
    )?;
    let reader = builder.with_batch_size(1 << 20).build()?;
    let mut sizes = row_groups.into_iter();
    let mut left = sizes.next().unwrap_or(0);
    for batch in reader {
        let batch = batch?.with_schema(schema.clone())?;
        let mut at = 0;
        while at < batch.num_rows() {
            let take = left.min(batch.num_rows() - at);
            w.write(&batch.slice(at, take))?;
            at += take;
            left -= take;
            if left == 0 {
                w.flush()?;
                left = sizes.next().unwrap_or(usize::MAX);
            }
        }
    }
    w.close()?;
    Ok(())
}

/// Best wall time of `repeats` runs of `f`, which returns a count checked to stay the same.
fn best(repeats: usize, mut f: impl FnMut() -> Res<usize>) -> Res<(f64, usize)> {
    let mut best = f64::INFINITY;
    let mut count = None;
    for _ in 0..repeats {
        let t = Instant::now();
        let n = f()?;
        best = best.min(t.elapsed().as_secs_f64());
        assert!(count.is_none_or(|c| c == n), "runs disagree");
        count = Some(n);
    }
    Ok((best, count.unwrap_or(0)))
}

fn stream_cache(dir: &Path) -> Res<usize> {
    let reader = CacheReader::open(dir)?;
    let mut n = 0;
    for r in reader.iter() {
        n += r?.input_ids.len();
    }
    Ok(n)
}

fn stream_shards(paths: &[PathBuf], spec: &TargetSpec) -> Res<usize> {
    let mut n = 0;
    for p in paths {
        let shard = Shard::open(p, Backend::Parquet, spec)?;
        for r in shard.iter(spec) {
            n += r?.input_ids.len();
        }
    }
    Ok(n)
}

fn lengths(paths: &[PathBuf], spec: &TargetSpec) -> Res<usize> {
    let mut n = 0;
    for p in paths {
        let shard = Shard::open(p, Backend::Parquet, spec)?;
        n += shard
            .epochs_and_lengths()?
            .iter()
            .map(|&(_, l)| l as usize)
            .sum::<usize>();
    }
    Ok(n)
}

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let records: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let repeats: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let spec = TargetSpec::parse("mlm-topk:k=32,t=1,2@f16,hidden:0,last@f16", 6)?;
    let root = tempfile::tempdir()?;
    let (pq, mm, plain) = (
        root.path().join("parquet"),
        root.path().join("mmap"),
        root.path().join("parquet-plain"),
    );
    let m = write(&pq, Backend::Parquet, &spec, records)?;
    let mm_m = write(&mm, Backend::Mmap, &spec, records)?;
    // The same cache with its shards rewritten without checksums.
    std::fs::create_dir_all(&plain)?;
    let mut plain_m = m.clone();
    for s in &mut plain_m.shards {
        let to = plain.join(&s.file);
        strip(&pq.join(&s.file), &to)?;
        s.bytes = std::fs::metadata(&to)?.len();
        s.sha256 = kd_core::fs::sha256_file(&to)?;
    }
    plain_m.save(&plain)?;
    let shards =
        |dir: &Path| -> Vec<PathBuf> { m.shards.iter().map(|s| dir.join(&s.file)).collect() };
    let size = |dir: &Path| -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name() != "manifest.json")
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum()
    };
    let mb = size(&pq) as f64 / 1e6;
    println!(
        "{records} records, {} + {} shards, Parquet {mb:.1} MB (without checksums {:.1} MB), mmap {:.1} MB; best of {repeats}",
        m.shards.len(),
        mm_m.shards.len(),
        size(&plain) as f64 / 1e6,
        size(&mm) as f64 / 1e6
    );
    let rows: [Timed; 6] = [
        (
            "parquet, checked (crc32 per column chunk)",
            Box::new(|| stream_cache(&pq)),
            mb,
        ),
        (
            "parquet, no checksums, no check",
            Box::new(|| stream_shards(&shards(&plain), &spec)),
            mb,
        ),
        (
            "parquet, no checksums, sha256 at open",
            Box::new(|| stream_cache(&plain)),
            mb,
        ),
        (
            "mmap (crc32 per block)",
            Box::new(|| stream_cache(&mm)),
            size(&mm) as f64 / 1e6,
        ),
        (
            "lengths: parquet, checked",
            Box::new(|| lengths(&shards(&pq), &spec)),
            mb,
        ),
        (
            "lengths: parquet, no check",
            Box::new(|| lengths(&shards(&plain), &spec)),
            mb,
        ),
    ];
    // The check alone: CRC-32 over every byte of the Parquet shards, in memory.
    let bytes: Vec<Vec<u8>> = shards(&pq)
        .iter()
        .map(std::fs::read)
        .collect::<Result<_, _>>()?;
    let (crc_s, _) = best(repeats, || {
        Ok(bytes.iter().map(|b| crc32fast::hash(b) as usize % 2).sum())
    })?;
    let mut times = Vec::new();
    println!(
        "{:<44} {:>9} {:>9} {:>11}",
        "read", "seconds", "MB/s", "records/s"
    );
    for (label, mut f, mb) in rows {
        let (s, _) = best(repeats, &mut f)?;
        println!(
            "{label:<44} {s:>9.4} {:>9.0} {:>11.0}",
            mb / s,
            records as f64 / s
        );
        times.push(s);
    }
    println!(
        "{:<44} {crc_s:>9.4} {:>9.0}",
        "crc32 of every Parquet byte, in memory",
        mb / crc_s
    );
    println!(
        "time with / without the check: stream {:.3}x, lengths {:.3}x (sha256 at open instead: \
         {:.3}x); the CRC alone is {:.1}% of the unchecked stream",
        times[0] / times[1],
        times[4] / times[5],
        times[2] / times[1],
        100.0 * crc_s / times[1]
    );
    Ok(())
}
