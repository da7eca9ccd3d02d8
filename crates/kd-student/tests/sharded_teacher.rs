//! A teacher stored as two shards and an index: students train against the cache it wrote,
//! and a change to one of its shards (the index untouched) fails the cache's teacher check.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use kd_student::distil::{train_student, DistilConfig, StudentSpec};
use kd_train::LoopConfig;

#[test]
fn a_changed_shard_fails_the_teacher_check() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("teacher"));
    let shards = shard_model(&model);
    write_cache(&tmp.path().join("cache"), &model, &Synth::default());
    let cfg = |out: &str| DistilConfig {
        cache: tmp.path().join("cache"),
        student: StudentSpec {
            teacher: Some(model.clone()),
            layers: vec![1],
            ..StudentSpec::default()
        },
        out: tmp.path().join(out),
        batch_size: 4,
        train: LoopConfig {
            max_steps: Some(1),
            ..LoopConfig::default()
        },
        ..DistilConfig::default()
    };
    let report = train_student(&cfg("a"), &Device::Cpu).unwrap();
    assert_eq!(report.steps, 1);

    // One value of the second shard changed; the index and the first shard as they were.
    let mut t = candle_core::safetensors::load(&shards[1], &Device::Cpu).unwrap();
    let name = t.keys().min().unwrap().clone();
    let mut v: Vec<f32> = t[&name].flatten_all().unwrap().to_vec1().unwrap();
    v[0] += 0.5;
    let changed = Tensor::from_vec(v, t[&name].shape(), &Device::Cpu).unwrap();
    t.insert(name, changed);
    candle_core::safetensors::save(&t, &shards[1]).unwrap();
    let err = match train_student(&cfg("b"), &Device::Cpu) {
        Ok(_) => panic!("a student of a changed teacher trained on its old cache"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("teacher weights"), "{err}");
}
