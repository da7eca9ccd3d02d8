//! Named parameter helpers over a [`VarMap`].

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use candle_nn::VarMap;

use crate::error::{Error, Result};

/// A parameter together with its Hugging Face style name.
pub type NamedVar = (String, Var);

/// All variables of `varmap` with their names, sorted by name so that
/// iteration order is deterministic.
pub fn named_vars(varmap: &VarMap) -> Vec<NamedVar> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut vars: Vec<NamedVar> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Current values of all variables of `varmap`, keyed by name.
pub fn snapshot(varmap: &VarMap) -> HashMap<String, Tensor> {
    named_vars(varmap)
        .into_iter()
        .map(|(name, var)| (name, var.as_detached_tensor()))
        .collect()
}

/// Sets every variable of `varmap` from `tensors`.
///
/// Every variable must be present with the same shape; values are converted
/// to the variable's dtype and device. Tensors without a matching variable are
/// ignored unless `strict` is set, in which case they are an error.
pub fn restore(varmap: &VarMap, tensors: &HashMap<String, Tensor>, strict: bool) -> Result<()> {
    let vars = named_vars(varmap);
    for (name, var) in &vars {
        let src = tensors
            .get(name)
            .ok_or_else(|| Error::MissingTensor { name: name.clone() })?;
        check_shape(name, var.dims(), src.dims())?;
        let value = src.to_dtype(var.dtype())?.to_device(var.device())?;
        var.set(&value)?;
    }
    if strict {
        let mut extra: Vec<&String> = tensors
            .keys()
            .filter(|k| !vars.iter().any(|(n, _)| n == *k))
            .collect();
        extra.sort();
        if let Some(name) = extra.first() {
            return Err(Error::UnexpectedTensor {
                name: (*name).clone(),
            });
        }
    }
    Ok(())
}

/// Returns [`Error::ShapeMismatch`] when `found` differs from `expected`.
pub(crate) fn check_shape(name: &str, expected: &[usize], found: &[usize]) -> Result<()> {
    if expected != found {
        return Err(Error::ShapeMismatch {
            name: name.to_string(),
            expected: expected.to_vec(),
            found: found.to_vec(),
        });
    }
    Ok(())
}
