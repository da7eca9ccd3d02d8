//! Hostile model directories: crafted `pytorch_model.bin` pickles, sizes in `config.json` that
//! the checkpoint does not back, FIFOs and shard names leaving the directory. Each must give an
//! error naming the file, never a crash, a hang, unbounded memory or a silently different model.
//! Cases that crashed the process run in a child process under a memory limit.

mod common;

use common::pth::*;
use common::*;
use kd_bert::checkpoint::{read_tensors, weights_sha256};
use kd_bert::{init_model, load_model, Architecture, BertConfig, Error, LoadOptions};
use std::path::{Path, PathBuf};

/// The tiny classifier's directory with `bytes` as its `pytorch_model.bin`.
fn dir_with_bin(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = fixture_copy("tiny_cls");
    std::fs::write(dir.join("pytorch_model.bin"), bytes).unwrap();
    (tmp, dir)
}

/// Loads `dir` and asserts a clean error whose message names `file` and contains `words`.
fn assert_load_err(what: &str, dir: &Path, opts: &LoadOptions, file: &str, words: &[&str]) {
    let err = expect_err(what, || load_model(dir, opts));
    let shown = err.to_string();
    assert!(
        shown.contains(file),
        "{what}: message lacks {file}: {shown}"
    );
    for w in words {
        assert!(shown.contains(w), "{what}: message lacks {w:?}: {shown}");
    }
}

fn bin_err(what: &str, pickle: &[u8], storages: &[(&str, Vec<u8>)], words: &[&str]) {
    let (_tmp, dir) = dir_with_bin(&pth_bytes(pickle, storages));
    assert_load_err(
        what,
        &dir,
        &LoadOptions::default(),
        "pytorch_model.bin",
        words,
    );
}

/// A state dict with one entry `name` whose value is `value` (raw pickle bytes).
fn one_entry(name: &str, value: impl FnOnce(&mut Pickle)) -> Vec<u8> {
    let mut p = Pickle::new();
    p.ordered_dict().op(MARK).unicode(name);
    value(&mut p);
    p.op(SETITEMS).stop()
}

const WORDS: &str = "bert.embeddings.word_embeddings.weight";

#[test]
fn pth_rebuild_calls_with_missing_arguments_are_errors() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "_rebuild_tensor_v2()",
            one_entry(WORDS, |p| {
                p.global("torch._utils", "_rebuild_tensor_v2")
                    .op(EMPTY_TUPLE)
                    .op(REDUCE);
            }),
        ),
        (
            "_rebuild_tensor_v2(storage, offset, size)",
            one_entry(WORDS, |p| {
                p.global("torch._utils", "_rebuild_tensor_v2").op(MARK);
                p.op(MARK)
                    .unicode("storage")
                    .global("torch", "FloatStorage")
                    .unicode("0")
                    .unicode("cpu")
                    .int(4)
                    .op(TUPLE)
                    .op(BINPERSID);
                p.int(0).int_tuple(&[4]).op(TUPLE).op(REDUCE);
            }),
        ),
        (
            "persistent id of two fields",
            one_entry(WORDS, |p| {
                p.global("torch._utils", "_rebuild_tensor_v2").op(MARK);
                p.op(MARK)
                    .unicode("storage")
                    .global("torch", "FloatStorage")
                    .op(TUPLE)
                    .op(BINPERSID);
                p.int(0)
                    .int_tuple(&[4])
                    .int_tuple(&[1])
                    .op(TUPLE)
                    .op(REDUCE);
            }),
        ),
        (
            "_rebuild_from_type_v2(f)",
            one_entry(WORDS, |p| {
                p.global("torch._tensor", "_rebuild_from_type_v2").op(MARK);
                p.global("torch._utils", "_rebuild_tensor_v2")
                    .op(TUPLE)
                    .op(REDUCE);
            }),
        ),
        (
            "_rebuild_parameter()",
            one_entry(WORDS, |p| {
                p.global("torch._utils", "_rebuild_parameter")
                    .op(EMPTY_TUPLE)
                    .op(REDUCE);
            }),
        ),
    ];
    for (what, pickle) in cases {
        bin_err(what, &pickle, &[("0", vec![0; 16])], &[WORDS]);
    }
}

#[test]
fn pth_tensor_beyond_its_storage_is_refused() {
    isolated("pth_tensor_beyond_its_storage_is_refused", || {
        let huge = TensorSpec {
            shape: vec![i32::MAX as i64, 65536],
            stride: vec![65536, 1],
            ..TensorSpec::f32(WORDS, "0", &[1])
        };
        let offset = TensorSpec {
            offset: 1 << 40,
            ..TensorSpec::f32(WORDS, "0", &[1])
        };
        let negative = TensorSpec {
            offset: -1,
            ..TensorSpec::f32(WORDS, "0", &[1])
        };
        let strided = TensorSpec {
            numel: 1,
            stride: vec![1 << 30],
            ..TensorSpec::f32(WORDS, "0", &[2])
        };
        for (what, t) in [
            ("2^31 x 65536 elements", huge),
            ("offset 2^40", offset),
            ("offset -1", negative),
            ("stride 2^30", strided),
        ] {
            bin_err(
                what,
                &state_dict_pickle(&[t]),
                &[("0", vec![0; 4])],
                &[WORDS],
            );
        }
    });
}

#[test]
fn pth_memo_bomb_is_refused() {
    isolated("pth_memo_bomb_is_refused", || {
        // A list appended to a copy of itself through the memo doubles at every round.
        let mut p = Pickle::new();
        p.op(EMPTY_LIST).put(0);
        for _ in 0..39 {
            p.get(0).op(APPEND).put(0);
        }
        let pickle = p.stop();
        assert!(pickle.len() < 256);
        bin_err("memo bomb", &pickle, &[], &["data.pkl"]);
    });
}

#[test]
fn pth_deeply_nested_pickle_is_refused() {
    isolated("pth_deeply_nested_pickle_is_refused", || {
        let mut p = Pickle::new();
        p.op(NONE);
        for _ in 0..1_000_000 {
            p.op(TUPLE1);
        }
        bin_err("1e6 nested tuples", &p.stop(), &[], &["data.pkl"]);
    });
}

#[test]
fn pth_string_longer_than_its_pickle_is_refused() {
    isolated("pth_string_longer_than_its_pickle_is_refused", || {
        let mut p = Pickle::new();
        p.raw(b"X").raw(&0xffff_fff0u32.to_le_bytes()).raw(b"abc");
        bin_err("4 GiB string", &p.stop(), &[], &["data.pkl"]);
    });
}

/// The fixture's entries with `data.pkl` passed through `edit`.
fn fixture_bin_with_pickle(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut entries = read_zip(&fixture("tiny_cls/pytorch_model.bin"));
    let pkl = entries
        .iter_mut()
        .find(|(n, _)| n.ends_with("data.pkl"))
        .unwrap();
    edit(&mut pkl.1);
    zip_bytes(&entries)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> usize {
    from + haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

#[test]
fn pth_corrupted_storage_bytes_are_detected() {
    let src = fixture("tiny_cls/pytorch_model.bin");
    let mut bytes = std::fs::read(&src).unwrap();
    let start = {
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&src).unwrap()).unwrap();
        let f = zip.by_name("pytorch_model/data/0").unwrap();
        f.data_start().unwrap() as usize
    };
    bytes[start + 100] ^= 0x40;
    let (_tmp, dir) = dir_with_bin(&bytes);
    assert_load_err(
        "flipped storage byte",
        &dir,
        &LoadOptions::default(),
        "pytorch_model.bin",
        &["data/0"],
    );
}

#[test]
fn pth_tensor_pointing_at_another_tensors_storage_is_refused() {
    // query.bias (storage 6) and key.bias (storage 8) have the same size: pointing the first at
    // the second's storage would load key.bias's values as query.bias.
    let bytes = fixture_bin_with_pickle(|pkl| {
        let at = find(pkl, b"X\x01\x00\x00\x006", 0);
        pkl[at + 5] = b'8';
    });
    let (_tmp, dir) = dir_with_bin(&bytes);
    assert_load_err(
        "storage 6 -> 8",
        &dir,
        &LoadOptions::default(),
        "pytorch_model.bin",
        &["data/6"],
    );
}

#[test]
fn pth_unreadable_head_tensor_is_not_replaced_by_a_fresh_one() {
    // classifier.weight's storage type becomes one the reader does not support; with fresh
    // heads allowed, the classifier must not silently come out freshly initialised.
    let bytes = fixture_bin_with_pickle(|pkl| {
        let name = find(pkl, b"classifier.weight", 0);
        let class = find(pkl, b"h\x04h\x05", name) + 2;
        pkl.splice(class..class + 2, b"ctorch\nIntStorage\n".iter().copied());
    });
    let (_tmp, dir) = dir_with_bin(&bytes);
    let opts = LoadOptions {
        fresh_heads: true,
        ..LoadOptions::default()
    };
    assert_load_err(
        "IntStorage classifier",
        &dir,
        &opts,
        "pytorch_model.bin",
        &["classifier.weight", "IntStorage"],
    );
}

/// Config edits whose sizes `tiny_mlm`'s checkpoint does not back: each must be refused
/// before the model is allocated, naming the field.
const UNBACKED: [(&str, u64); 7] = [
    ("vocab_size", 1_000_000_000_000),
    ("intermediate_size", 1_000_000_000_000),
    ("max_position_embeddings", 1_000_000_000_000),
    ("type_vocab_size", 1_000_000_000_000),
    ("hidden_size", 1_000_000_000_000),
    ("num_hidden_layers", 1_000_000),
    ("vocab_size", 1 << 59),
];

#[test]
fn config_sizes_the_checkpoint_does_not_back_are_refused() {
    isolated(
        "config_sizes_the_checkpoint_does_not_back_are_refused",
        || {
            for (field, value) in UNBACKED {
                let (_tmp, dir) = fixture_copy("tiny_mlm");
                set_config_field(&dir, field, Some(value.into()));
                assert_load_err(
                    &format!("{field} = {value}"),
                    &dir,
                    &LoadOptions::default(),
                    "config.json",
                    &[field, &value.to_string()],
                );
            }
        },
    );
}

#[test]
fn init_model_refuses_absurd_sizes() {
    isolated("init_model_refuses_absurd_sizes", || {
        for (field, value) in UNBACKED {
            let mut cfg = serde_json::to_value(BertConfig::tiny(99)).unwrap();
            cfg[field] = value.into();
            let cfg: BertConfig = serde_json::from_value(cfg).unwrap();
            let what = format!("fresh {field} = {value}");
            let err = expect_err(&what, || {
                init_model(
                    &cfg,
                    Architecture::MaskedLm,
                    0,
                    &candle_core::Device::Cpu,
                    candle_core::DType::F32,
                )
            });
            assert!(
                matches!(&err, Error::Config { msg, .. } if msg.contains(field)),
                "{what}: {err}"
            );
        }
    });
}

/// A sharded copy of `tiny_mlm`: `model.safetensors.index.json` naming `shard` for every
/// tensor, with the single file moved to `moved_to` (relative to the model directory).
fn sharded_dir(shard: &str, moved_to: &str) -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir) = fixture_copy("tiny_mlm");
    let weights = dir.join("model.safetensors");
    let names: Vec<String> = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu)
        .unwrap()
        .into_keys()
        .collect();
    let map: serde_json::Map<String, serde_json::Value> =
        names.into_iter().map(|n| (n, shard.into())).collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_string(&index).unwrap(),
    )
    .unwrap();
    let target = dir.join(moved_to);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::rename(&weights, &target).unwrap();
    (tmp, dir)
}

#[test]
fn fifo_weight_files_are_refused() {
    let (_tmp, dir) = sharded_dir("model-00001-of-00001.safetensors", "moved.safetensors");
    let fifo = dir.join("model-00001-of-00001.safetensors");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let d = dir.clone();
    let res = within(10, move || {
        load_model(&d, &LoadOptions::default()).map(|_| ())
    });
    let direct = fifo.clone();
    let res2 = within(10, move || {
        read_tensors(&direct, &candle_core::Device::Cpu).map(|_| ())
    });
    let d = dir.clone();
    let res3 = within(10, move || weights_sha256(&d).map(|_| ()));
    // Release any reader left blocked on the FIFO.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags_nonblock()
        .open(&fifo);
    for (what, res) in [
        ("sharded load", res),
        ("read_tensors", res2),
        ("fingerprint", res3),
    ] {
        match res {
            None => panic!("{what}: hangs on a FIFO shard"),
            Some(Ok(())) => panic!("{what}: loaded a FIFO"),
            Some(Err(e)) => {
                println!("{what}: {e}");
                let shown = e.to_string();
                assert!(
                    shown.contains("model-00001-of-00001.safetensors"),
                    "{shown}"
                );
                assert!(shown.contains("regular file"), "{shown}");
            }
        }
    }
}

/// `OpenOptions` that do not block opening a FIFO with no reader.
trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(0o4000) // O_NONBLOCK
    }
}

#[test]
fn shard_names_outside_the_model_directory_are_refused() {
    let (tmp, dir) = sharded_dir(
        "../elsewhere/model.safetensors",
        "../elsewhere/model.safetensors",
    );
    assert!(tmp.path().join("elsewhere/model.safetensors").is_file());
    assert_load_err(
        "../ shard",
        &dir,
        &LoadOptions::default(),
        "model.safetensors.index.json",
        &["../elsewhere/model.safetensors"],
    );
    let abs = tmp.path().join("elsewhere/model.safetensors");
    let abs = abs.to_str().unwrap().to_string();
    let (_tmp2, dir2) = sharded_dir(&abs, "unused.safetensors");
    assert_load_err(
        "absolute shard",
        &dir2,
        &LoadOptions::default(),
        "model.safetensors.index.json",
        &[&abs],
    );
}

#[test]
fn misnamed_head_tensor_is_not_skipped_for_a_fresh_one() {
    // One corrupted byte turns cls.predictions.bias into a name no head has; with fresh heads
    // allowed, the bias must not come out freshly initialised while the stored one is skipped.
    let (_tmp, dir) = fixture_copy("tiny_mlm");
    let weights = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let at = bytes
        .windows(20)
        .position(|w| w == b"cls.predictions.bias")
        .unwrap();
    bytes[at + 18] = b'b';
    std::fs::write(&weights, &bytes).unwrap();
    let opts = LoadOptions {
        fresh_heads: true,
        ..LoadOptions::default()
    };
    assert_load_err(
        "cls.predictions.bibs",
        &dir,
        &opts,
        "model.safetensors",
        &["unexpected", "cls.predictions.bibs"],
    );
}
