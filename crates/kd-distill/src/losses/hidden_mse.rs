//! TinyBERT's hidden-state loss and the learned projection of student hidden states.

use candle_core::{Module, Tensor};
use candle_nn::{Init, VarBuilder};

use super::logit_mse::mse;
use crate::error::{Error, Result};

const LOSS: &str = "hidden_mse";

/// `L = mean((H_S W − H_T)²)` over the whole tensor, given the already projected student
/// states `H_S W` (see [`Projection`]) and the teacher's `H_T`, both `[B, L, H_T]` (any equal
/// shapes).
///
/// Follows TinyBERT (Jiao et al. 2020): `MSELoss(fit_dense(student_rep), teacher_rep)`, no
/// padding mask; the embedding loss is the same function on embedding outputs (hidden state
/// 0). The teacher is a constant (detached).
pub fn hidden_mse(student_projected: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let (s, t) = (student_projected.dims(), teacher.dims());
    if s.len() == t.len() && s.last() != t.last() {
        return Err(Error::shape(
            LOSS,
            format!(
                "student hidden size {:?} differs from teacher hidden size {:?} (shapes {s:?} vs \
                 {t:?}); project the student states first (Projection)",
                s.last(),
                t.last()
            ),
        ));
    }
    mse(
        student_projected,
        teacher,
        LOSS,
        "student hidden states",
        "teacher hidden states",
    )
}

/// A learned linear map `x Wᵀ + b` from the student's hidden size to the teacher's (TinyBERT's
/// `fit_dense`; the trainer owns its parameters and may share one for every layer, as the
/// reference, or keep one per layer, as the paper).
#[derive(Debug, Clone)]
pub struct Projection {
    weight: Tensor,
    bias: Tensor,
}

impl Projection {
    /// Creates (or loads) `weight` `[teacher_dim, student_dim]` and `bias` `[teacher_dim]`
    /// under `vb`, initialised as BERT's linear layers: weight ~ N(0, 0.02), bias 0.
    pub fn new(vb: VarBuilder, student_dim: usize, teacher_dim: usize) -> Result<Self> {
        let weight = vb.get_with_hints(
            (teacher_dim, student_dim),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )?;
        let bias = vb.get_with_hints(teacher_dim, "bias", Init::Const(0.0))?;
        Ok(Projection { weight, bias })
    }

    /// From existing tensors: `weight` `[teacher_dim, student_dim]`, `bias` `[teacher_dim]`.
    pub fn from_tensors(weight: Tensor, bias: Tensor) -> Result<Self> {
        match (weight.dims(), bias.dims()) {
            ([o, _], [b]) if o == b => Ok(Projection { weight, bias }),
            (w, b) => Err(Error::shape(
                "Projection",
                format!("weight shape {w:?} and bias shape {b:?} do not form [out, in] / [out]"),
            )),
        }
    }

    /// Input (student) size.
    pub fn student_dim(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Output (teacher) size.
    pub fn teacher_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The weight, `[teacher_dim, student_dim]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[teacher_dim]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// Projects `[.., student_dim]` states to `[.., teacher_dim]`; a wrong last dimension is a
    /// shape error naming both sizes.
    pub fn project(&self, xs: &Tensor) -> Result<Tensor> {
        if xs.dims().last() != Some(&self.student_dim()) {
            return Err(Error::shape(
                "Projection",
                format!(
                    "input shape {:?} does not end in the projection's student size {}",
                    xs.dims(),
                    self.student_dim()
                ),
            ));
        }
        Ok(xs
            .broadcast_matmul(&self.weight.t()?)?
            .broadcast_add(&self.bias)?)
    }
}

impl Module for Projection {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.project(xs)?)
    }
}
