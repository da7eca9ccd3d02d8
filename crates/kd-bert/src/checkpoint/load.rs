//! Loading checkpoint tensors into a model's variables with a clear mismatch report.

use super::names::{canonical_name, is_known_head, Mapped};
use super::read::TensorMeta;
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

/// How a checkpoint's tensors map onto a model's parameters.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Parameter name and the checkpoint name of the tensor that fills it.
    pub assign: Vec<(String, String)>,
    /// Fresh and ignored tensors.
    pub report: LoadReport,
    /// Missing, unexpected, wrongly shaped or typed tensors, one line each.
    pub problems: Vec<String>,
}

/// Matches checkpoint tensors (names as found in the checkpoint, with shape and dtype) with
/// model parameters (canonical name and shape), without touching any data.
///
/// Names are mapped with [`canonical_name`]. A model parameter missing from the checkpoint is a
/// problem unless `fresh_ok(name)` allows it (it is then listed in [`LoadReport::initialized`]);
/// a checkpoint tensor that matches no parameter is a problem unless it is a parameter of a head
/// the model does not have ([`is_known_head`]); a parameter's tensor must have its shape and a
/// floating-point dtype.
pub(crate) fn plan(
    params: &BTreeMap<String, Vec<usize>>,
    tensors: &BTreeMap<String, TensorMeta>,
    fresh_ok: &dyn Fn(&str) -> bool,
) -> Plan {
    let mut plan = Plan::default();
    let mut by_name: BTreeMap<String, (&String, &TensorMeta)> = BTreeMap::new();
    for (orig, t) in tensors {
        match canonical_name(orig) {
            Mapped::Param(n) => {
                if let std::collections::btree_map::Entry::Vacant(e) = by_name.entry(n.clone()) {
                    e.insert((orig, t));
                } else {
                    plan.report
                        .ignored
                        .push((orig.clone(), format!("duplicate of {n}")));
                }
            }
            Mapped::Ignored(why) => plan.report.ignored.push((orig.clone(), why.to_string())),
        }
    }
    for (name, dims) in params {
        match by_name.remove(name) {
            Some((orig, t)) if &t.shape != dims => plan.problems.push(format!(
                "shape mismatch  {orig}: checkpoint {:?}, model {dims:?}",
                t.shape
            )),
            Some((orig, t)) if !t.is_float => plan.problems.push(format!(
                "wrong dtype     {orig}: checkpoint {}, a floating-point type is needed",
                t.dtype
            )),
            Some((orig, _)) => plan.assign.push((name.clone(), orig.clone())),
            None if fresh_ok(name) => plan.report.initialized.push(name.clone()),
            None => plan
                .problems
                .push(format!("missing         {name} {dims:?}")),
        }
    }
    for (name, (orig, t)) in by_name {
        if is_known_head(&name) {
            plan.report
                .ignored
                .push((orig.clone(), "head not used by this model".into()));
        } else {
            plan.problems
                .push(format!("unexpected      {orig} {:?}", t.shape));
        }
    }
    plan
}

/// Copies `tensors` (names as found in the checkpoint) into the variables of `varmap`.
///
/// Tensors are matched with parameters as [`Checkpoint`](super::Checkpoint) loading does:
/// names are mapped with [`canonical_name`]; a model parameter missing from the checkpoint is an
/// error unless `fresh_ok(name)` allows it (it then keeps its initial value and is listed in
/// [`LoadReport::initialized`]); a checkpoint tensor that matches no parameter is an error unless
/// it is a parameter of a head the model does not have; a parameter's tensor must have its shape
/// and a floating-point dtype. All problems are gathered into one [`Error::Mismatch`] naming each
/// tensor with its shape.
pub fn load_into_varmap(
    varmap: &VarMap,
    tensors: BTreeMap<String, Tensor>,
    source: &Path,
    fresh_ok: &dyn Fn(&str) -> bool,
) -> Result<LoadReport> {
    let metas: BTreeMap<String, TensorMeta> = tensors
        .iter()
        .map(|(n, t)| {
            let meta = TensorMeta {
                shape: t.dims().to_vec(),
                dtype: format!("{:?}", t.dtype()),
                is_float: t.dtype().is_float(),
            };
            (n.clone(), meta)
        })
        .collect();
    let vars = varmap.data().lock().expect("varmap lock poisoned");
    let params: BTreeMap<String, Vec<usize>> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.dims().to_vec()))
        .collect();
    let plan = plan(&params, &metas, fresh_ok);
    if !plan.problems.is_empty() {
        return Err(Error::Mismatch {
            path: source.to_path_buf(),
            report: plan.problems.join("\n"),
        });
    }
    for (name, orig) in &plan.assign {
        let var = &vars[name];
        let t = tensors[orig]
            .to_dtype(var.dtype())?
            .to_device(var.device())?;
        var.set(&t)?;
    }
    Ok(plan.report)
}
