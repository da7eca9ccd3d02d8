//! The cache stream: the epoch plan (a pure function of seed and epoch, rotating through the
//! cache's masked views), the decode-ahead thread started at any batch, training resumed
//! across an epoch boundary and inside a shard of several windows, and a shard damaged after
//! the cache was opened.

mod common;

use candle_core::Device;
use common::*;
use kd_cache::{Backend, CacheReader, Record};
use kd_student::distil::{train_student, DistilConfig, StudentSpec};
use kd_student::stream::{CachePlan, Prefetcher, StreamConfig, Window};
use kd_train::LoopConfig;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

fn plan(dir: &Path) -> CachePlan {
    CachePlan::open(Arc::new(CacheReader::open(dir).unwrap())).unwrap()
}

fn cfg(batch_size: usize, window_records: usize) -> StreamConfig {
    StreamConfig {
        batch_size,
        window_records,
        prefetch_batches: 2,
    }
}

fn batches(windows: &[Window]) -> Vec<Vec<usize>> {
    windows.iter().flat_map(|w| w.batches.clone()).collect()
}

/// Every batch the prefetcher yields from `skip` on, then checks it has nothing more.
fn drain(
    reader: &Arc<CacheReader>,
    windows: &[Window],
    skip: usize,
) -> Vec<(Vec<usize>, Vec<Record>)> {
    let p = Prefetcher::start(reader.clone(), windows.to_vec(), skip, 2);
    let n = batches(windows).len();
    let out: Vec<_> = (skip..n).map(|_| p.next().unwrap()).collect();
    assert!(
        p.next().is_err(),
        "the prefetcher yields more than the plan"
    );
    out
}

/// Three views of 40 records in shards of 16 (the last shard of a view holds 8), cut into
/// windows of 6 records and batches of 4: started at any batch k, the prefetcher yields
/// exactly batches k.. of a full pass, each with the records the cache holds at its indices.
#[test]
fn prefetcher_started_at_any_batch_yields_the_tail_of_a_full_pass() {
    for backend in [Backend::Mmap, Backend::Parquet] {
        let tmp = tempfile::tempdir().unwrap();
        let model = tiny_model(&tmp.path().join("model"));
        let synth = Synth {
            views: 3,
            records: 40,
            rows_per_shard: 16,
            backend,
            ..Synth::default()
        };
        let records = write_cache(&tmp.path().join("cache"), &model, &synth);
        let plan = plan(&tmp.path().join("cache"));
        let reader = plan.reader().clone();
        for epoch in [0, 4] {
            let windows = plan.epoch_windows(9, epoch, &cfg(4, 6));
            assert!(windows.len() > 3, "{} windows", windows.len());
            let full = drain(&reader, &windows, 0);
            assert_eq!(
                full.iter().map(|b| b.0.clone()).collect::<Vec<_>>(),
                batches(&windows)
            );
            for (idx, recs) in &full {
                let want: Vec<&Record> = idx.iter().map(|&i| &records[i]).collect();
                assert_eq!(
                    recs.iter().collect::<Vec<_>>(),
                    want,
                    "{backend:?} batch {idx:?}"
                );
            }
            for k in 0..=full.len() {
                assert_eq!(
                    drain(&reader, &windows, k),
                    full[k..],
                    "{backend:?} skip {k}"
                );
            }
        }
    }
}

/// The plan depends on (seed, epoch) only: reopening the cache gives the same windows; another
/// seed or epoch another order of the same records. Each epoch uses every record of its view
/// once, windows never cross a shard but shards interleave, and a window's batches are its
/// records sorted by length.
#[test]
fn plan_is_a_function_of_seed_and_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let synth = Synth {
        views: 2,
        records: 30,
        rows_per_shard: 10,
        ..Synth::default()
    };
    let records = write_cache(&tmp.path().join("cache"), &model, &synth);
    let (a, b) = (
        plan(&tmp.path().join("cache")),
        plan(&tmp.path().join("cache")),
    );
    let c = cfg(3, 7);
    let reader = a.reader().clone();
    for epoch in 0..4u64 {
        let w = a.epoch_windows(5, epoch, &c);
        assert_eq!(w, b.epoch_windows(5, epoch, &c), "epoch {epoch}");
        assert_ne!(batches(&w), batches(&a.epoch_windows(6, epoch, &c)));
        assert_ne!(batches(&w), batches(&a.epoch_windows(5, epoch + 2, &c)));
        let mut seen: Vec<usize> = batches(&w).concat();
        seen.sort_unstable();
        let view = (epoch % 2) as usize;
        assert_eq!(seen, (view * 30..view * 30 + 30).collect::<Vec<_>>());
        for win in &w {
            let shard = reader.shard_range(win.shard);
            assert!(shard.start <= win.records.start && win.records.end <= shard.end);
            // Batches are cuts of the window sorted by length: put in order of their shortest
            // and longest records, their lengths never decrease.
            let len = |i: &usize| records[*i].len();
            let mut got = win.batches.clone();
            got.sort_by_key(|b| (len(&b[0]), len(&b[b.len() - 1])));
            let lengths: Vec<usize> = got.concat().iter().map(len).collect();
            assert!(lengths.windows(2).all(|p| p[0] <= p[1]), "{lengths:?}");
            let mut held = got.concat();
            held.sort_unstable();
            assert_eq!(held, win.records.clone().collect::<Vec<_>>());
            assert!(win.batches.iter().all(|b| b.len() <= 3));
        }
        // Windows of every shard come in one seeded order, not shard after shard: 3 shards of
        // 3 windows each change shard at most twice when read shard by shard.
        let changes = w.windows(2).filter(|p| p[0].shard != p[1].shard).count();
        assert!(changes > 2, "epoch {epoch}: {changes} shard changes");
    }
}

/// Records of equal length meet different batch mates from epoch to epoch (the window is
/// shuffled before its stable sort by length), and batches stay cuts of the sorted window.
#[test]
fn batch_mates_change_between_epochs_of_one_view() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let synth = Synth {
        records: 60,
        ..Synth::default()
    };
    let records = write_cache(&tmp.path().join("cache"), &model, &synth);
    let p = plan(&tmp.path().join("cache"));
    let composition = |epoch: u64| -> BTreeSet<Vec<usize>> {
        let w = p.epoch_windows(3, epoch, &cfg(4, 100));
        assert_eq!(w.len(), 1);
        w[0].batches
            .iter()
            .map(|b| {
                let mut b = b.clone();
                b.sort_unstable();
                b
            })
            .collect()
    };
    let first = composition(0);
    let changed = (1..4).filter(|&e| composition(e) != first).count();
    assert_eq!(changed, 3, "batch mates repeat across epochs");
    for b in &first {
        let (lo, hi) = b.iter().fold((usize::MAX, 0), |(lo, hi), &i| {
            (lo.min(records[i].len()), hi.max(records[i].len()))
        });
        // No record outside the batch lies strictly inside its length band.
        let inside = (0..60)
            .filter(|i| !b.contains(i))
            .filter(|&i| lo < records[i].len() && records[i].len() < hi)
            .count();
        assert_eq!(inside, 0, "batch {b:?} spans lengths {lo}..{hi}");
    }
}

/// Training epoch e reads masked view e % views, and only it.
#[test]
fn epochs_rotate_through_the_masked_views() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let synth = Synth {
        views: 3,
        records: 10,
        rows_per_shard: 5,
        ..Synth::default()
    };
    let records = write_cache(&tmp.path().join("cache"), &model, &synth);
    let p = plan(&tmp.path().join("cache"));
    assert_eq!(p.views(), 3);
    assert_eq!(p.views_held(), vec![0, 1, 2]);
    for epoch in 0..7u64 {
        let view = (epoch % 3) as u32;
        assert_eq!(p.view_of_epoch(epoch), view);
        assert_eq!(p.records_in_epoch(epoch), 10);
        let idx: BTreeSet<usize> = batches(&p.epoch_windows(1, epoch, &cfg(4, 100)))
            .concat()
            .into_iter()
            .collect();
        assert_eq!(idx.len(), 10);
        assert!(
            idx.iter().all(|&i| records[i].epoch == view),
            "epoch {epoch}"
        );
    }
}

fn distil_config(
    dir: &Path,
    model: &Path,
    out: &str,
    epochs: u64,
    window_records: usize,
) -> DistilConfig {
    DistilConfig {
        cache: dir.join("cache"),
        student: StudentSpec {
            init: Some(model.to_path_buf()),
            layers: vec![0, 1],
            ..StudentSpec::default()
        },
        out: dir.join(out),
        batch_size: 4,
        window_records,
        prefetch_batches: 2,
        train: LoopConfig {
            seed: 11,
            epochs,
            lr: 1e-3,
            checkpoint_every: 1,
            keep_last: 100,
            log_every: 1,
            ..LoopConfig::default()
        },
        ..DistilConfig::default()
    }
}

/// Leaves `run` as a run killed just after its checkpoint at `step`: later checkpoints, the
/// saved model and the report gone.
fn rewind(run: &Path, step: u64) {
    let ck = run.join("checkpoints");
    for e in std::fs::read_dir(&ck).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if let Some(n) = name.strip_prefix("step-") {
            if n.parse::<u64>().unwrap() > step {
                std::fs::remove_dir_all(e.path()).unwrap();
            }
        }
    }
    std::fs::write(ck.join("latest"), format!("step-{step:06}")).unwrap();
    std::fs::remove_dir_all(run.join("model")).unwrap();
    std::fs::remove_file(run.join("report.json")).unwrap();
}

/// Trains, rewinds the run to `at` and trains again: the resumed run ends with the weights of
/// the uninterrupted one and logs the same losses.
fn resume_matches(synth: Synth, epochs: u64, window_records: usize, at: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    write_cache(&tmp.path().join("cache"), &model, &synth);
    let c = distil_config(tmp.path(), &model, "run", epochs, window_records);
    train_student(&c, &Device::Cpu).unwrap();
    let weights = std::fs::read(c.out.join("model/model.safetensors")).unwrap();
    let losses: Vec<_> = step_lines(&c.out)
        .iter()
        .map(|l| l["loss"].clone())
        .collect();
    rewind(&c.out, at);
    let report = train_student(&c, &Device::Cpu).unwrap();
    assert_eq!(report.steps, losses.len() as u64);
    let again: Vec<_> = step_lines(&c.out)
        .iter()
        .map(|l| l["loss"].clone())
        .collect();
    assert_eq!(again, losses, "losses after resuming at step {at}");
    let resumed = std::fs::read(c.out.join("model/model.safetensors")).unwrap();
    assert!(resumed == weights, "weights after resuming at step {at}");
}

/// Two views of 12 records, batches of 4: epoch 0 is steps 1-3, epoch 1 steps 4-6 (the
/// other view), epoch 2 steps 7-9. Resumed at step 2, the run crosses into epoch 1 and on.
#[test]
fn resume_across_an_epoch_boundary_matches_an_uninterrupted_run() {
    let synth = Synth {
        views: 2,
        records: 12,
        rows_per_shard: 6,
        ..Synth::default()
    };
    resume_matches(synth, 3, 1024, 2);
}

/// One view in shards of 15 records cut into windows of 4: resumed at step 5, the run
/// restarts inside the second window of the first shard it reads.
#[test]
fn resume_inside_a_shard_of_several_windows_matches() {
    let synth = Synth {
        records: 30,
        rows_per_shard: 15,
        ..Synth::default()
    };
    resume_matches(synth, 2, 4, 5);
}

/// Damages the first zstd block of `shard` in place (its block-table crc no longer matches).
fn damage_first_block(shard: &Path) {
    let mut bytes = std::fs::read(shard).unwrap();
    // The header is 16 bytes; the first block follows it.
    for b in &mut bytes[20..40] {
        *b ^= 0x5a;
    }
    // Written in place (same inode), so a reader that has the file open sees the change.
    use std::io::{Seek, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(shard).unwrap();
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    f.write_all(&bytes).unwrap();
    f.sync_all().unwrap();
}

/// An mmap shard damaged after the cache was opened: the batches before its window come out
/// intact, then the prefetcher reports an error naming the file, and stops.
#[test]
fn a_shard_damaged_under_the_stream_is_named_when_reached() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let synth = Synth {
        records: 24,
        rows_per_shard: 8,
        ..Synth::default()
    };
    write_cache(&tmp.path().join("cache"), &model, &synth);
    let p = plan(&tmp.path().join("cache"));
    let windows = p.epoch_windows(2, 0, &cfg(4, 100));
    let last = windows.last().unwrap().shard;
    let path = p.reader().shard(last).unwrap().path().to_path_buf();
    damage_first_block(&path);
    let before: usize = windows[..windows.len() - 1]
        .iter()
        .map(|w| w.batches.len())
        .sum();
    let pf = Prefetcher::start(p.reader().clone(), windows, 0, 2);
    for _ in 0..before {
        pf.next().unwrap();
    }
    let err = pf
        .next()
        .expect_err("the damaged shard is reached")
        .to_string();
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "{name} not in: {err}");
    assert!(pf.next().is_err());
}

/// `kd train` over a cache whose last-read shard is damaged while the run is going: the run
/// takes its first steps, then ends with an error naming the shard (mmap backend: the damage
/// is made after the cache was opened, as a disk fault in the middle of training would be).
#[test]
fn a_shard_damaged_during_training_ends_the_run_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let synth = Synth {
        records: 96,
        rows_per_shard: 16,
        ..Synth::default()
    };
    write_cache(&tmp.path().join("cache"), &model, &synth);
    let c = distil_config(tmp.path(), &model, "run", 1, 1024);
    // The run's own plan (same seed, epoch and stream settings) tells which shard comes last.
    let windows =
        plan(&c.cache).epoch_windows(c.train.seed, 0, &cfg(c.batch_size, c.window_records));
    let last = CacheReader::open(&c.cache)
        .unwrap()
        .shard(windows.last().unwrap().shard)
        .unwrap()
        .path()
        .to_path_buf();
    let name = last.file_name().unwrap().to_str().unwrap().to_string();
    let run = {
        let c = c.clone();
        std::thread::spawn(move || train_student(&c, &Device::Cpu).map_err(|e| e.to_string()))
    };
    // Wait for the first logged step, then damage the shard the run reads last.
    let t0 = std::time::Instant::now();
    let logged_steps = || {
        std::fs::read_to_string(c.out.join("metrics.jsonl"))
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n') && l.contains("\"loss\""))
            .count()
    };
    while logged_steps() == 0 {
        assert!(t0.elapsed().as_secs() < 120, "no step was logged");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    damage_first_block(&last);
    let steps_before = logged_steps();
    let err = match run.join().unwrap() {
        Ok(r) => panic!("the run finished ({} steps) over a damaged shard", r.steps),
        Err(e) => e,
    };
    assert!(err.contains(&name), "{name} not in: {err}");
    let logged = step_lines(&c.out).len();
    assert!(
        logged >= steps_before && logged < 24,
        "{logged} steps logged"
    );
}
