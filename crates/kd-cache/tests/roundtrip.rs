//! Records survive both backends at every precision; random access equals
//! streaming.

mod common;

use common::*;
use kd_cache::{Backend, CacheReader, Precision, Record, ShardWriter, TargetSpec, WriterOptions};

fn round_trip(backend: Backend, spec: &TargetSpec, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let records = random_records(seed, spec, 23);
    let m = write_cache(
        dir.path(),
        manifest(spec, backend),
        &records,
        small_options(),
    );
    assert_eq!(m.shards.len(), 4, "23 records in shards of 7");
    assert_eq!(m.rows(), 23);
    let tokens: usize = records.iter().map(|r| r.input_ids.len()).sum();
    assert_eq!(m.tokens(), tokens as u64);
    for s in &m.shards {
        let meta = std::fs::metadata(dir.path().join(&s.file)).unwrap();
        assert_eq!(meta.len(), s.bytes);
        assert_eq!(
            kd_core::fs::sha256_file(&dir.path().join(&s.file)).unwrap(),
            s.sha256
        );
        assert!(s.file.ends_with(backend.extension()));
    }
    let no_tmp = std::fs::read_dir(dir.path())
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp"));
    assert!(no_tmp, "temporary files left behind");

    let reader = CacheReader::open(dir.path()).unwrap();
    assert_eq!(reader.len(), 23);
    assert_eq!(reader.num_shards(), 4);
    let streamed: Vec<Record> = reader.iter().map(|r| r.unwrap()).collect();
    assert_eq!(streamed.len(), records.len());
    for (orig, back) in records.iter().zip(&streamed) {
        assert_record_close(orig, back, spec);
    }
    // Random access, in a scrambled order, equals streaming.
    for k in 0..reader.len() {
        let i = (k * 11 + 5) % reader.len();
        assert_eq!(reader.get(i).unwrap(), streamed[i], "record {i}");
    }
    assert!(reader.get(23).is_err());
    // Per-shard iteration in a shuffled shard order.
    let order = vec![2, 0, 3, 1];
    let mut expect = Vec::new();
    for &s in &order {
        expect.extend(reader.shard_range(s).map(|i| streamed[i].clone()));
    }
    let got: Vec<Record> = reader.iter_shards(order).map(|r| r.unwrap()).collect();
    assert_eq!(got, expect);
    assert_eq!(reader.iter_shard(3).count(), 2);
    assert!(reader.iter_shards(vec![9]).next().unwrap().is_err());
    // Epochs and lengths read without decoding the records equal the decoded ones.
    for s in 0..reader.num_shards() {
        let expect: Vec<(u32, u32)> = reader
            .shard_range(s)
            .map(|i| (streamed[i].epoch, streamed[i].input_ids.len() as u32))
            .collect();
        let got = reader.shard(s).unwrap().epochs_and_lengths().unwrap();
        assert_eq!(got, expect, "shard {s}");
    }
}

#[test]
fn mmap_round_trip_every_precision() {
    let combos = [
        (Precision::F32, Precision::F32, Precision::F32),
        (Precision::F16, Precision::F16, Precision::F16),
        (Precision::Bf16, Precision::Bf16, Precision::Bf16),
        (Precision::F16, Precision::Int8, Precision::Int8),
    ];
    for (i, (l, h, a)) in combos.into_iter().enumerate() {
        round_trip(Backend::Mmap, &full_spec(l, h, a), i as u64);
    }
}

#[test]
fn parquet_round_trip_every_precision() {
    let combos = [
        (Precision::F32, Precision::F32, Precision::F32),
        (Precision::F16, Precision::F16, Precision::F16),
        (Precision::Bf16, Precision::Bf16, Precision::Bf16),
        (Precision::F16, Precision::Int8, Precision::Int8),
    ];
    for (i, (l, h, a)) in combos.into_iter().enumerate() {
        round_trip(Backend::Parquet, &full_spec(l, h, a), 10 + i as u64);
    }
}

#[test]
fn partial_target_sets_round_trip() {
    for (b, text) in [
        (Backend::Mmap, "mlm-topk:k=4"),
        (Backend::Parquet, "mlm-topk:k=4"),
        (Backend::Mmap, "hidden:last@int8,logits"),
        (Backend::Parquet, "attention:2@bf16"),
        (Backend::Parquet, "mlm-sampled:k=5"),
    ] {
        let spec = TargetSpec::parse(text, LAYERS).unwrap();
        round_trip(b, &spec, 99);
    }
}

#[test]
fn f32_round_trip_is_bit_exact() {
    let spec = full_spec(Precision::F32, Precision::F32, Precision::F32);
    let records = random_records(5, &spec, 9);
    for backend in [Backend::Mmap, Backend::Parquet] {
        let dir = tempfile::tempdir().unwrap();
        write_cache(
            dir.path(),
            manifest(&spec, backend),
            &records,
            small_options(),
        );
        let reader = CacheReader::open(dir.path()).unwrap();
        let back: Vec<Record> = reader.iter().map(|r| r.unwrap()).collect();
        assert_eq!(back, records, "{backend}");
    }
}

#[test]
fn quantized_records_read_back_identically_on_both_backends() {
    // Already-quantized records come back byte for byte.
    let spec = full_spec(Precision::Bf16, Precision::Int8, Precision::F16);
    let mut records = random_records(6, &spec, 10);
    for r in &mut records {
        r.conform(&spec).unwrap();
    }
    for backend in [Backend::Mmap, Backend::Parquet] {
        let dir = tempfile::tempdir().unwrap();
        write_cache(
            dir.path(),
            manifest(&spec, backend),
            &records,
            small_options(),
        );
        let back: Vec<Record> = CacheReader::open(dir.path())
            .unwrap()
            .iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(back, records, "{backend}");
    }
}

#[test]
fn shard_writer_refuses_records_that_do_not_fit() {
    let spec = TargetSpec::parse("mlm-topk:k=8,hidden:1", LAYERS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for backend in [Backend::Mmap, Backend::Parquet] {
        let path = dir.path().join(format!("x.{}", backend.extension()));
        let mut w = ShardWriter::create(&path, backend, &spec, &WriterOptions::default()).unwrap();
        let good = random_records(1, &spec, 1).remove(0);
        w.write(&good).unwrap();
        let mut r = good.clone();
        r.hidden[0].layer = 2;
        let e = w.write(&r).unwrap_err().to_string();
        assert!(
            e.contains("hidden layers [2]") && e.contains("seq_id"),
            "{e}"
        );
        let mut r = good.clone();
        r.mlm_topk = None;
        assert!(w.write(&r).unwrap_err().to_string().contains("mlm_topk"));
        let mut r = good.clone();
        r.mlm_positions.push(1000);
        r.mlm_labels.push(1);
        assert!(w.write(&r).unwrap_err().to_string().contains("outside"));
        let mut r = good.clone();
        r.logits = Some(vec![1.0]);
        assert!(w.write(&r).is_err());
        let info = w.finish().unwrap();
        assert_eq!(info.rows, 1);
        assert!(!path
            .with_extension(format!("{}.tmp", backend.extension()))
            .exists());
    }
    // An unfinished writer leaves no file behind.
    let path = dir.path().join("dropped.kdc");
    let w = ShardWriter::create(&path, Backend::Mmap, &spec, &WriterOptions::default()).unwrap();
    drop(w);
    assert!(!path.exists() && !dir.path().join("dropped.kdc.tmp").exists());
}

#[test]
fn cache_writer_refuses_to_overwrite() {
    let spec = TargetSpec::parse("logits", LAYERS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_cache(
        dir.path(),
        manifest(&spec, Backend::Mmap),
        &[],
        small_options(),
    );
    let e =
        kd_cache::CacheWriter::create(dir.path(), manifest(&spec, Backend::Mmap), small_options())
            .unwrap_err()
            .to_string();
    assert!(e.contains("already exists"), "{e}");
    let reader = CacheReader::open(dir.path()).unwrap();
    assert!(reader.is_empty());
    assert_eq!(reader.iter().count(), 0);
}

#[test]
fn readers_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<CacheReader>();
    let spec = full_spec(Precision::F16, Precision::F16, Precision::Int8);
    let records = random_records(21, &spec, 14);
    for backend in [Backend::Mmap, Backend::Parquet] {
        let dir = tempfile::tempdir().unwrap();
        write_cache(
            dir.path(),
            manifest(&spec, backend),
            &records,
            small_options(),
        );
        let reader = CacheReader::open(dir.path()).unwrap();
        std::thread::scope(|s| {
            for t in 0..2 {
                let (reader, records) = (&reader, &records);
                s.spawn(move || {
                    for i in (t..reader.len()).step_by(2) {
                        assert_eq!(reader.get(i).unwrap().seq_id, records[i].seq_id);
                    }
                });
            }
        });
    }
}
