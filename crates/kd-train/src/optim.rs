//! AdamW with decoupled weight decay, parameter groups, frozen parameters and
//! exportable state.
//!
//! The update follows `torch.optim.AdamW` (with `amsgrad=False`):
//!
//! ```text
//! p  <- p * (1 - lr * wd)                 (decay group only)
//! m  <- b1 * m + (1 - b1) * g
//! v  <- b2 * v + (1 - b2) * g^2
//! p  <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//! ```
//!
//! where `t` counts the updates a parameter has received (parameters without
//! a gradient in a step are skipped, as in torch). Moments of `f16`/`bf16`
//! parameters are kept in `f32`; other parameters use their own dtype.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::params::{check_shape, named_vars, NamedVar};

/// Name of the scalar holding the number of optimizer steps in exported state.
pub const NUM_UPDATES_KEY: &str = "num_updates";

/// True for parameters that conventionally get no weight decay in BERT
/// training: names ending in `.bias` or containing `LayerNorm`.
pub fn is_no_decay(name: &str) -> bool {
    name.ends_with(".bias") || name == "bias" || name.contains("LayerNorm")
}

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Learning rate; usually overwritten each step with [`AdamW::set_lr`].
    pub lr: f64,
    /// Exponential decay rate of the first moment.
    pub beta1: f64,
    /// Exponential decay rate of the second moment.
    pub beta2: f64,
    /// Term added to the denominator for numerical stability.
    pub eps: f64,
    /// Decoupled weight decay coefficient for the decay group.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// Hugging Face Trainer defaults: lr 5e-5, betas (0.9, 0.999), eps 1e-8,
    /// weight decay 0.01.
    fn default() -> Self {
        Self {
            lr: 5e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamWConfig {
    /// Checks that every value is finite and in range.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidConfig(format!("AdamW {what}")));
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("lr must be finite and >= 0");
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("betas must be in [0, 1)");
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad("eps must be finite and >= 0");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay must be finite and >= 0");
        }
        Ok(())
    }
}

/// Name predicate used to select parameters.
pub type NamePredicate = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Builder choosing the decay group and the frozen parameters of an [`AdamW`].
pub struct AdamWBuilder {
    config: AdamWConfig,
    decay: NamePredicate,
    frozen: NamePredicate,
}

impl AdamWBuilder {
    /// Replaces the decay predicate (default: `!is_no_decay(name)`).
    pub fn decay_when(mut self, f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.decay = Box::new(f);
        self
    }

    /// Freezes the parameters for which `f(name)` is true: they receive no
    /// update and have no optimizer state. Calling it again replaces the
    /// previous predicate.
    pub fn freeze_when(mut self, f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.frozen = Box::new(f);
        self
    }

    /// Builds the optimizer over every variable of `varmap`.
    pub fn build(self, varmap: &VarMap) -> Result<AdamW> {
        self.build_named(named_vars(varmap))
    }

    /// Builds the optimizer over explicitly named variables. Non-float
    /// variables are treated as frozen.
    pub fn build_named(self, vars: impl IntoIterator<Item = NamedVar>) -> Result<AdamW> {
        self.config.validate()?;
        let mut vars: Vec<NamedVar> = vars.into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = vars.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::InvalidConfig(format!(
                "parameter `{}` given twice",
                w[0].0
            )));
        }
        let mut params = Vec::new();
        let mut frozen = Vec::new();
        for (name, var) in vars {
            if (self.frozen)(&name) || !var.dtype().is_float() {
                frozen.push(name);
                continue;
            }
            let dtype = state_dtype(var.dtype());
            let m = Tensor::zeros(var.shape(), dtype, var.device())?;
            // Separate storage: the fused update writes the moments in place.
            let v = Tensor::zeros(var.shape(), dtype, var.device())?;
            params.push(Param {
                decay: (self.decay)(&name),
                name,
                var,
                m,
                v,
                step: 0,
            });
        }
        Ok(AdamW {
            config: self.config,
            params,
            frozen,
            num_updates: 0,
        })
    }
}

struct Param {
    name: String,
    var: Var,
    decay: bool,
    m: Tensor,
    v: Tensor,
    step: u64,
}

/// AdamW optimizer over named variables.
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<Param>,
    frozen: Vec<String>,
    num_updates: u64,
}

impl AdamW {
    /// Starts a builder with the default decay predicate and no frozen
    /// parameters.
    pub fn builder(config: AdamWConfig) -> AdamWBuilder {
        AdamWBuilder {
            config,
            decay: Box::new(|n| !is_no_decay(n)),
            frozen: Box::new(|_| false),
        }
    }

    /// Optimizer over every variable of `varmap` with the default groups.
    pub fn new(varmap: &VarMap, config: AdamWConfig) -> Result<Self> {
        Self::builder(config).build(varmap)
    }

    /// Current hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Current learning rate.
    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// Sets the learning rate used by the next [`AdamW::step`].
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::InvalidConfig(format!("learning rate {lr}")));
        }
        self.config.lr = lr;
        Ok(())
    }

    /// Number of completed [`AdamW::step`] calls.
    pub fn num_updates(&self) -> u64 {
        self.num_updates
    }

    /// Trainable variables with their names, sorted by name.
    pub fn trainable(&self) -> Vec<NamedVar> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.var.clone()))
            .collect()
    }

    /// Names of the trainable parameters that receive weight decay.
    pub fn decay_names(&self) -> Vec<&str> {
        let it = self.params.iter().filter(|p| p.decay);
        it.map(|p| p.name.as_str()).collect()
    }

    /// Names of the trainable parameters without weight decay.
    pub fn no_decay_names(&self) -> Vec<&str> {
        let it = self.params.iter().filter(|p| !p.decay);
        it.map(|p| p.name.as_str()).collect()
    }

    /// Names of the frozen (never updated) parameters.
    pub fn frozen_names(&self) -> &[String] {
        &self.frozen
    }

    /// Applies one update with the current learning rate. Parameters without
    /// a gradient in `grads` are left untouched (their moments and step count
    /// too).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = self.config;
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let sdt = p.m.dtype();
            let g = g.detach().to_dtype(sdt)?;
            p.step += 1;
            let t = p.step as i32;
            let bc1 = 1.0 - c.beta1.powi(t);
            let bc2 = 1.0 - c.beta2.powi(t);
            let param = p.var.as_tensor();
            if crate::fused_adamw::applies(param, &p.m, &p.v, &g) {
                let decay = if p.decay {
                    1.0 - c.lr * c.weight_decay
                } else {
                    1.0
                };
                let u = crate::fused_adamw::Update {
                    beta1: c.beta1,
                    beta2: c.beta2,
                    step_size: (c.lr / bc1) as f32,
                    inv_bc2_sqrt: (1.0 / bc2.sqrt()) as f32,
                    eps: c.eps as f32,
                    decay: decay as f32,
                };
                crate::fused_adamw::step(param, &p.m, &p.v, &g, u)?;
                continue;
            }
            let m = ((&p.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&p.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = v.sqrt()?.affine(1.0 / bc2.sqrt(), c.eps)?;
            let update = (m.div(&denom)? * (c.lr / bc1))?;
            let theta = p.var.as_detached_tensor().to_dtype(sdt)?;
            let theta = if p.decay && c.weight_decay != 0.0 {
                (theta * (1.0 - c.lr * c.weight_decay))?
            } else {
                theta
            };
            let next = theta.sub(&update)?.to_dtype(p.var.dtype())?;
            p.var.set(&next)?;
            p.m = m;
            p.v = v;
        }
        self.num_updates += 1;
        Ok(())
    }

    /// Exports the state as named tensors: `exp_avg.<name>`,
    /// `exp_avg_sq.<name>`, `step.<name>` (i64 scalar) for each trainable
    /// parameter, plus [`NUM_UPDATES_KEY`] (i64 scalar).
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        let cpu = Device::Cpu;
        for p in &self.params {
            out.insert(format!("exp_avg.{}", p.name), p.m.copy()?);
            out.insert(format!("exp_avg_sq.{}", p.name), p.v.copy()?);
            out.insert(format!("step.{}", p.name), i64_scalar(p.step, &cpu)?);
        }
        out.insert(
            NUM_UPDATES_KEY.to_string(),
            i64_scalar(self.num_updates, &cpu)?,
        );
        Ok(out)
    }

    /// Imports state produced by [`AdamW::state_tensors`]. Every trainable
    /// parameter must be present with matching shapes, and no state may refer
    /// to a parameter that is not trainable here. Nothing is modified on
    /// error.
    pub fn load_state_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let get = |key: String| {
            state
                .get(&key)
                .ok_or(Error::MissingTensor { name: key.clone() })
                .map(|t| (key, t))
        };
        let mut staged = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let load = |prefix: &str| -> Result<Tensor> {
                let (key, t) = get(format!("{prefix}.{}", p.name))?;
                check_shape(&key, p.var.dims(), t.dims())?;
                // A private copy: the fused update writes the moments in place.
                Ok(t.to_dtype(p.m.dtype())?.to_device(p.var.device())?.copy()?)
            };
            let m = load("exp_avg")?;
            let v = load("exp_avg_sq")?;
            let (key, t) = get(format!("step.{}", p.name))?;
            staged.push((m, v, read_count(&key, t)?));
        }
        let (key, t) = get(NUM_UPDATES_KEY.to_string())?;
        let num_updates = read_count(&key, t)?;
        for key in state.keys() {
            let known = key == NUM_UPDATES_KEY
                || self.params.iter().any(|p| {
                    ["exp_avg.", "exp_avg_sq.", "step."]
                        .iter()
                        .any(|pre| key.strip_prefix(pre) == Some(p.name.as_str()))
                });
            if !known {
                return Err(Error::UnexpectedTensor { name: key.clone() });
            }
        }
        for (p, (m, v, step)) in self.params.iter_mut().zip(staged) {
            p.m = m;
            p.v = v;
            p.step = step;
        }
        self.num_updates = num_updates;
        Ok(())
    }
}

fn state_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

fn i64_scalar(value: u64, device: &Device) -> Result<Tensor> {
    let v = i64::try_from(value).map_err(|_| Error::InvalidConfig("step overflow".into()))?;
    Ok(Tensor::new(v, device)?)
}

fn read_count(key: &str, t: &Tensor) -> Result<u64> {
    let bad = || Error::ShapeMismatch {
        name: key.to_string(),
        expected: vec![],
        found: t.dims().to_vec(),
    };
    if t.rank() != 0 {
        return Err(bad());
    }
    let v = t.to_dtype(DType::I64)?.to_scalar::<i64>()?;
    u64::try_from(v).map_err(|_| Error::InvalidConfig(format!("`{key}` is negative")))
}
