//! Mutators for the fuzz test: each turns a clean model directory (a [`Base`]) into a mutated
//! [`Case`] from a seeded RNG.

use crate::common::pth::{read_zip, zip_bytes};
use crate::common::{fixture, param_bits};
use kd_bert::{load_model, LoadOptions};
use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Parameters as raw bits, by name.
pub type Bits = BTreeMap<String, Vec<u32>>;

/// A fixture directory and the clean load of it.
pub struct Base {
    pub fixture: &'static str,
    pub weights_name: &'static str,
    pub config: Vec<u8>,
    pub weights: Vec<u8>,
    /// Clean parameters by `fresh_heads`.
    pub clean: [Bits; 2],
}

impl Base {
    pub fn new(fixture_name: &'static str, weights_name: &'static str) -> Self {
        let dir = fixture(fixture_name);
        let clean = [false, true].map(|fresh| {
            let loaded = load_model(&dir, &opts(fresh)).expect("clean fixture loads");
            param_bits(&loaded.varmap)
        });
        Self {
            fixture: fixture_name,
            weights_name,
            config: std::fs::read(dir.join("config.json")).unwrap(),
            weights: std::fs::read(dir.join(weights_name)).unwrap(),
            clean,
        }
    }
}

pub fn opts(fresh_heads: bool) -> LoadOptions {
    LoadOptions {
        fresh_heads,
        seed: 11,
        ..LoadOptions::default()
    }
}

/// The files of one mutated model directory.
pub struct Case {
    pub desc: String,
    pub config: Vec<u8>,
    pub weights: Vec<u8>,
    pub fresh_heads: bool,
}

// ---------------------------------------------------------------- safetensors mutations

const DTYPES: [&str; 12] = [
    "F16", "BF16", "F32", "F64", "I8", "I16", "I32", "I64", "U8", "U32", "BOOL", "Q4",
];

fn interesting_u64(rng: &mut ChaCha8Rng) -> u64 {
    *[
        0,
        1,
        7,
        32,
        99,
        1 << 31,
        (1 << 32) + 1,
        1 << 40,
        1 << 62,
        u64::MAX,
        u64::MAX / 4 + 1,
        rng.random_range(0..100_000),
    ]
    .choose(rng)
    .unwrap()
}

pub fn mutate_safetensors(base: &Base, rng: &mut ChaCha8Rng) -> Case {
    let mut w = base.weights.clone();
    let header_len = u64::from_le_bytes(w[..8].try_into().unwrap()) as usize;
    let desc = match rng.random_range(0..7) {
        0 => {
            let v = match rng.random_range(0..3) {
                0 => interesting_u64(rng),
                1 => (header_len as i64 + rng.random_range(-16i64..16)).max(0) as u64,
                _ => header_len as u64 ^ (1 << rng.random_range(0..64)),
            };
            w[..8].copy_from_slice(&v.to_le_bytes());
            format!("header length {v}")
        }
        1 => {
            let n = rng.random_range(1..5);
            for _ in 0..n {
                let at = rng.random_range(8..8 + header_len);
                w[at] ^= 1 << rng.random_range(0..8);
            }
            format!("{n} header bit flips")
        }
        2 => {
            let at = rng.random_range(8..8 + header_len);
            let b = *b"\"[],:9-.e{} 0".choose(rng).unwrap();
            w[at] = b;
            format!("header byte {at} = {:?}", b as char)
        }
        3 => {
            let n = rng.random_range(0..w.len());
            w.truncate(n);
            format!("truncated to {n}")
        }
        4 => {
            let extra = rng.random_range(1..64);
            w.extend((0..extra).map(|_| rng.random::<u8>()));
            format!("{extra} bytes appended")
        }
        _ => return edit_safetensors_header(base, w, header_len, rng),
    };
    Case {
        desc,
        config: base.config.clone(),
        weights: w,
        fresh_heads: rng.random(),
    }
}

/// Structured edits of the JSON header (shape, offsets, dtype, names), re-serialised with a
/// correct length.
fn edit_safetensors_header(
    base: &Base,
    w: Vec<u8>,
    header_len: usize,
    rng: &mut ChaCha8Rng,
) -> Case {
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&w[8..8 + header_len]).unwrap();
    let names: Vec<String> = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let name = names.choose(rng).unwrap().clone();
    let entry = header[&name].as_object_mut().unwrap();
    let desc = match rng.random_range(0..6) {
        0 => {
            let shape = entry["shape"].as_array_mut().unwrap();
            let v = interesting_u64(rng);
            if shape.is_empty() || rng.random_bool(0.2) {
                shape.push(v.into());
            } else {
                let i = rng.random_range(0..shape.len());
                shape[i] = v.into();
            }
            format!("{name} shape {shape:?}")
        }
        1 => {
            let offs = entry["data_offsets"].as_array_mut().unwrap();
            let i = rng.random_range(0..2);
            offs[i] = interesting_u64(rng).into();
            format!("{name} offsets {offs:?}")
        }
        2 => {
            let d = *DTYPES.choose(rng).unwrap();
            entry.insert("dtype".into(), d.into());
            format!("{name} dtype {d}")
        }
        3 => {
            header.remove(&name);
            format!("{name} removed")
        }
        4 => {
            let other = names.choose(rng).unwrap().clone();
            let v = header.remove(&name).unwrap();
            header.insert(other.clone(), v);
            format!("{name} renamed to {other}")
        }
        _ => {
            let shape = entry["shape"].as_array_mut().unwrap();
            shape.reverse();
            format!("{name} shape reversed {shape:?}")
        }
    };
    let mut text = serde_json::to_vec(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&w[8 + header_len..]);
    Case {
        desc,
        config: base.config.clone(),
        weights: out,
        fresh_heads: rng.random(),
    }
}

// ---------------------------------------------------------------- PyTorch zip mutations

/// Opcode starts of a pickle (the opcodes candle reads, with their argument lengths).
fn opcodes(pkl: &[u8]) -> Vec<usize> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < pkl.len() {
        out.push(at);
        let op = pkl[at];
        at += 1 + match op {
            0x80 | b'K' | b'h' | b'q' => 1,
            b'M' => 2,
            b'J' | b'j' | b'r' => 4,
            b'G' => 8,
            b'X' => 4 + u32::from_le_bytes(pkl[at + 1..at + 5].try_into().unwrap()) as usize,
            b'c' => {
                let first = pkl[at + 1..].iter().position(|&b| b == b'\n').unwrap() + 1;
                let second = pkl[at + 1 + first..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap();
                first + second + 1
            }
            0x8a => 1 + pkl[at + 1] as usize,
            _ => 0,
        };
    }
    out
}

const OPS: &[u8] = b"()tRQNaesuhqbd}]\x85\x86\x87\x88\x89\x81.";

fn replace_int(pkl: &mut Vec<u8>, at: usize, v: i64) {
    let len = match pkl[at] {
        b'K' => 2,
        b'M' => 3,
        _ => 5,
    };
    let mut new = Vec::new();
    if let Ok(v32) = i32::try_from(v) {
        new.push(b'J');
        new.extend_from_slice(&v32.to_le_bytes());
    } else {
        new.extend_from_slice(&[0x8a, 8]);
        new.extend_from_slice(&v.to_le_bytes());
    }
    pkl.splice(at..at + len, new);
}

fn mutate_pickle(pkl: &mut Vec<u8>, rng: &mut ChaCha8Rng) -> String {
    let ops = opcodes(pkl);
    match rng.random_range(0..7) {
        0 => {
            let at = rng.random_range(0..pkl.len());
            pkl[at] = rng.random();
            format!("pickle byte {at} = {}", pkl[at])
        }
        1 => {
            let at = *ops.choose(rng).unwrap();
            let op = *OPS.choose(rng).unwrap();
            pkl.insert(at, op);
            format!("opcode 0x{op:02x} inserted at {at}")
        }
        2 => {
            let at = *ops.choose(rng).unwrap();
            pkl.remove(at);
            format!("byte {at} removed")
        }
        3 => {
            let ints: Vec<usize> = ops
                .iter()
                .copied()
                .filter(|&a| matches!(pkl[a], b'K' | b'M' | b'J'))
                .collect();
            let at = *ints.choose(rng).unwrap();
            let v = *[
                0,
                1,
                -1,
                2,
                31,
                33,
                65536,
                i32::MAX as i64,
                i32::MIN as i64,
                1 << 40,
                -(1 << 40),
                i64::MAX,
            ]
            .choose(rng)
            .unwrap();
            replace_int(pkl, at, v);
            format!("int at {at} = {v}")
        }
        4 => {
            let n = rng.random_range(0..pkl.len());
            pkl.truncate(n);
            format!("pickle truncated to {n}")
        }
        5 => {
            // A list doubled through the memo, left below the state dict.
            let rounds = rng.random_range(1..48);
            let mut bomb = vec![b']', b'q', 250];
            for _ in 0..rounds {
                bomb.extend_from_slice(&[b'h', 250, b'a', b'q', 250]);
            }
            pkl.splice(2..2, bomb);
            format!("memo bomb of {rounds} doublings")
        }
        _ => {
            let depth = rng.random_range(1..200);
            let mut nest = vec![b'N'];
            nest.extend(std::iter::repeat_n(0x85, depth));
            pkl.splice(2..2, nest);
            format!("{depth} nested tuples")
        }
    }
}

pub fn mutate_pth(base: &Base, rng: &mut ChaCha8Rng) -> Case {
    let mut entries = read_zip(&fixture("tiny_cls/pytorch_model.bin"));
    let mut raw: Option<Vec<u8>> = None;
    let desc = match rng.random_range(0..6) {
        0..=2 => {
            let pkl = &mut entries
                .iter_mut()
                .find(|(n, _)| n.ends_with("data.pkl"))
                .unwrap()
                .1;
            mutate_pickle(pkl, rng)
        }
        3 => {
            let i = rng.random_range(0..entries.len());
            let (name, data) = &mut entries[i];
            let n = rng.random_range(0..data.len().max(1));
            data.truncate(n);
            format!("{name} truncated to {n}")
        }
        4 => {
            let i = rng.random_range(0..entries.len());
            match rng.random_range(0..3) {
                0 => {
                    let (name, _) = entries.remove(i);
                    format!("{name} removed")
                }
                1 => {
                    let e = entries[i].clone();
                    let name = e.0.clone();
                    entries.push(e);
                    format!("{name} duplicated")
                }
                _ => {
                    let (name, _) = &mut entries[i];
                    let old = name.clone();
                    name.push('x');
                    format!("{old} renamed")
                }
            }
        }
        _ => {
            let mut bytes = base.weights.clone();
            let n = rng.random_range(1..4);
            for _ in 0..n {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
            raw = Some(bytes);
            format!("{n} bit flips in the zip")
        }
    };
    Case {
        desc,
        config: base.config.clone(),
        weights: raw.unwrap_or_else(|| zip_bytes(&entries)),
        fresh_heads: rng.random(),
    }
}

// ---------------------------------------------------------------- config mutations

fn config_value(rng: &mut ChaCha8Rng) -> (String, Option<String>) {
    let pick: &[&str] = &[
        "1000000000000",
        "100000000000000000",
        "576460752303423488",
        "9007199254740993",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "-2147483648",
        "0",
        "1",
        "2",
        "3",
        "8",
        "37",
        "64",
        "99",
        "0.5",
        "1.5",
        "1e12",
        "1e300",
        "-0.0",
        "1e-300",
        "NaN",
        "Infinity",
        "-Infinity",
        "\"12\"",
        "\"\"",
        "null",
        "true",
        "[1]",
        "{}",
        "{\"0\": \"a\"}",
    ];
    let v = if rng.random_bool(0.1) {
        return ("missing".into(), None);
    } else if rng.random_bool(0.2) {
        rng.random_range(0..200).to_string()
    } else {
        pick.choose(rng).unwrap().to_string()
    };
    (v.clone(), Some(v))
}

pub fn mutate_config(base: &Base, rng: &mut ChaCha8Rng) -> Case {
    let text = String::from_utf8(base.config.clone()).unwrap();
    let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut fields: Vec<String> = obj.keys().cloned().collect();
    fields.push("id2label".into());
    let (config, desc) = match rng.random_range(0..10) {
        0 => {
            let mut b = base.config.clone();
            let at = rng.random_range(0..b.len());
            b[at] ^= 1 << rng.random_range(0..8);
            (b, format!("config bit flip at {at}"))
        }
        1 => {
            let n = rng.random_range(0..base.config.len());
            (
                base.config[..n].to_vec(),
                format!("config truncated to {n}"),
            )
        }
        _ => {
            // Rewrite the JSON by hand so invalid literals (NaN, huge ints) survive.
            let field = fields.choose(rng).unwrap().clone();
            let (shown, value) = config_value(rng);
            let mut parts: Vec<String> = obj
                .iter()
                .filter(|(k, _)| **k != field)
                .map(|(k, v)| format!("{k:?}: {v}"))
                .collect();
            if let Some(v) = value {
                parts.push(format!("{field:?}: {v}"));
            }
            let json = format!("{{{}}}", parts.join(", "));
            (json.into_bytes(), format!("{field} = {shown}"))
        }
    };
    Case {
        desc,
        config,
        weights: base.weights.clone(),
        fresh_heads: false,
    }
}
