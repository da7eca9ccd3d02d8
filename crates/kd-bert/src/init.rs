//! Deterministic initialisation of model parameters.

use candle_core::{Result, Tensor};
use candle_nn::VarMap;
use kd_core::rng::SeedHash;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Standard deviation of BERT's normal weight init.
pub const INIT_STD: f64 = 0.02;

/// The RNG seed for one parameter: a hash of the run seed and the parameter's name, so a
/// parameter's initial value does not depend on which other parameters exist.
pub fn param_seed(seed: u64, name: &str) -> u64 {
    SeedHash::default()
        .u64(seed)
        .bytes(name.as_bytes())
        .seed_u64()
}

/// Re-initialises the named variables of `varmap` as BERT does: LayerNorm weights 1, biases 0,
/// every other weight Normal(0, 0.02), reproducibly from `seed` (candle's own CPU RNG cannot
/// be seeded).
pub fn init_params(varmap: &VarMap, names: &[String], seed: u64) -> Result<()> {
    let vars = varmap.data().lock().expect("varmap lock poisoned");
    for name in names {
        let Some(var) = vars.get(name) else {
            candle_core::bail!("init: no parameter named {name}")
        };
        let n = var.elem_count();
        let values: Vec<f32> = if name.ends_with("LayerNorm.weight") {
            vec![1.0; n]
        } else if name.ends_with("bias") {
            vec![0.0; n]
        } else {
            let mut rng = ChaCha8Rng::seed_from_u64(param_seed(seed, name));
            let normal = Normal::new(0.0f32, INIT_STD as f32).expect("valid std");
            (0..n).map(|_| normal.sample(&mut rng)).collect()
        };
        let t = Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// Re-initialises every variable of `varmap` (see [`init_params`]).
pub fn init_all(varmap: &VarMap, seed: u64) -> Result<()> {
    let mut names: Vec<String> = varmap
        .data()
        .lock()
        .expect("varmap lock poisoned")
        .keys()
        .cloned()
        .collect();
    names.sort();
    init_params(varmap, &names, seed)
}
