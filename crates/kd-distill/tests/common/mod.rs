//! Helpers shared by the tests: fixtures, gradients, comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};

/// All tensors of `tests/fixtures/losses/<name>`.
pub fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = PathBuf::from(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../tests/fixtures/losses")
    .join(name);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fixture tensor by name.
pub fn get(f: &HashMap<String, Tensor>, name: &str) -> Tensor {
    f.get(name)
        .unwrap_or_else(|| panic!("fixture tensor {name} missing"))
        .clone()
}

/// A fixture integer tensor as `u32`.
pub fn get_u32(f: &HashMap<String, Tensor>, name: &str) -> Tensor {
    get(f, name).to_dtype(DType::U32).unwrap()
}

/// A fixture integer tensor as a `u32` vector.
pub fn get_u32_vec(f: &HashMap<String, Tensor>, name: &str) -> Vec<u32> {
    get_u32(f, name).flatten_all().unwrap().to_vec1().unwrap()
}

/// The loss value and its gradients with respect to `vars`.
pub fn value_and_grads(vars: &[&Var], loss: &Tensor) -> (f64, Vec<Tensor>) {
    let value = loss
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let grads = loss.backward().unwrap();
    let g = vars
        .iter()
        .map(|v| {
            grads
                .get(v.as_tensor())
                .expect("the loss has a gradient w.r.t. the input")
                .clone()
        })
        .collect();
    (value, g)
}

/// Max over elements of `|a − b| / max(1, |b|)`: absolute error for small values, relative
/// for larger ones.
pub fn max_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
    let b = b.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
    let (a, b) = (a.to_vec1::<f64>().unwrap(), b.to_vec1::<f64>().unwrap());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max)
}

/// Asserts `max_err(a, b) <= tol`, printing the error.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f64) -> f64 {
    let err = max_err(a, b);
    println!("{what}: max err {err:.3e}");
    assert!(err <= tol, "{what}: max err {err:.3e} > {tol:.1e}");
    err
}

/// Asserts a scalar is within `tol` of `expected` (relative above 1).
pub fn assert_scalar(what: &str, value: f64, expected: f64, tol: f64) -> f64 {
    let err = (value - expected).abs() / expected.abs().max(1.0);
    println!("{what}: {value} vs {expected}, err {err:.3e}");
    assert!(
        err <= tol,
        "{what}: {value} vs {expected}, err {err:.3e} > {tol:.1e}"
    );
    err
}

/// A trainable copy of `t`.
pub fn var(t: &Tensor) -> Var {
    Var::from_tensor(t).unwrap()
}

/// The scalar value of a fixture tensor.
pub fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .unwrap()
        .reshape(())
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}
