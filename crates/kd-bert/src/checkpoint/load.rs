//! Loading checkpoint tensors into a model's variables with a clear mismatch report.

use super::names::{canonical_name, is_head, Mapped};
use crate::error::{Error, Result};
use candle_core::Tensor;
use candle_nn::VarMap;
use std::collections::BTreeMap;
use std::path::Path;

/// What loading did beyond copying matching tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Model parameters absent from the checkpoint that were freshly initialised.
    pub initialized: Vec<String>,
    /// Checkpoint tensors that were not loaded, with the reason.
    pub ignored: Vec<(String, String)>,
}

/// Copies `tensors` (names as found in the checkpoint) into the variables of `varmap`.
///
/// Names are mapped with [`canonical_name`]. A model parameter missing from the checkpoint is an
/// error unless `fresh_ok(name)` allows it (it then keeps its initial value and is listed in
/// [`LoadReport::initialized`]); a checkpoint tensor that matches no parameter is an error unless
/// it belongs to a head the model does not have. All problems are gathered into one
/// [`Error::Mismatch`] naming each tensor with its shape.
pub fn load_into_varmap(
    varmap: &VarMap,
    tensors: BTreeMap<String, Tensor>,
    source: &Path,
    fresh_ok: &dyn Fn(&str) -> bool,
) -> Result<LoadReport> {
    let mut report = LoadReport::default();
    let mut by_name: BTreeMap<String, (String, Tensor)> = BTreeMap::new();
    for (orig, t) in tensors {
        match canonical_name(&orig) {
            Mapped::Param(n) => {
                if let std::collections::btree_map::Entry::Vacant(e) = by_name.entry(n.clone()) {
                    e.insert((orig, t));
                } else {
                    report.ignored.push((orig, format!("duplicate of {n}")));
                }
            }
            Mapped::Ignored(why) => report.ignored.push((orig, why.to_string())),
        }
    }
    let mut problems = Vec::new();
    let vars = varmap.data().lock().expect("varmap lock poisoned");
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        match by_name.remove(name) {
            Some((orig, t)) => {
                if t.dims() != var.dims() {
                    problems.push(format!(
                        "shape mismatch  {orig}: checkpoint {:?}, model {:?}",
                        t.dims(),
                        var.dims()
                    ));
                    continue;
                }
                let t = t.to_dtype(var.dtype())?.to_device(var.device())?;
                var.set(&t)?;
            }
            None if fresh_ok(name) => report.initialized.push(name.clone()),
            None => problems.push(format!("missing         {name} {:?}", var.dims())),
        }
    }
    for (name, (orig, t)) in by_name {
        if is_head(&name) {
            report
                .ignored
                .push((orig, "head not used by this model".into()));
        } else {
            problems.push(format!("unexpected      {orig} {:?}", t.dims()));
        }
    }
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(Error::Mismatch {
            path: source.to_path_buf(),
            report: problems.join("\n"),
        })
    }
}
