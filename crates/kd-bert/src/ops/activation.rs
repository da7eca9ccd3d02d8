//! Feed-forward activations with fused CPU forward and backward.

use crate::config::Activation;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use kd_kernels::cpu::{f32_input, f32_inputs, fast_path};
use rayon::prelude::*;

/// Applies the configured activation.
pub fn activate(xs: &Tensor, act: Activation) -> Result<Tensor> {
    match act {
        Activation::Gelu => gelu_erf(xs),
        Activation::GeluNew => gelu_tanh(xs),
        Activation::Relu => xs.relu(),
    }
}

/// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))`.
pub fn gelu_erf(xs: &Tensor) -> Result<Tensor> {
    if fast_path(xs) {
        xs.contiguous()?.apply_op1(Gelu(Kind::Erf))
    } else {
        xs.gelu_erf()
    }
}

/// Tanh-approximated GELU (`gelu_new`).
pub fn gelu_tanh(xs: &Tensor) -> Result<Tensor> {
    if fast_path(xs) {
        xs.contiguous()?.apply_op1(Gelu(Kind::Tanh))
    } else {
        xs.gelu()
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Erf,
    Tanh,
}

/// erf by Abramowitz & Stegun 7.1.26 (max abs error 1.5e-7, below f32 GELU rounding noise
/// for activations of BERT's range), several times faster than the series candle uses.
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * (-ax * ax).exp();
    y.copysign(x)
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const INV_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f32 = 0.398_942_3;

impl Kind {
    fn value(self, x: f32) -> f32 {
        match self {
            Kind::Erf => 0.5 * x * (1.0 + erf(x * INV_SQRT_2)),
            Kind::Tanh => 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh()),
        }
    }

    fn derivative(self, x: f32) -> f32 {
        match self {
            Kind::Erf => {
                0.5 * (1.0 + erf(x * INV_SQRT_2)) + x * INV_SQRT_2PI * (-0.5 * x * x).exp()
            }
            Kind::Tanh => {
                let inner = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
                let t = inner.tanh();
                let dinner = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner
            }
        }
    }
}

struct Gelu(Kind);

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "kd-gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_input(storage, layout, self.name())?;
        let kind = self.0;
        let dst: Vec<f32> = src.par_iter().map(|&x| kind.value(x)).collect();
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = arg
            .contiguous()?
            .apply_op2_no_bwd(&grad_res.contiguous()?, &GeluGrad(self.0))?;
        Ok(Some(g))
    }
}

struct GeluGrad(Kind);

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "kd-gelu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [x, g] = f32_inputs([(s1, l1), (s2, l2)], self.name())?;
        let kind = self.0;
        let dst: Vec<f32> = x
            .par_iter()
            .zip(g.par_iter())
            .map(|(&x, &g)| g * kind.derivative(x))
            .collect();
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}
