//! Compatibility refusals, merging the parts of a sharded run, and inspect.

mod common;

use common::*;
use kd_cache::{
    inspect, merge, verify, Backend, CacheReader, Expectation, Manifest, MergeMode, Part,
    Precision, Record, TargetSpec,
};

fn spec() -> TargetSpec {
    full_spec(Precision::F16, Precision::Int8, Precision::Bf16)
}

#[test]
fn compatibility_refusals_name_the_difference() {
    let m = manifest(&spec(), Backend::Mmap);
    let need = TargetSpec::parse("mlm-topk:k=8,t=2,hidden:last,attention:3", LAYERS).unwrap();
    let ok = Expectation::new(need.clone())
        .tokenizer("cd34".repeat(16))
        .teacher("ab12".repeat(16));
    m.check_compatible(&ok).unwrap();

    let e = m
        .check_compatible(&ok.clone().tokenizer("ef56".repeat(16)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cache tokenizer sha256 cd34cd34cd34.. != student tokenizer ef56ef56ef56.."),
        "{e}"
    );
    let e = m
        .check_compatible(&ok.clone().teacher("0000".repeat(16)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("teacher weights sha256 ab12ab12ab12.. != expected teacher 0000"),
        "{e}"
    );

    let need = TargetSpec::parse("attention:2,3", LAYERS).unwrap();
    let e = m
        .check_compatible(&Expectation::new(need))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cache has no attention for layer 2 (it has 1, 3)"),
        "{e}"
    );

    let need = TargetSpec::parse("hidden:1,mlm-topk:k=16,t=4", LAYERS).unwrap();
    let e = m
        .check_compatible(&Expectation::new(need))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no hidden state for layer 1 (it has 0, 2, 4)"),
        "{e}"
    );
    assert!(e.contains("k = 8 < 16"), "{e}");
    assert!(e.contains("temperature 4"), "{e}");

    let only_hidden = manifest(
        &TargetSpec::parse("hidden:4", LAYERS).unwrap(),
        Backend::Mmap,
    );
    let need = TargetSpec::parse("attention:3,logits,mlm-sampled:k=12,t=2", LAYERS).unwrap();
    let e = only_hidden
        .check_compatible(&Expectation::new(need))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cache has no attention (it stores hidden)"),
        "{e}"
    );
    assert!(
        e.contains("no classifier logits") && e.contains("no mlm-sampled"),
        "{e}"
    );

    let mut v4 = m.clone();
    v4.schema_version = "kd-cache/4".into();
    let e = v4
        .check_compatible(&Expectation::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cache schema kd-cache/4 is not supported")
            && e.contains("reads kd-cache/1, kd-cache/2 and kd-cache/3"),
        "{e}"
    );
    // Version 2 reads every version-1 cache; only attention_qk needs it.
    let mut v2 = m.clone();
    v2.schema_version = "kd-cache/2".into();
    v2.check_compatible(&Expectation::default()).unwrap();

    let mut part = m.clone();
    part.part = Some(Part { index: 1, count: 2 });
    let e = part
        .check_compatible(&Expectation::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("part 1/2") && e.contains("merge"), "{e}");
    let partial_ok = Expectation {
        allow_partial: true,
        ..Expectation::default()
    };
    part.check_compatible(&partial_ok).unwrap();
}

fn write_part(dir: &std::path::Path, backend: Backend, index: u32, records: &[Record]) {
    let mut m = manifest(&spec(), backend);
    m.part = Some(Part { index, count: 2 });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("token_counts.json"), "{\"vocab_size\": 2}").unwrap();
    m.token_counts = Some(kd_cache::FileRef::for_file(dir, "token_counts.json").unwrap());
    write_cache(dir, m, records, small_options());
}

#[test]
fn merged_parts_equal_one_cache() {
    for backend in [Backend::Mmap, Backend::Parquet] {
        for mode in [MergeMode::Copy, MergeMode::Move] {
            let root = tempfile::tempdir().unwrap();
            let records = random_records(3, &spec(), 20);
            let (a, b) = records.split_at(11);
            let p0 = root.path().join("p0");
            let p1 = root.path().join("p1");
            write_part(&p1, backend, 1, b);
            write_part(&p0, backend, 0, a);
            assert!(std::fs::read_dir(&p0).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("part-000-of-002")));

            let whole = root.path().join("whole");
            std::fs::create_dir_all(&whole).unwrap();
            std::fs::write(whole.join("token_counts.json"), "{\"vocab_size\": 2}").unwrap();
            let mut m = manifest(&spec(), backend);
            m.token_counts =
                Some(kd_cache::FileRef::for_file(&whole, "token_counts.json").unwrap());
            let single = write_cache(&whole, m, &records, small_options());

            let out = root.path().join("merged");
            // Parts given in any order.
            let merged = merge(&[p1.clone(), p0.clone()], &out, mode).unwrap();
            assert_eq!(merged.part, None);
            assert_eq!(merged.rows(), 20);
            let mut same = merged.clone();
            same.shards = single.shards.clone();
            assert_eq!(same, single, "only the shard list differs");
            assert_eq!(merged.tokenizer_sha256, single.tokenizer_sha256);
            assert_eq!(merged.token_counts, single.token_counts);
            assert_eq!(merged.tokens(), single.tokens());
            verify(&out).unwrap();
            let got: Vec<Record> = CacheReader::open(&out)
                .unwrap()
                .iter()
                .map(|r| r.unwrap())
                .collect();
            let want: Vec<Record> = CacheReader::open(&whole)
                .unwrap()
                .iter()
                .map(|r| r.unwrap())
                .collect();
            assert_eq!(got, want, "{backend} {mode:?}");
            if mode == MergeMode::Move {
                assert!(!Manifest::path(&p0).exists() && !Manifest::path(&p1).exists());
            } else {
                verify(&p0).unwrap();
            }
            let e = merge(&[p0.clone(), p1.clone()], &out, MergeMode::Copy)
                .unwrap_err()
                .to_string();
            assert!(e.contains("manifest.json"), "{e}");
        }
    }
}

#[test]
fn merge_refuses_incompatible_parts() {
    let root = tempfile::tempdir().unwrap();
    let records = random_records(4, &spec(), 6);
    let p0 = root.path().join("p0");
    let p1 = root.path().join("p1");
    write_part(&p0, Backend::Mmap, 0, &records[..3]);
    write_part(&p1, Backend::Mmap, 1, &records[3..]);
    let out = root.path().join("out");

    let e = merge(std::slice::from_ref(&p0), &out, MergeMode::Copy).unwrap_err();
    assert!(
        e.to_string().contains("part 1 of 2 missing (found 1)"),
        "{e}"
    );
    let e = merge(&[p0.clone(), p0.clone()], &out, MergeMode::Copy).unwrap_err();
    assert!(e.to_string().contains("both part 0/2"), "{e}");

    let mut m1 = Manifest::load(&p1).unwrap();
    m1.tokenizer_sha256 = "ff".repeat(32);
    m1.save(&p1).unwrap();
    let e = merge(&[p0.clone(), p1.clone()], &out, MergeMode::Copy).unwrap_err();
    assert!(
        e.to_string().contains("differs from") && e.to_string().contains("`tokenizer_sha256`"),
        "{e}"
    );

    m1.tokenizer_sha256 = "cd34".repeat(16);
    m1.targets.hidden.as_mut().unwrap().precision = Precision::F16;
    m1.save(&p1).unwrap();
    let e = merge(&[p0.clone(), p1.clone()], &out, MergeMode::Copy).unwrap_err();
    assert!(e.to_string().contains("`targets.hidden.precision`"), "{e}");

    m1.targets = spec();
    m1.part = Some(Part { index: 1, count: 3 });
    m1.save(&p1).unwrap();
    let e = merge(&[p0.clone(), p1.clone()], &out, MergeMode::Copy).unwrap_err();
    assert!(e.to_string().contains("part 1/3"), "{e}");

    let whole = root.path().join("whole");
    write_cache(
        &whole,
        manifest(&spec(), Backend::Mmap),
        &records,
        small_options(),
    );
    let e = merge(&[p0.clone(), whole], &out, MergeMode::Copy).unwrap_err();
    assert!(e.to_string().contains("not a part"), "{e}");
    assert!(!Manifest::path(&out).exists());
}

#[test]
fn inspect_sizes_add_up_to_the_files() {
    for backend in [Backend::Parquet, Backend::Mmap] {
        let dir = tempfile::tempdir().unwrap();
        let records = random_records(8, &spec(), 20);
        let m = write_cache(
            dir.path(),
            manifest(&spec(), backend),
            &records,
            small_options(),
        );
        let report = inspect(dir.path()).unwrap();
        let file_bytes: u64 = m
            .shards
            .iter()
            .map(|s| std::fs::metadata(dir.path().join(&s.file)).unwrap().len())
            .sum();
        assert_eq!(report.file_bytes, file_bytes);
        let columns: u64 = report.columns.iter().map(|c| c.bytes).sum();
        assert_eq!(columns + report.overhead, file_bytes, "{backend}");
        let tokens: u64 = records.iter().map(|r| r.input_ids.len() as u64).sum();
        assert_eq!(report.tokens, tokens);
        assert!((report.bytes_per_token() - file_bytes as f64 / tokens as f64).abs() < 1e-9);
        for name in [
            "input_ids",
            "topk_ids",
            "topk_logits",
            "hidden_l4",
            "attention_l3",
        ] {
            let c = report.columns.iter().find(|c| c.name == name);
            assert!(c.is_some_and(|c| c.bytes > 0), "{backend}: {name} missing");
        }
        // Raw sizes follow from the shapes: hidden_l4 at int8 holds H bytes
        // and one f32 scale per token.
        let raw: u64 = report
            .columns
            .iter()
            .filter(|c| c.name.starts_with("hidden_l4"))
            .map(|c| c.raw_bytes)
            .sum();
        let per_token = raw as f64 / tokens as f64;
        assert!(
            per_token >= (HIDDEN + 4) as f64 * 0.99,
            "{backend}: {per_token}"
        );
        let text = report.to_string();
        assert!(
            text.contains("bytes/token") && text.contains("hidden_l4"),
            "{text}"
        );
        assert!(
            text.contains("bert (4 layers, hidden 16, 2 heads)"),
            "{text}"
        );
        if backend == Backend::Parquet {
            assert!(report.columns.iter().any(|c| c.name == "hidden_l4_scale"));
            // Columns take most of the file; the rest is footer and indexes.
            assert!(report.overhead < file_bytes / 2, "{}", report.overhead);
        }
    }
}
