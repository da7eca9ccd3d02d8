//! Parsing of the global `--device` flag.

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// Opens the device named by `spec`: `cpu`, `cuda` (same as `cuda:0`) or `cuda:N`.
///
/// CUDA devices are only available when kd is built with the `cuda` feature; otherwise asking
/// for one is an error that says how to rebuild.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("cpu") {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.to_ascii_lowercase().as_str() {
        "cuda" => 0,
        s => match s.strip_prefix("cuda:") {
            Some(n) => n.parse::<usize>().with_context(|| {
                format!("invalid --device {spec:?}: {n:?} is not a GPU index (use cuda:N)")
            })?,
            None => bail!("invalid --device {spec:?} (expected cpu, cuda or cuda:N)"),
        },
    };
    open_cuda(ordinal)
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal).with_context(|| format!("cannot open CUDA device cuda:{ordinal}"))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device> {
    bail!(
        "--device cuda:{ordinal}: this kd binary was built without CUDA support \
         (rebuild with `cargo build --release --features cuda`)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_junk() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("CPU").unwrap().is_cpu());
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("tpu") && e.contains("cuda:N"), "{e}");
        let e = format!("{:#}", parse_device("cuda:x").unwrap_err());
        assert!(e.contains("not a GPU index"), "{e}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_needs_the_feature() {
        let e = parse_device("cuda:0").unwrap_err().to_string();
        assert!(e.contains("without CUDA support"), "{e}");
    }
}
