//! Bad inputs return errors that name the shapes or values at fault; nothing panics.

use candle_core::{DType, Device, Tensor};
use kd_distill::*;

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

fn expect_err<T: std::fmt::Debug>(r: Result<T>, parts: &[&str]) {
    let e = r.expect_err("an error").to_string();
    for p in parts {
        assert!(e.contains(p), "error {e:?} lacks {p:?}");
    }
}

#[test]
fn soft_target_shapes_and_values() {
    let cfg = SoftTargetConfig::default();
    expect_err(
        soft_target_full(&zeros(&[4, 10]), &zeros(&[4, 11]), &cfg),
        &["soft_target_full", "[4, 10]", "[4, 11]"],
    );
    expect_err(
        soft_target_full(&zeros(&[2, 4, 10]), &zeros(&[2, 4, 10]), &cfg),
        &["[N, V]", "[2, 4, 10]"],
    );
    expect_err(
        soft_target_full(
            &zeros(&[4, 10]),
            &zeros(&[4, 10]),
            &SoftTargetConfig::new(0.0),
        ),
        &["temperature must be finite and positive"],
    );
    expect_err(
        soft_target_full(&zeros(&[4, 0]), &zeros(&[4, 0]), &cfg),
        &["[4, 0]", "empty vocabulary"],
    );
    let ints = Tensor::zeros((4, 10), DType::U32, &Device::Cpu).unwrap();
    expect_err(
        soft_target_full(&ints, &zeros(&[4, 10]), &cfg),
        &["floating-point"],
    );

    let dev = &Device::Cpu;
    let topk =
        TopKTargets::from_slices(&[1, 2, 3, 9], &[0.0; 4], &[1.0, 1.0], 2, 2.0, dev).unwrap();
    expect_err(
        soft_target_topk(&zeros(&[3, 10]), &topk, TailMode::RestBucket, &cfg),
        &["[3, 10]", "[2, 2]"],
    );
    expect_err(
        soft_target_topk(&zeros(&[2, 8]), &topk, TailMode::RestBucket, &cfg),
        &["teacher id 9 is outside the student vocabulary of 8"],
    );
    expect_err(
        soft_target_topk(
            &zeros(&[2, 10]),
            &topk,
            TailMode::RestBucket,
            &SoftTargetConfig::new(1.0),
        ),
        &[
            "loss temperature 1",
            "temperature 2 of the teacher's log-partition",
        ],
    );
    // Renormalisation does not use the log-partition, so any temperature is fine.
    assert!(soft_target_topk(
        &zeros(&[2, 10]),
        &topk,
        TailMode::Renormalize,
        &SoftTargetConfig::new(1.0)
    )
    .is_ok());
    expect_err(
        TopKTargets::from_slices(&[1, 1, 3, 4], &[0.0; 4], &[1.0, 1.0], 2, 2.0, dev),
        &["position 0: teacher id 1 appears twice"],
    );
    expect_err(
        TopKTargets::from_slices(&[1, 2, 3], &[0.0; 3], &[1.0], 2, 2.0, dev),
        &["3 ids and 3 logits do not form [N, 2] rows"],
    );
    expect_err(
        TopKTargets::from_slices(&[1, 2], &[0.0; 2], &[1.0, 1.0], 2, 2.0, dev),
        &["log-partition shape [2]", "ids [1, 2]"],
    );
    expect_err(
        TopKTargets::from_slices(&[1, 2], &[f32::NAN, 0.0], &[1.0], 2, 2.0, dev),
        &["non-finite teacher top-k logit"],
    );
    let neg = Tensor::new(&[[-1i64, 2]], dev).unwrap();
    expect_err(
        TopKTargets::new(&neg, &zeros(&[1, 2]), &zeros(&[1]), 2.0),
        &["teacher id -1 is not a u32"],
    );

    expect_err(
        SampledTargets::from_slices(&[0, 2, 1], &[1, 2], &[1u16, 1], dev),
        &["offsets must start at 0 and not decrease", "[0, 2, 1]"],
    );
    expect_err(
        SampledTargets::from_slices(&[0, 2], &[1, 2, 3], &[1u16, 1, 1], dev),
        &["offsets end at 2 but there are 3 ids and 3 counts"],
    );
    expect_err(
        SampledTargets::from_slices(&[0, 1, 1], &[1], &[1u16], dev),
        &["position 1 has no sampled tokens"],
    );
    let sampled = SampledTargets::from_slices(&[0, 1], &[12], &[3u16], dev).unwrap();
    expect_err(
        soft_target_sampled(&zeros(&[1, 10]), &sampled, &cfg),
        &["sampled id 12 is outside the student vocabulary of 10"],
    );
    expect_err(
        soft_target_sampled(&zeros(&[2, 20]), &sampled, &cfg),
        &["[2, 20]", "1 positions"],
    );
}

#[test]
fn mlm_labels() {
    let dev = &Device::Cpu;
    let labels = Tensor::new(&[3i64, -100], dev).unwrap();
    expect_err(
        mlm_cross_entropy(&zeros(&[2, 10]), &labels),
        &["label -100 at position 1 is outside the vocabulary of 10"],
    );
    let labels = Tensor::new(&[3u32, 4, 5], dev).unwrap();
    expect_err(
        mlm_cross_entropy(&zeros(&[2, 10]), &labels),
        &["labels shape [3]", "student logits shape [2, 10]"],
    );
    expect_err(
        mlm_cross_entropy(&zeros(&[2, 10]), &zeros(&[2])),
        &["labels must be an integer tensor"],
    );
}

#[test]
fn hidden_and_attention_shapes() {
    let mask = Tensor::ones((2, 5), DType::U32, &Device::Cpu).unwrap();
    expect_err(
        cosine_embedding(&zeros(&[2, 5, 312]), &zeros(&[2, 5, 768]), &mask),
        &["hidden size 312", "768", "projection"],
    );
    expect_err(
        cosine_embedding(&zeros(&[2, 5, 8]), &zeros(&[2, 6, 8]), &mask),
        &["[2, 5, 8]", "[2, 6, 8]"],
    );
    expect_err(
        cosine_embedding(&zeros(&[2, 6, 8]), &zeros(&[2, 6, 8]), &mask),
        &["attention mask shape [2, 5]", "[2, 6, 8]"],
    );
    expect_err(
        hidden_mse(&zeros(&[2, 5, 312]), &zeros(&[2, 5, 768])),
        &["hidden_mse", "312", "768", "Projection"],
    );
    expect_err(
        attention_mse(&zeros(&[2, 12, 5, 5]), &zeros(&[2, 4, 5, 5])),
        &["the student has 12 attention heads and the teacher 4"],
    );
    expect_err(
        attention_mse(&zeros(&[2, 4, 5, 5]), &zeros(&[2, 4, 6, 6])),
        &["[2, 4, 5, 5]", "[2, 4, 6, 6]"],
    );
    expect_err(
        attention_mse(&zeros(&[4, 5, 5]), &zeros(&[4, 5, 5])),
        &["[B, H, L, L]"],
    );
    expect_err(
        logit_mse(&zeros(&[2, 3]), &zeros(&[3, 2])),
        &["[2, 3]", "[3, 2]"],
    );
    expect_err(
        prediction_soft_ce(
            &zeros(&[2, 3]),
            &zeros(&[2, 4]),
            1.0,
            SoftCeReduction::BatchMean,
        ),
        &["[2, 3]", "[2, 4]"],
    );
    expect_err(
        Projection::from_tensors(zeros(&[4, 3]), zeros(&[3])),
        &["[4, 3]", "[3]"],
    );
}

#[test]
fn errors_convert_to_candle_errors() {
    fn in_candle() -> candle_core::Result<Tensor> {
        Ok(logit_mse(&zeros(&[2]), &zeros(&[3]))?)
    }
    let e = in_candle().unwrap_err().to_string();
    assert!(e.contains("logit_mse"), "{e}");
}
