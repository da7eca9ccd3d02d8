//! Learned projections of student states to the teacher's width (TinyBERT's `W_e`, `W_h`):
//! parameters of the run, not of the student model. They live in the student's `VarMap` under
//! [`PREFIX`] (so the optimizer trains them and checkpoints save and restore them), are drawn
//! from the run's seed, and are written beside the student as `projections.safetensors`,
//! outside the directory transformers loads.

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use kd_distill::Projection;
use std::collections::BTreeMap;
use std::path::Path;

/// Name prefix of every projection parameter.
pub const PREFIX: &str = "distill.";

/// File the projections are saved to, beside the student's directory.
pub const FILE: &str = "projections.safetensors";

/// The parameter prefix of the projection of loss entry `entry` (0-based) at student layer
/// `layer`: `distill.loss<entry>.<kind>.layer<layer>`.
pub fn name(entry: usize, kind: &str, layer: usize) -> String {
    format!("{PREFIX}loss{entry}.{kind}.layer{layer}")
}

/// Creates the projection `name` (`weight` `[teacher_dim, student_dim]`, `bias`) in `varmap`,
/// initialised as BERT's linear layers from `seed` (weight ~ N(0, 0.02) drawn from the seeded
/// ChaCha stream of its name, bias 0). An existing projection of another shape is refused.
pub fn create(
    varmap: &VarMap,
    name: &str,
    student_dim: usize,
    teacher_dim: usize,
    seed: u64,
    device: &Device,
) -> Result<Projection> {
    {
        let vars = varmap.data().lock().expect("varmap lock poisoned");
        if let Some(w) = vars.get(&format!("{name}.weight")) {
            if w.dims() != [teacher_dim, student_dim] {
                return Err(Error::Config(format!(
                    "projection {name}: it exists with shape {:?}, the run needs \
                     [{teacher_dim}, {student_dim}]",
                    w.dims()
                )));
            }
        }
    }
    let vb = VarBuilder::from_varmap(varmap, DType::F32, device).pp(name);
    let p = Projection::new(vb, student_dim, teacher_dim)?;
    let names = [format!("{name}.weight"), format!("{name}.bias")];
    kd_bert::init::init_params(varmap, &names, seed)?;
    Ok(p)
}

/// Writes every projection parameter of `varmap` to `path` (safetensors, atomically); nothing
/// is written when there is none.
pub fn save(varmap: &VarMap, path: &Path) -> Result<()> {
    let tensors: BTreeMap<String, Tensor> = varmap
        .data()
        .lock()
        .expect("varmap lock poisoned")
        .iter()
        .filter(|(n, _)| n.starts_with(PREFIX))
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    if tensors.is_empty() {
        return Ok(());
    }
    let bytes = safetensors::tensor::serialize(
        tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect::<Vec<_>>(),
        None,
    )
    .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    kd_core::fs::write_atomic(path, &bytes)?;
    Ok(())
}
