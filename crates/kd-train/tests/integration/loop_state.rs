use candle_core::{DType, Device, Tensor};
use kd_train::{dropout, dropout_mask, epoch_order, Progress, TrainState};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[test]
fn epoch_order_is_a_seeded_permutation() {
    let a = epoch_order(42, 0, 100);
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    assert_eq!(a, epoch_order(42, 0, 100));
    assert_ne!(a, epoch_order(42, 1, 100));
    assert_ne!(a, epoch_order(43, 0, 100));
    assert!(epoch_order(1, 0, 0).is_empty());
    assert_eq!(epoch_order(1, 0, 1), vec![0]);
}

#[test]
fn remaining_batches_skip_consumed() {
    let mut st = TrainState::new(7);
    let all = st.remaining_batches(10, 3, false).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[3].1.len(), 1);
    assert_eq!(st.remaining_batches(10, 3, true).unwrap().len(), 3);
    st.advance_micro_batch();
    st.advance_micro_batch();
    let rest = st.remaining_batches(10, 3, false).unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0], all[2]);
    assert!(st.remaining_batches(10, 0, false).is_err());
    st.next_epoch();
    assert_eq!((st.epoch, st.micro_batch), (1, 0));
}

#[test]
fn train_state_serde_roundtrip_keeps_rng_stream() {
    let mut st = TrainState::new(3);
    let _ = dropout_mask(st.rng(), 17, 0.5, DType::F32, &Device::Cpu).unwrap();
    st.advance_step();
    let json = serde_json::to_string(&st).unwrap();
    let mut back: TrainState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, st);
    let m1 = dropout_mask(st.rng(), 64, 0.3, DType::F32, &Device::Cpu).unwrap();
    let m2 = dropout_mask(back.rng(), 64, 0.3, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(m1.to_vec1::<f32>().unwrap(), m2.to_vec1::<f32>().unwrap());
}

#[test]
fn dropout_mask_statistics() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let m = dropout_mask(&mut rng, (100, 100), 0.1, DType::F32, &Device::Cpu).unwrap();
    let v = m.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let zeros = v.iter().filter(|x| **x == 0.0).count() as f64 / v.len() as f64;
    assert!((zeros - 0.1).abs() < 0.01, "{zeros}");
    let keep = 1.0f32 / 0.9;
    assert!(v.iter().all(|x| *x == 0.0 || *x == keep));
    assert!(dropout_mask(&mut rng, 3, 1.0, DType::F32, &Device::Cpu).is_err());
    let xs = Tensor::ones(5, DType::F32, &Device::Cpu).unwrap();
    let same = dropout(&mut rng, &xs, 0.0).unwrap();
    assert_eq!(same.to_vec1::<f32>().unwrap(), vec![1.0; 5]);
}

#[test]
fn progress_hidden_still_counts() {
    let p = Progress::hidden(10);
    assert!(p.is_hidden());
    p.set_position(3);
    p.inc(2);
    p.set_message("loss 1.23");
    assert_eq!(p.position(), 5);
    p.finish();
    // Not a terminal under the test harness (or disabled by env): hidden.
    let q = Progress::new(5, "train");
    if !kd_train::progress_enabled() {
        assert!(q.is_hidden());
    }
    q.inc(1);
    assert_eq!(q.position(), 1);
}
