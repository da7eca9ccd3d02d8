//! Integration tests of kd-train (one binary to keep link time low).

mod checkpoint;
mod grads;
mod loop_state;
mod metrics;
mod optim;
mod resume;
mod schedule;
mod trainer;

use candle_core::{Device, Tensor, Var};

/// A float var on the CPU from a slice.
pub fn var(values: &[f32]) -> Var {
    Var::from_tensor(&Tensor::new(values, &Device::Cpu).unwrap()).unwrap()
}

/// Values of a 1-D or scalar tensor as f64.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(candle_core::DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// Asserts element-wise closeness.
pub fn assert_close(actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol, "element {i}: {a} vs {e} (tol {tol})");
    }
}
