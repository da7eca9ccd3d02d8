//! Helpers shared by the parity tests: fixture paths, loading expected tensors, comparing.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use kd_bert::BertInput;
use std::collections::HashMap;
use std::path::PathBuf;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..")
}

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// An offline asset directory (`KD_ASSETS` or `assets/`); panics with the fetch command when
/// absent, since CI fetches the assets before running the tests.
pub fn asset(name: &str) -> PathBuf {
    let root = std::env::var_os("KD_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("assets"));
    let p = root.join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-assets.sh first",
        p.display()
    );
    p
}

/// All tensors of an expected-output file.
pub fn expected(path: PathBuf) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The model input stored in an expected-output file.
pub fn input(exp: &HashMap<String, Tensor>) -> BertInput {
    let get = |k: &str| exp[k].to_dtype(DType::U32).unwrap();
    BertInput {
        input_ids: get("input_ids"),
        token_type_ids: Some(get("token_type_ids")),
        attention_mask: Some(get("attention_mask")),
    }
}

/// Max |a - b| over all elements (shapes must agree).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    a.to_dtype(DType::F32)
        .unwrap()
        .sub(&b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Asserts `max |a - b| <= tol` and returns the error for reporting.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) -> f32 {
    let err = max_abs_diff(a, b);
    println!("{what}: max abs err {err:.3e}");
    assert!(err <= tol, "{what}: max abs err {err} > {tol}");
    err
}

/// Copies the plain files of `src` into `dst` (created if needed).
pub fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }
}

/// Runs `f`, asserting that it neither panics nor succeeds, and returns its error.
pub fn expect_err<T>(what: &str, f: impl FnOnce() -> kd_bert::Result<T>) -> kd_bert::Error {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(_)) => panic!("{what}: expected an error, got Ok"),
        Ok(Err(e)) => {
            println!("{what}: {e}");
            e
        }
        Err(_) => panic!("{what}: panicked instead of returning an error"),
    }
}

/// Every parameter of a model as raw f32 bits, by name.
pub fn param_bits(varmap: &candle_nn::VarMap) -> std::collections::BTreeMap<String, Vec<u32>> {
    let vars = varmap.data().lock().unwrap();
    vars.iter()
        .map(|(name, var)| {
            let values = var
                .as_tensor()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (name.clone(), values.iter().map(|v| v.to_bits()).collect())
        })
        .collect()
}
