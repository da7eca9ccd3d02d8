//! Gradient accumulation, global-norm clipping and gradient coverage checks.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::params::NamedVar;

/// Sums the gradients of a fixed set of variables over micro-batches.
///
/// With a mean loss per micro-batch and equally sized micro-batches,
/// [`GradAccumulator::finish`] yields the gradient of the mean loss over the
/// whole batch.
pub struct GradAccumulator {
    vars: Vec<NamedVar>,
    sums: Vec<Option<Tensor>>,
    count: usize,
}

impl GradAccumulator {
    /// Accumulator tracking `vars` (e.g. [`crate::AdamW::trainable`]).
    pub fn new(vars: Vec<NamedVar>) -> Self {
        let sums = vec![None; vars.len()];
        Self {
            vars,
            sums,
            count: 0,
        }
    }

    /// Number of micro-batches added since the last [`GradAccumulator::finish`].
    pub fn micro_batches(&self) -> usize {
        self.count
    }

    /// True when no micro-batch has been added since the last finish.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds the gradients of one micro-batch. Variables without a gradient in
    /// `grads` contribute zero.
    pub fn add(&mut self, grads: &GradStore) -> Result<()> {
        for ((_, var), sum) in self.vars.iter().zip(self.sums.iter_mut()) {
            if let Some(g) = grads.get(var.as_tensor()) {
                let g = g.detach();
                *sum = Some(match sum.take() {
                    Some(s) => (s + g)?,
                    None => g,
                });
            }
        }
        self.count += 1;
        Ok(())
    }

    /// Returns the summed gradients scaled by `1 / micro_batches` and resets
    /// the accumulator. Errors when nothing was added.
    pub fn finish(&mut self) -> Result<GradStore> {
        if self.count == 0 {
            return Err(Error::InvalidConfig(
                "no micro-batch gradients to finish".into(),
            ));
        }
        let scale = 1.0 / self.count as f64;
        self.finish_scaled(scale)
    }

    /// Returns the summed gradients multiplied by `scale` and resets the
    /// accumulator (for micro-batches of unequal weight).
    pub fn finish_scaled(&mut self, scale: f64) -> Result<GradStore> {
        let mut store = GradStore::default();
        for ((_, var), sum) in self.vars.iter().zip(self.sums.iter_mut()) {
            if let Some(s) = sum.take() {
                let g = if scale == 1.0 { s } else { (s * scale)? };
                store.insert(var.as_tensor(), g);
            }
        }
        self.count = 0;
        Ok(store)
    }
}

/// Clips the gradients of `vars` in place to a global L2 norm of at most
/// `max_norm`, with `torch.nn.utils.clip_grad_norm_` semantics: the total norm
/// is taken over all gradients together and, when `max_norm / (norm + 1e-6)`
/// is below 1, every gradient is multiplied by it. Returns the norm before
/// clipping. A non-finite norm is returned as is and leaves the gradients
/// unchanged, so the caller can skip the step.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[NamedVar], max_norm: f64) -> Result<f64> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(Error::InvalidConfig(format!(
            "max_norm must be finite and > 0, got {max_norm}"
        )));
    }
    let norm = global_norm(grads, vars)?;
    let coef = max_norm / (norm + 1e-6);
    if norm.is_finite() && coef < 1.0 {
        for (_, var) in vars {
            if let Some(g) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (g * coef)?);
            }
        }
    }
    Ok(norm)
}

/// Global L2 norm of the gradients of `vars` present in `grads` (0 when none
/// is present). Accumulated in `f32` on each gradient's device with a single
/// host transfer per device.
pub fn global_norm(grads: &GradStore, vars: &[NamedVar]) -> Result<f64> {
    let mut partials: Vec<Tensor> = Vec::new();
    for (_, var) in vars {
        let Some(g) = grads.get(var.as_tensor()) else {
            continue;
        };
        let sq = g.to_dtype(DType::F32)?.sqr()?.sum_all()?;
        match partials
            .iter_mut()
            .find(|p| p.device().same_device(sq.device()))
        {
            Some(p) => *p = (&*p + sq)?,
            None => partials.push(sq),
        }
    }
    let mut total = 0f64;
    for p in partials {
        total += p.to_scalar::<f32>()? as f64;
    }
    Ok(total.sqrt())
}

/// Names of the variables in `vars` whose gradient is absent from `grads` or
/// is identically zero, in the order of `vars`. Used by tests asserting that
/// every trainable parameter receives a gradient.
pub fn missing_or_zero_grads(grads: &GradStore, vars: &[NamedVar]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (name, var) in vars {
        let zero = match grads.get(var.as_tensor()) {
            None => true,
            Some(g) => {
                let nonzero = g.ne(0.0)?.to_dtype(DType::F32)?.sum_all()?;
                nonzero.to_scalar::<f32>()? == 0.0
            }
        };
        if zero {
            out.push(name.clone());
        }
    }
    Ok(out)
}
