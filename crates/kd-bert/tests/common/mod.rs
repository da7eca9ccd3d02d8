//! Helpers shared by the parity tests: fixture paths, loading expected tensors, comparing.
#![allow(dead_code)]

pub mod pth;

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

/// `tests/fixtures/<name>` copied into a fresh temporary directory (without the reference
/// outputs, which are not part of a model directory).
pub fn fixture_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    copy_dir(&fixture(name), &dir);
    let _ = std::fs::remove_file(dir.join("expected.safetensors"));
    (tmp, dir)
}

/// Sets one field of `dir/config.json` to `value` (`None` removes it).
pub fn set_config_field(dir: &std::path::Path, field: &str, value: Option<serde_json::Value>) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let obj = cfg.as_object_mut().unwrap();
    match value {
        Some(v) => obj.insert(field.to_string(), v),
        None => obj.remove(field),
    };
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
}

/// Runs `body` in a child copy of this test binary (`test` is the test's name) under a 4 GiB
/// address-space limit and a time limit, so a case that aborts, overflows its stack or
/// exhausts memory fails the test instead of taking the harness (or the machine) down.
pub fn isolated(test: &str, body: impl FnOnce()) {
    const VAR: &str = "KD_ISOLATED_TEST";
    if std::env::var(VAR).as_deref() == Ok(test) {
        body();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let log_file = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4194304; exec \"$0\" \"$@\"")
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(VAR, test)
        .stdout(log_file.reopen().unwrap())
        .stderr(log_file.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(log_file.path()).unwrap_or_default();
    match status {
        Some(s) if s.success() && log.contains("1 passed") => println!("{log}"),
        Some(s) => panic!("{test} in a child process ended with {s}:\n{log}"),
        None => panic!("{test} in a child process ran over 120 s:\n{log}"),
    }
}

/// Runs `f` on a thread and waits at most `secs` seconds for it; `None` when it hangs (the
/// thread is left behind).
pub fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs)).ok()
}
