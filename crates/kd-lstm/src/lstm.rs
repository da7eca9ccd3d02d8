//! A single-layer bidirectional LSTM under PyTorch's parameter names, so the state dict of an
//! `nn.LSTM(E, H, bidirectional=True, batch_first=True)` loads as it is.

use crate::recurrence::{bilstm_recurrence, check_lengths, fits};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// PyTorch's names of the eight parameters (forward direction, then `_reverse`).
pub const PARAM_NAMES: [&str; 8] = [
    "weight_ih_l0",
    "weight_hh_l0",
    "bias_ih_l0",
    "bias_hh_l0",
    "weight_ih_l0_reverse",
    "weight_hh_l0_reverse",
    "bias_ih_l0_reverse",
    "bias_hh_l0_reverse",
];

/// The parameters of one direction (gates stacked in PyTorch's order `i, f, g, o`).
#[derive(Debug, Clone)]
pub struct Direction {
    /// `[4H, E]`.
    pub weight_ih: Tensor,
    /// `[4H, H]`.
    pub weight_hh: Tensor,
    /// `[4H]`.
    pub bias_ih: Tensor,
    /// `[4H]`.
    pub bias_hh: Tensor,
}

/// A bidirectional single-layer LSTM over `[B, T, E]` inputs with per-row lengths.
#[derive(Debug, Clone)]
pub struct BiLstm {
    /// Forward direction (`*_l0`).
    pub forward: Direction,
    /// Reverse direction (`*_l0_reverse`).
    pub reverse: Direction,
    /// Input width `E`.
    pub input_size: usize,
    /// Hidden width per direction `H`.
    pub hidden_size: usize,
}

impl BiLstm {
    /// The LSTM's parameters from `vb` (e.g. `vb.pp("lstm")`), created with PyTorch's
    /// `U(-1/sqrt(H), 1/sqrt(H))` init when `vb` is backed by a fresh `VarMap` (the seeded
    /// init of [`crate::init`] overwrites them).
    pub fn new(input_size: usize, hidden_size: usize, vb: VarBuilder) -> Result<Self> {
        let (e, h) = (input_size, hidden_size);
        let bound = 1.0 / (h as f64).sqrt();
        let init = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let dir = |suffix: &str| -> Result<Direction> {
            Ok(Direction {
                weight_ih: vb.get_with_hints((4 * h, e), &format!("weight_ih_l0{suffix}"), init)?,
                weight_hh: vb.get_with_hints((4 * h, h), &format!("weight_hh_l0{suffix}"), init)?,
                bias_ih: vb.get_with_hints(4 * h, &format!("bias_ih_l0{suffix}"), init)?,
                bias_hh: vb.get_with_hints(4 * h, &format!("bias_hh_l0{suffix}"), init)?,
            })
        };
        Ok(Self {
            forward: dir("")?,
            reverse: dir("_reverse")?,
            input_size: e,
            hidden_size: h,
        })
    }

    /// The input weights of both directions `[8H, E]`, the recurrent ones `[2, 4H, H]` and the
    /// summed biases `[8H]`, in the layout of [`bilstm_recurrence`].
    pub fn stacked(&self) -> Result<(Tensor, Tensor, Tensor)> {
        let (f, r) = (&self.forward, &self.reverse);
        let w_ih = Tensor::cat(&[&f.weight_ih, &r.weight_ih], 0)?;
        let w_hh = Tensor::stack(&[&f.weight_hh, &r.weight_hh], 0)?;
        let bias = Tensor::cat(&[(&f.bias_ih + &f.bias_hh)?, (&r.bias_ih + &r.bias_hh)?], 0)?;
        Ok((w_ih, w_hh, bias))
    }

    /// The input projections of every step and both directions, `[B, T, 8H]`: one GEMM
    /// `x [B*T, E] @ [W_ih; W_ih_reverse]^T` plus both biases.
    pub fn input_projection(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, e) = x.dims3()?;
        let (w_ih, _, bias) = self.stacked()?;
        x.reshape((b * t, e))?
            .matmul(&w_ih.t()?)?
            .broadcast_add(&bias)?
            .reshape((b, t, 8 * self.hidden_size))
    }

    /// Hidden states `[B, T, 2H]` (forward then reverse) of a padded batch `x` `[B, T, E]`,
    /// zeros at the padded steps `lengths[b]..T` of each row, as PyTorch's packed sequences
    /// give them. The real steps are gathered first (see [`Self::forward_packed`]).
    pub fn forward(&self, x: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (b, t, e) = x.dims3()?;
        check_lengths(lengths, b, t)?;
        let idx: Vec<u32> = lengths
            .iter()
            .enumerate()
            .flat_map(|(row, &len)| (0..len).map(move |s| (row * t + s) as u32))
            .collect();
        let n = idx.len();
        let idx = Tensor::from_vec(idx, n, x.device())?;
        let packed = x.reshape((b * t, e))?.index_select(&idx, 0)?;
        self.forward_packed(&packed, lengths, t)
    }

    /// Hidden states `[B, steps, 2H]` of packed inputs `x` `[N, E]` (every row's real steps,
    /// row after row; `N = sum(lengths)`), zeros at padded steps. CPU `f32` projects the
    /// packed tokens only and runs the fused recurrence; anything else pads them and runs
    /// [`composed_recurrence`].
    pub fn forward_packed(&self, x: &Tensor, lengths: &[usize], steps: usize) -> Result<Tensor> {
        let (w_ih, w_hh, bias) = self.stacked()?;
        if fits(x) && fits(&w_hh) {
            let xw = x.matmul(&w_ih.t()?)?;
            return bilstm_recurrence(&xw, &w_hh, &bias, lengths, steps);
        }
        check_lengths(lengths, lengths.len(), steps)?;
        // Padded steps read their row's first token; the composed recurrence masks them.
        let mut idx = Vec::with_capacity(lengths.len() * steps);
        let mut offset = 0u32;
        for &len in lengths {
            idx.extend((0..steps).map(|s| offset + s.min(len - 1) as u32));
            offset += len as u32;
        }
        let n = idx.len();
        let padded = x.index_select(&Tensor::from_vec(idx, n, x.device())?, 0)?;
        let padded = padded.reshape((lengths.len(), steps, self.input_size))?;
        composed_recurrence(&self.input_projection(&padded)?, &w_hh, lengths)
    }
}

/// The recurrence of [`bilstm_recurrence`] composed from candle ops, one step at a time, for
/// devices and dtypes the fused node does not cover (and as its reference): rows past their
/// length keep their state and output zeros, so the result equals the fused node's.
pub fn composed_recurrence(xw: &Tensor, w_hh: &Tensor, lengths: &[usize]) -> Result<Tensor> {
    let (b, t, _) = xw.dims3()?;
    let (_, _, h) = w_hh.dims3()?;
    check_lengths(lengths, b, t)?;
    let dev = xw.device();
    let mut outs = Vec::with_capacity(2);
    for d in 0..2 {
        let w_t = w_hh.get(d)?.t()?;
        let xd = xw.narrow(2, d * 4 * h, 4 * h)?;
        let mut state = Tensor::zeros((b, h), xw.dtype(), dev)?;
        let mut cell = state.clone();
        let mut steps = vec![None; t];
        let order: Vec<usize> = if d == 0 {
            (0..t).collect()
        } else {
            (0..t).rev().collect()
        };
        for ti in order {
            let live: Vec<f32> = lengths
                .iter()
                .map(|&l| f32::from(u8::from(ti < l)))
                .collect();
            let live = Tensor::from_vec(live, (b, 1), dev)?.to_dtype(xw.dtype())?;
            let a = (xd.narrow(1, ti, 1)?.squeeze(1)? + state.matmul(&w_t)?)?;
            let gate = |k: usize| a.narrow(1, k * h, h);
            let (i, f) = (sigmoid(&gate(0)?)?, sigmoid(&gate(1)?)?);
            let (g, o) = (gate(2)?.tanh()?, sigmoid(&gate(3)?)?);
            let c_new = ((f * &cell)? + (i * g)?)?;
            let h_new = (o * c_new.tanh()?)?;
            let keep = (1.0 - &live)?;
            cell = (c_new.broadcast_mul(&live)? + cell.broadcast_mul(&keep)?)?;
            state = (h_new.broadcast_mul(&live)? + state.broadcast_mul(&keep)?)?;
            steps[ti] = Some(h_new.broadcast_mul(&live)?);
        }
        let steps: Vec<Tensor> = steps
            .into_iter()
            .map(|s| s.expect("every step ran"))
            .collect();
        outs.push(Tensor::stack(&steps, 1)?);
    }
    Tensor::cat(&outs, 2)
}

/// `1 / (1 + exp(-x))` from ops that record their backward.
fn sigmoid(x: &Tensor) -> Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}
