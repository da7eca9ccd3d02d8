//! The recurrence of a bidirectional LSTM as one graph node, with backpropagation through time.
//!
//! The input projections of every step are computed before, as one GEMM over all `(b, t)`
//! (`xw = x W_ih^T + b_ih + b_hh`, ordinary candle ops that record their own backward). This
//! node runs the steps: per direction and step one GEMM `h_{t-1} W_hh^T` over the rows still
//! running, the gates in PyTorch's order `i, f, g, o`
//!
//! ```text
//! i = σ(a_i)  f = σ(a_f)  g = tanh(a_g)  o = σ(a_o)    (a = xw_t + h_{t-1} W_hh^T)
//! c_t = f c_{t-1} + i g        h_t = o tanh(c_t)
//! ```
//!
//! with `h` and `c` starting at zero. Padding is handled by lengths, as `pack_padded_sequence`
//! does: the forward direction runs steps `0..len`, the reverse direction `len-1..=0`, and
//! padded steps output zeros and receive no gradient, whatever their `xw` holds. Rows are
//! processed longest first, so the rows running at step `t` are a prefix of the state and
//! each step's GEMM covers exactly them.
//!
//! The forward pass keeps the gate activations and cell states; the backward pass walks the
//! steps in reverse (one GEMM `da W_hh` per step), then forms `dW_hh` as one GEMM over all
//! steps. The two directions run in parallel.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};
use kd_kernels::cpu::{f32_input, fast_path};
use std::sync::{Arc, Mutex};

/// Runs both directions of an LSTM over precomputed input projections.
///
/// `xw` is `[B, T, 8H]`: for each step the forward direction's `[4H]` pre-activations
/// (`x W_ih^T + b_ih + b_hh`) then the reverse direction's. `w_hh` is `[2, 4H, H]` (forward,
/// reverse; PyTorch's `weight_hh_l0` and `weight_hh_l0_reverse` stacked). `lengths[b]` is the
/// number of real steps of row `b` (`1..=T`). Returns `[B, T, 2H]`: the forward hidden state
/// then the reverse one at each real step, zeros at padded steps. CPU `f32` only (see
/// [`fits`]).
pub fn bilstm_recurrence(xw: &Tensor, w_hh: &Tensor, lengths: &[usize]) -> Result<Tensor> {
    let (b, t, g8) = xw.dims3()?;
    let (dirs, g4, h) = w_hh.dims3()?;
    if dirs != 2 || g4 != 4 * h || g8 != 8 * h || h == 0 {
        candle_core::bail!(
            "kd-lstm: xw {:?} and w_hh {:?} are not [B, T, 8H] and [2, 4H, H]",
            xw.dims(),
            w_hh.dims()
        );
    }
    check_lengths(lengths, b, t)?;
    if !fits(xw) || !fits(w_hh) {
        candle_core::bail!("kd-lstm: the fused recurrence needs CPU f32 tensors");
    }
    let op = Recurrence {
        dims: Dims { b, t, h },
        plan: Arc::new(Plan::new(lengths, t)),
        keep: xw.track_op() || w_hh.track_op(),
        saved: Mutex::new(None),
    };
    xw.contiguous()?.apply_op2(&w_hh.contiguous()?, op)
}

/// Refuses lengths that do not give each of `b` rows `1..=t` steps.
pub(crate) fn check_lengths(lengths: &[usize], b: usize, t: usize) -> Result<()> {
    if lengths.len() != b {
        candle_core::bail!("kd-lstm: {} lengths for {b} rows", lengths.len());
    }
    if let Some((row, &len)) = lengths.iter().enumerate().find(|(_, &l)| l == 0 || l > t) {
        candle_core::bail!("kd-lstm: row {row} has length {len}, outside 1..={t}");
    }
    Ok(())
}

/// Whether the fused recurrence applies to `t`: a CPU `f32` tensor.
pub fn fits(t: &Tensor) -> bool {
    fast_path(t)
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    h: usize,
}

/// Rows by length, longest first, and how many run at each step.
#[derive(Debug)]
struct Plan {
    lengths: Vec<usize>,
    /// `order[r]` is the batch row held in state row `r`.
    order: Vec<usize>,
    /// `running[t]`: rows with `length > t` (a prefix of `order`).
    running: Vec<usize>,
}

impl Plan {
    fn new(lengths: &[usize], t: usize) -> Self {
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
        let running = (0..t)
            .map(|s| lengths.iter().filter(|&&l| l > s).count())
            .collect();
        Self {
            lengths: lengths.to_vec(),
            order,
            running,
        }
    }

    /// The time index of processing step `s` for direction `d` (0 forward, 1 reverse).
    fn time(&self, d: usize, s: usize) -> usize {
        if d == 0 {
            s
        } else {
            self.running.len() - 1 - s
        }
    }
}

/// What the backward pass needs: gate activations `[B, T, 2, 4H]` and cell states
/// `[B, T, 2, H]`.
struct Saved {
    gates: Vec<f32>,
    cells: Vec<f32>,
}

struct Recurrence {
    dims: Dims,
    plan: Arc<Plan>,
    /// Keep the activations for a backward pass.
    keep: bool,
    saved: Mutex<Option<Arc<Saved>>>,
}

/// A raw pointer that the two directions write through at disjoint offsets.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: each direction writes only the elements of its own half of every `(b, t)` slot.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// `dst (m x n, row stride dst_rs) = [dst +] a b`, single-threaded: `a` is m x k with
/// (row, column) strides `a_s`, `b` k x n with strides `b_s`.
///
/// # Safety
/// The views must lie inside their buffers for the given sizes.
#[allow(clippy::too_many_arguments)]
unsafe fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    a: *const f32,
    a_s: (usize, usize),
    b: *const f32,
    b_s: (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        a,
        a_s.1 as isize,
        a_s.0 as isize,
        b,
        b_s.1 as isize,
        b_s.0 as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        Parallelism::None,
    );
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Recurrence {
    /// One direction's forward steps; writes its half of `out`, `gates`, `cells`.
    fn forward_dir(
        &self,
        d: usize,
        xw: &[f32],
        w: &[f32],
        out: Shared,
        gates: Shared,
        cells: Shared,
    ) {
        let Dims { b, t, h } = self.dims;
        let (g4, plan) = (4 * h, &*self.plan);
        let mut hs = vec![0f32; b * h];
        let mut cs = vec![0f32; b * h];
        let mut a = vec![0f32; b * g4];
        for s in 0..t {
            let ti = plan.time(d, s);
            let n = plan.running[ti];
            for (r, &row) in plan.order[..n].iter().enumerate() {
                let src = (row * t + ti) * 2 * g4 + d * g4;
                a[r * g4..(r + 1) * g4].copy_from_slice(&xw[src..src + g4]);
            }
            // SAFETY: `hs` holds n x h, `a` n x 4h, `w` is this direction's [4h, h] block.
            unsafe {
                mm(
                    n,
                    g4,
                    h,
                    a.as_mut_ptr(),
                    g4,
                    true,
                    hs.as_ptr(),
                    (h, 1),
                    w.as_ptr(),
                    (1, h),
                );
            }
            for (r, &row) in plan.order[..n].iter().enumerate() {
                let ar = &mut a[r * g4..(r + 1) * g4];
                let (hr, cr) = (&mut hs[r * h..(r + 1) * h], &mut cs[r * h..(r + 1) * h]);
                let slot = row * t + ti;
                for j in 0..h {
                    let i = sigmoid(ar[j]);
                    let f = sigmoid(ar[h + j]);
                    let g = ar[2 * h + j].tanh();
                    let o = sigmoid(ar[3 * h + j]);
                    let c = f * cr[j] + i * g;
                    cr[j] = c;
                    hr[j] = o * c.tanh();
                    (ar[j], ar[h + j], ar[2 * h + j], ar[3 * h + j]) = (i, f, g, o);
                }
                // SAFETY: slot `(row, ti)`'s half `d` of each buffer belongs to this direction.
                unsafe {
                    let o = out.0.add(slot * 2 * h + d * h);
                    std::ptr::copy_nonoverlapping(hr.as_ptr(), o, h);
                    if self.keep {
                        let gp = gates.0.add(slot * 2 * g4 + d * g4);
                        std::ptr::copy_nonoverlapping(ar.as_ptr(), gp, g4);
                        let cp = cells.0.add(slot * 2 * h + d * h);
                        std::ptr::copy_nonoverlapping(cr.as_ptr(), cp, h);
                    }
                }
            }
        }
    }
}

impl CustomOp2 for Recurrence {
    fn name(&self) -> &'static str {
        "kd-lstm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xw = f32_input(s1, l1, self.name())?;
        let w = f32_input(s2, l2, self.name())?;
        let Dims { b, t, h } = self.dims;
        let mut out = vec![0f32; b * t * 2 * h];
        let (mut gates, mut cells) = if self.keep {
            (vec![0f32; b * t * 8 * h], vec![0f32; b * t * 2 * h])
        } else {
            (Vec::new(), Vec::new())
        };
        let ptrs = [
            Shared(out.as_mut_ptr()),
            Shared(gates.as_mut_ptr()),
            Shared(cells.as_mut_ptr()),
        ];
        let block = 4 * h * h;
        rayon::join(
            || self.forward_dir(0, xw, &w[..block], ptrs[0], ptrs[1], ptrs[2]),
            || self.forward_dir(1, xw, &w[block..], ptrs[0], ptrs[1], ptrs[2]),
        );
        if self.keep {
            *self.saved.lock().expect("lstm state lock") = Some(Arc::new(Saved { gates, cells }));
        }
        Ok((CpuStorage::F32(out), Shape::from((b, t, 2 * h))))
    }

    fn bwd(
        &self,
        xw: &Tensor,
        w_hh: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let saved = self
            .saved
            .lock()
            .expect("lstm state lock")
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("kd-lstm: backward before forward".into()))?;
        let w = w_hh.flatten_all()?.to_vec1::<f32>()?;
        let out = res.flatten_all()?.to_vec1::<f32>()?;
        let dout = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let Dims { b, t, h } = self.dims;
        let mut dxw = vec![0f32; b * t * 8 * h];
        let mut dw = vec![0f32; 8 * h * h];
        let shared = Shared(dxw.as_mut_ptr());
        let block = 4 * h * h;
        let (dw0, dw1) = dw.split_at_mut(block);
        let ctx = Backward {
            dims: self.dims,
            plan: &self.plan,
            saved: &saved,
            out: &out,
            dout: &dout,
        };
        rayon::join(
            || ctx.direction(0, &w[..block], shared, dw0),
            || ctx.direction(1, &w[block..], shared, dw1),
        );
        let dev = xw.device();
        Ok((
            Some(Tensor::from_vec(dxw, xw.shape(), dev)?),
            Some(Tensor::from_vec(dw, w_hh.shape(), dev)?),
        ))
    }
}

/// The inputs of the backward pass, shared by the two directions.
struct Backward<'a> {
    dims: Dims,
    plan: &'a Plan,
    saved: &'a Saved,
    /// The forward output `[B, T, 2H]` (the previous hidden states).
    out: &'a [f32],
    /// The gradient of the output `[B, T, 2H]`.
    dout: &'a [f32],
}

impl Backward<'_> {
    /// Backpropagation through time for direction `d`: writes its half of `dxw` and its
    /// `dw` block `[4H, H]`.
    fn direction(&self, d: usize, w: &[f32], dxw: Shared, dw: &mut [f32]) {
        let Dims { b, t, h } = self.dims;
        let (g4, plan, sv) = (4 * h, self.plan, self.saved);
        let mut dh_rec = vec![0f32; b * h];
        let mut dc = vec![0f32; b * h];
        let mut da = vec![0f32; b * g4];
        let zeros = vec![0f32; h];
        for s in (0..t).rev() {
            let ti = plan.time(d, s);
            let n = plan.running[ti];
            for (r, &row) in plan.order[..n].iter().enumerate() {
                let slot = row * t + ti;
                // The cell state before this step: the neighbour in this direction's order.
                let prev = match d {
                    0 if ti > 0 => Some(slot - 1),
                    1 if ti + 1 < plan.lengths[row] => Some(slot + 1),
                    _ => None,
                };
                let c_prev = prev.map_or(&zeros[..], |p| &sv.cells[p * 2 * h + d * h..][..h]);
                let c_t = &sv.cells[slot * 2 * h + d * h..][..h];
                let acts = &sv.gates[slot * 2 * g4 + d * g4..][..g4];
                let dy = &self.dout[slot * 2 * h + d * h..][..h];
                let dar = &mut da[r * g4..(r + 1) * g4];
                let (dhr, dcr) = (&dh_rec[r * h..(r + 1) * h], &mut dc[r * h..(r + 1) * h]);
                for j in 0..h {
                    let (i, f, g, o) = (acts[j], acts[h + j], acts[2 * h + j], acts[3 * h + j]);
                    let dhj = dy[j] + dhr[j];
                    let tc = c_t[j].tanh();
                    let dcj = dcr[j] + dhj * o * (1.0 - tc * tc);
                    dar[j] = dcj * g * i * (1.0 - i);
                    dar[h + j] = dcj * c_prev[j] * f * (1.0 - f);
                    dar[2 * h + j] = dcj * i * (1.0 - g * g);
                    dar[3 * h + j] = dhj * tc * o * (1.0 - o);
                    dcr[j] = dcj * f;
                }
                // SAFETY: slot `(row, ti)`'s half `d` of `dxw` belongs to this direction.
                unsafe {
                    let p = dxw.0.add(slot * 2 * g4 + d * g4);
                    std::ptr::copy_nonoverlapping(dar.as_ptr(), p, g4);
                }
            }
            // dh_{t-1} = da W_hh for the rows of this step; rows that start earlier in this
            // walk keep zeros until their first step.
            // SAFETY: `da` holds n x 4h, `dh_rec` n x h, `w` is [4h, h].
            unsafe {
                mm(
                    n,
                    h,
                    g4,
                    dh_rec.as_mut_ptr(),
                    h,
                    false,
                    da.as_ptr(),
                    (g4, 1),
                    w.as_ptr(),
                    (h, 1),
                );
            }
        }
        // dW_hh = sum over (b, t) of da^T h_prev, as one GEMM over all slots (padded slots
        // have zero da).
        let mut h_prev = vec![0f32; b * t * h];
        for row in 0..b {
            for ti in 0..plan.lengths[row] {
                let prev = match d {
                    0 if ti > 0 => ti - 1,
                    1 if ti + 1 < plan.lengths[row] => ti + 1,
                    _ => continue,
                };
                let src = &self.out[(row * t + prev) * 2 * h + d * h..][..h];
                h_prev[(row * t + ti) * h..][..h].copy_from_slice(src);
            }
        }
        // SAFETY: dxw's direction-d columns are read as a [4h, B*T] matrix (column stride 8h);
        // nothing writes dxw any more. `h_prev` is [B*T, h], `dw` [4h, h].
        unsafe {
            mm(
                g4,
                h,
                b * t,
                dw.as_mut_ptr(),
                h,
                false,
                dxw.0.add(d * g4),
                (1, 2 * g4),
                h_prev.as_ptr(),
                (h, 1),
            );
        }
    }
}
