//! The training loop stops on a non-finite loss with a message and keeps the last good
//! checkpoint.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};
use kd_train::{
    load_latest, run_training, AdamW, AdamWConfig, Error, LoopConfig, MicroBatch, TrainTask,
};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Least squares on one weight; the input of micro-batch `bad` is NaN.
struct Task {
    w: Tensor,
    bad: usize,
}

impl TrainTask for Task {
    fn epoch_batches(&mut self, _epoch: u64) -> kd_train::Result<Vec<Vec<usize>>> {
        Ok((0..8).map(|i| vec![i]).collect())
    }

    fn micro_batch(
        &mut self,
        _index: usize,
        batch: &[usize],
        _rng: &mut ChaCha8Rng,
    ) -> kd_train::Result<MicroBatch> {
        let x = if batch[0] == self.bad {
            f32::NAN
        } else {
            1.0 + batch[0] as f32
        };
        let x = Tensor::new(&[x], &Device::Cpu)?;
        let loss = self.w.mul(&x)?.affine(1.0, -3.0)?.sqr()?.sum_all()?;
        Ok(MicroBatch {
            loss,
            terms: BTreeMap::new(),
            tokens: 1,
        })
    }
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let w = vb.get_with_hints(1, "w", Init::Const(0.5)).unwrap();
    let mut opt = AdamW::new(
        &varmap,
        AdamWConfig {
            lr: 0.1,
            ..AdamWConfig::default()
        },
    )
    .unwrap();
    let cfg = LoopConfig {
        checkpoint_every: 1,
        log_every: 1,
        ..LoopConfig::default()
    };
    let mut task = Task { w, bad: 5 };
    let err =
        run_training(&mut task, &varmap, &mut opt, &cfg, dir.path(), &Device::Cpu).unwrap_err();
    match &err {
        Error::NonFinite { what, step, .. } => {
            assert_eq!(*what, "loss");
            assert_eq!(*step, 5, "five good steps before the NaN batch");
        }
        other => panic!("expected a non-finite error, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("non-finite loss") && msg.contains("checkpoint"),
        "{msg}"
    );
    let ck = load_latest(dir.path().join("checkpoints"), &Device::Cpu)
        .unwrap()
        .unwrap();
    assert_eq!(ck.state.train.step, 5);
    let w = ck.weights["w"].to_vec1::<f32>().unwrap()[0];
    assert!(
        w.is_finite() && w != 0.5,
        "the kept weights are the trained, finite ones: {w}"
    );
}
