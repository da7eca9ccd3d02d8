use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};
use kd_train::checkpoint::{step_dir_name, LATEST_FILE, OPTIMIZER_FILE, STATE_FILE, WEIGHTS_FILE};
use kd_train::{
    load_latest, named_vars, AdamW, AdamWConfig, CheckpointManager, Error, Schedule, TrainState,
    TrainerState,
};

fn model(dims: (usize, usize)) -> VarMap {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let init = Init::Randn {
        mean: 0.0,
        stdev: 1.0,
    };
    vb.get_with_hints(dims, "bert.pooler.dense.weight", init)
        .unwrap();
    vb.get_with_hints(dims.0, "bert.pooler.dense.bias", init)
        .unwrap();
    vm
}

fn bits(t: &Tensor) -> Vec<u32> {
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v.iter().map(|x| x.to_bits()).collect()
}

fn trained(vm: &VarMap) -> AdamW {
    let mut opt = AdamW::new(vm, AdamWConfig::default()).unwrap();
    let loss = named_vars(vm)
        .iter()
        .map(|(_, v)| v.as_tensor().sqr().unwrap().sum_all().unwrap())
        .reduce(|a, b| (a + b).unwrap())
        .unwrap();
    opt.step(&loss.backward().unwrap()).unwrap();
    opt
}

fn state_at(step: u64) -> TrainerState {
    let mut train = TrainState::new(11);
    train.step = step;
    train.epoch = 2;
    train.micro_batch = 5;
    let _ = kd_train::dropout_mask(train.rng(), 10, 0.5, DType::F32, &Device::Cpu).unwrap();
    let schedule = Schedule::LinearWarmupDecay {
        warmup_steps: 2,
        total_steps: 100,
    };
    TrainerState::new(
        train,
        schedule,
        serde_json::json!({"best": 0.5, "run": "t"}),
    )
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let vm = model((4, 3));
    let opt = trained(&vm);
    let mgr = CheckpointManager::new(dir.path().join("ckpt"), 3).unwrap();
    let state = state_at(7);
    let path = mgr.save(&vm, &opt, &state).unwrap();
    assert!(path.ends_with("step-000007"));
    for f in [WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE] {
        assert!(path.join(f).is_file(), "{f}");
    }
    let latest = std::fs::read_to_string(mgr.dir().join(LATEST_FILE)).unwrap();
    assert_eq!(latest.trim(), "step-000007");

    let ck = load_latest(mgr.dir(), &Device::Cpu).unwrap().unwrap();
    assert_eq!(ck.state, state);
    for (name, v) in named_vars(&vm) {
        assert_eq!(bits(&ck.weights[&name]), bits(v.as_tensor()), "{name}");
    }
    let saved = opt.state_tensors().unwrap();
    assert_eq!(ck.optimizer.len(), saved.len());
    for (k, t) in &saved {
        assert_eq!(ck.optimizer[k].dims(), t.dims(), "{k}");
        assert_eq!(ck.optimizer[k].dtype(), t.dtype(), "{k}");
    }
    assert_eq!(
        bits(&ck.optimizer["exp_avg_sq.bert.pooler.dense.weight"]),
        bits(&saved["exp_avg_sq.bert.pooler.dense.weight"])
    );

    // Restore into a fresh model and optimizer.
    let fresh = model((4, 3));
    ck.restore_weights(&fresh).unwrap();
    for ((n, a), (_, b)) in named_vars(&vm).iter().zip(named_vars(&fresh).iter()) {
        assert_eq!(bits(a.as_tensor()), bits(b.as_tensor()), "{n}");
    }
    let mut opt2 = AdamW::new(&fresh, AdamWConfig::default()).unwrap();
    ck.restore_optimizer(&mut opt2).unwrap();
    assert_eq!(opt2.num_updates(), 1);
}

#[test]
fn shape_mismatch_and_missing_tensor_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let vm = model((4, 3));
    let mgr = CheckpointManager::new(dir.path(), 2).unwrap();
    mgr.save(&vm, &trained(&vm), &state_at(1)).unwrap();
    let ck = load_latest(dir.path(), &Device::Cpu).unwrap().unwrap();

    let other = model((5, 3));
    let err = ck.restore_weights(&other).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(WEIGHTS_FILE) && msg.contains("shape mismatch"),
        "{msg}"
    );

    let bigger = model((4, 3));
    let vb = VarBuilder::from_varmap(&bigger, DType::F32, &Device::Cpu);
    vb.get_with_hints(2, "cls.predictions.bias", Init::Const(0.0))
        .unwrap();
    let msg = ck.restore_weights(&bigger).unwrap_err().to_string();
    assert!(
        msg.contains("missing tensor `cls.predictions.bias`"),
        "{msg}"
    );
    assert!(msg.contains(WEIGHTS_FILE), "{msg}");

    let mut opt = AdamW::builder(AdamWConfig::default())
        .freeze_when(|n| n.ends_with("bias"))
        .build(&vm)
        .unwrap();
    let msg = ck.restore_optimizer(&mut opt).unwrap_err().to_string();
    assert!(
        msg.contains(OPTIMIZER_FILE) && msg.contains("unexpected"),
        "{msg}"
    );
}

#[test]
fn corrupt_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let vm = model((2, 2));
    let mgr = CheckpointManager::new(dir.path(), 2).unwrap();
    let path = mgr.save(&vm, &trained(&vm), &state_at(3)).unwrap();

    std::fs::write(path.join(STATE_FILE), b"{\"format_version\": 1, ").unwrap();
    let err = load_latest(dir.path(), &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Json { .. }), "{err}");
    assert!(err.to_string().contains(STATE_FILE));

    let path = mgr.save(&vm, &trained(&vm), &state_at(3)).unwrap();
    std::fs::write(path.join(WEIGHTS_FILE), b"garbage").unwrap();
    let msg = load_latest(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(msg.contains(WEIGHTS_FILE), "{msg}");

    let path = mgr.save(&vm, &trained(&vm), &state_at(3)).unwrap();
    std::fs::remove_file(path.join(OPTIMIZER_FILE)).unwrap();
    let msg = load_latest(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(msg.contains(OPTIMIZER_FILE), "{msg}");

    std::fs::write(dir.path().join(LATEST_FILE), "../../etc").unwrap();
    let err = load_latest(dir.path(), &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn keeps_last_k_and_survives_crash() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_latest(dir.path().join("none"), &Device::Cpu)
        .unwrap()
        .is_none());
    assert!(CheckpointManager::new(dir.path(), 0).is_err());
    let mgr = CheckpointManager::new(dir.path(), 2).unwrap();
    assert!(mgr.load_latest(&Device::Cpu).unwrap().is_none());
    let vm = model((3, 2));
    let opt = trained(&vm);
    for step in [10, 20, 30] {
        mgr.save(&vm, &opt, &state_at(step)).unwrap();
    }
    let steps: Vec<u64> = mgr.list().unwrap().into_iter().map(|c| c.0).collect();
    assert_eq!(steps, vec![20, 30]);

    // Simulated crash during the save of step 40: the temp dir holds a
    // partial checkpoint, `latest` still names step 30.
    let tmp = dir.path().join(".tmp-step-40-99999");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::write(tmp.join(WEIGHTS_FILE), b"partial").unwrap();
    std::fs::write(dir.path().join(".latest.tmp-99999"), b"step-0000").unwrap();
    let ck = load_latest(dir.path(), &Device::Cpu).unwrap().unwrap();
    assert_eq!(ck.state.train.step, 30);
    assert!(ck.path.ends_with(step_dir_name(30)));

    // The next save cleans up and moves on.
    mgr.save(&vm, &opt, &state_at(40)).unwrap();
    assert!(!tmp.exists());
    let steps: Vec<u64> = mgr.list().unwrap().into_iter().map(|c| c.0).collect();
    assert_eq!(steps, vec![30, 40]);

    // A `latest` naming a vanished checkpoint falls back to the newest one.
    std::fs::write(dir.path().join(LATEST_FILE), "step-000050\n").unwrap();
    let ck = load_latest(dir.path(), &Device::Cpu).unwrap().unwrap();
    assert_eq!(ck.state.train.step, 40);

    // Re-saving an existing step replaces it.
    mgr.save(&vm, &opt, &state_at(40)).unwrap();
    let ck = load_latest(dir.path(), &Device::Cpu).unwrap().unwrap();
    assert_eq!(ck.state.train.step, 40);
}
