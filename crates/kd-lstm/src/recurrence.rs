//! The recurrence of a bidirectional LSTM as one graph node, with backpropagation through time.
//!
//! The input projections of every real step are computed before, as one GEMM over the packed
//! tokens (`x W_ih^T`, ordinary candle ops that record their own backward; padded steps are
//! never projected, as with PyTorch's packed sequences). This node adds the biases and runs
//! the steps: per direction and step one GEMM `h_{t-1} W_hh^T` over the rows still running,
//! the gates in PyTorch's order `i, f, g, o`
//!
//! ```text
//! i = σ(a_i)  f = σ(a_f)  g = tanh(a_g)  o = σ(a_o)    (a = x_t W_ih^T + b_ih + b_hh + h_{t-1} W_hh^T)
//! c_t = f c_{t-1} + i g        h_t = o tanh(c_t)
//! ```
//!
//! with `h` and `c` starting at zero. Padding is handled by lengths, as `pack_padded_sequence`
//! does: the forward direction runs steps `0..len`, the reverse direction `len-1..=0`, and
//! padded steps output zeros. Rows are processed longest first, so the rows running at step
//! `t` are a prefix of the state and each step's GEMM covers exactly them.
//!
//! The forward pass keeps the gate activations and cell states; the backward pass walks the
//! steps in reverse (one GEMM `da W_hh` per step), then forms `dW_hh` as one GEMM over all
//! tokens and `db` as their sum. The two directions run in parallel.

use crate::activations::{gates_in_place, tanh_into};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};
use kd_kernels::cpu::{f32_input, fast_path};
use std::sync::{Arc, Mutex};

/// Runs both directions of an LSTM over precomputed input projections of packed tokens.
///
/// `xw` is `[N, 8H]`, `N = sum(lengths)`: the rows of `x W_ih^T` (forward direction's `4H`
/// then the reverse direction's) of every real token, sequence after sequence (row `b`'s
/// step `t` at `lengths[..b].sum() + t`). `w_hh` is `[2, 4H, H]` (PyTorch's `weight_hh_l0`
/// and `weight_hh_l0_reverse` stacked), `bias` `[8H]` (`b_ih + b_hh` of each direction).
/// `lengths[b]` is the number of real steps of row `b` (`1..=steps`). Returns
/// `[B, steps, 2H]`: the forward hidden state then the reverse one at each real step, zeros at
/// padded steps. CPU `f32` only (see [`fits`]).
pub fn bilstm_recurrence(
    xw: &Tensor,
    w_hh: &Tensor,
    bias: &Tensor,
    lengths: &[usize],
    steps: usize,
) -> Result<Tensor> {
    let (n, g8) = xw.dims2()?;
    let (dirs, g4, h) = w_hh.dims3()?;
    if dirs != 2 || g4 != 4 * h || g8 != 8 * h || h == 0 || bias.dims() != [8 * h] {
        candle_core::bail!(
            "kd-lstm: xw {:?}, w_hh {:?} and bias {:?} are not [N, 8H], [2, 4H, H] and [8H]",
            xw.dims(),
            w_hh.dims(),
            bias.dims()
        );
    }
    check_lengths(lengths, lengths.len(), steps)?;
    if lengths.iter().sum::<usize>() != n {
        candle_core::bail!("kd-lstm: {n} packed tokens for lengths summing to another number");
    }
    if !fits(xw) || !fits(w_hh) || !fits(bias) {
        candle_core::bail!("kd-lstm: the fused recurrence needs CPU f32 tensors");
    }
    let op = Recurrence {
        dims: Dims {
            b: lengths.len(),
            t: steps,
            h,
        },
        plan: Arc::new(Plan::new(lengths, steps)),
        keep: xw.track_op() || w_hh.track_op() || bias.track_op(),
        saved: Mutex::new(None),
    };
    xw.contiguous()?
        .apply_op3(&w_hh.contiguous()?, &bias.contiguous()?, op)
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

/// Rows by length, longest first, how many run at each step, where each row's tokens start.
#[derive(Debug)]
struct Plan {
    lengths: Vec<usize>,
    /// `offsets[b]`: the packed index of row `b`'s first token.
    offsets: Vec<usize>,
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
        let offsets = lengths
            .iter()
            .scan(0, |acc, &l| {
                let o = *acc;
                *acc += l;
                Some(o)
            })
            .collect();
        Self {
            lengths: lengths.to_vec(),
            offsets,
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

/// What the backward pass needs: gate activations `[N, 2, 4H]` and cell states `[N, 2, H]`
/// of the packed tokens.
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
// SAFETY: each direction writes only its own half (forward or reverse) of every output row.
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

/// The output buffers one direction writes its half of.
#[derive(Clone, Copy)]
struct Outputs {
    /// `[B, T, 2H]`.
    out: Shared,
    /// `[N, 2, 4H]` (when kept).
    gates: Shared,
    /// `[N, 2, H]` (when kept).
    cells: Shared,
}

impl Recurrence {
    /// One direction's forward steps; writes its half of the outputs.
    fn forward_dir(&self, d: usize, xw: &[f32], w: &[f32], bias: &[f32], dst: Outputs) {
        #[cfg(target_arch = "x86_64")]
        if crate::activations::avx2_fma() {
            // SAFETY: the CPU has the features the copy is compiled for.
            return unsafe { self.forward_dir_avx2(d, xw, w, bias, dst) };
        }
        self.forward_dir_body(d, xw, w, bias, dst)
    }

    /// [`Self::forward_dir`] compiled for AVX2 + FMA.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_dir_avx2(&self, d: usize, xw: &[f32], w: &[f32], bias: &[f32], dst: Outputs) {
        self.forward_dir_body(d, xw, w, bias, dst)
    }

    #[inline(always)]
    fn forward_dir_body(&self, d: usize, xw: &[f32], w: &[f32], bias: &[f32], dst: Outputs) {
        let Dims { b, t, h } = self.dims;
        let (g4, plan) = (4 * h, &*self.plan);
        let mut hs = vec![0f32; b * h];
        let mut cs = vec![0f32; b * h];
        let mut a = vec![0f32; b * g4];
        let mut tc = vec![0f32; h];
        for s in 0..t {
            let ti = plan.time(d, s);
            let n = plan.running[ti];
            for (r, &row) in plan.order[..n].iter().enumerate() {
                let src = &xw[(plan.offsets[row] + ti) * 2 * g4 + d * g4..][..g4];
                let ar = &mut a[r * g4..(r + 1) * g4];
                for j in 0..g4 {
                    ar[j] = src[j] + bias[j];
                }
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
            gates_in_place(&mut a[..n * g4], h);
            for (r, &row) in plan.order[..n].iter().enumerate() {
                let ar = &a[r * g4..(r + 1) * g4];
                let (i, f, g, o) = (&ar[..h], &ar[h..2 * h], &ar[2 * h..3 * h], &ar[3 * h..]);
                let (hr, cr) = (&mut hs[r * h..(r + 1) * h], &mut cs[r * h..(r + 1) * h]);
                for j in 0..h {
                    cr[j] = f[j] * cr[j] + i[j] * g[j];
                }
                tanh_into(&mut tc, cr);
                for j in 0..h {
                    hr[j] = o[j] * tc[j];
                }
                let p = plan.offsets[row] + ti;
                // SAFETY: step `ti` of `row`, half `d` of each buffer, belongs to this direction.
                unsafe {
                    let o = dst.out.0.add((row * t + ti) * 2 * h + d * h);
                    std::ptr::copy_nonoverlapping(hr.as_ptr(), o, h);
                    if self.keep {
                        let gp = dst.gates.0.add(p * 2 * g4 + d * g4);
                        std::ptr::copy_nonoverlapping(ar.as_ptr(), gp, g4);
                        let cp = dst.cells.0.add(p * 2 * h + d * h);
                        std::ptr::copy_nonoverlapping(cr.as_ptr(), cp, h);
                    }
                }
            }
        }
    }
}

impl CustomOp3 for Recurrence {
    fn name(&self) -> &'static str {
        "kd-lstm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xw = f32_input(s1, l1, self.name())?;
        let w = f32_input(s2, l2, self.name())?;
        let bias = f32_input(s3, l3, self.name())?;
        let Dims { b, t, h } = self.dims;
        let n = xw.len() / (8 * h);
        let mut out = vec![0f32; b * t * 2 * h];
        let (mut gates, mut cells) = if self.keep {
            (vec![0f32; n * 8 * h], vec![0f32; n * 2 * h])
        } else {
            (Vec::new(), Vec::new())
        };
        let dst = Outputs {
            out: Shared(out.as_mut_ptr()),
            gates: Shared(gates.as_mut_ptr()),
            cells: Shared(cells.as_mut_ptr()),
        };
        let (block, g4) = (4 * h * h, 4 * h);
        rayon::join(
            || self.forward_dir(0, xw, &w[..block], &bias[..g4], dst),
            || self.forward_dir(1, xw, &w[block..], &bias[g4..], dst),
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
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self
            .saved
            .lock()
            .expect("lstm state lock")
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("kd-lstm: backward before forward".into()))?;
        let w = w_hh.flatten_all()?.to_vec1::<f32>()?;
        let out = res.flatten_all()?.to_vec1::<f32>()?;
        let dout = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let h = self.dims.h;
        let n = xw.dim(0)?;
        let mut dxw = vec![0f32; n * 8 * h];
        let mut dw = vec![0f32; 8 * h * h];
        let mut db = vec![0f32; 8 * h];
        let shared = Shared(dxw.as_mut_ptr());
        let (block, g4) = (4 * h * h, 4 * h);
        let (dw0, dw1) = dw.split_at_mut(block);
        let (db0, db1) = db.split_at_mut(g4);
        let ctx = Backward {
            dims: self.dims,
            plan: &self.plan,
            saved: &saved,
            out: &out,
            dout: &dout,
            tokens: n,
        };
        rayon::join(
            || ctx.direction(0, &w[..block], shared, dw0, db0),
            || ctx.direction(1, &w[block..], shared, dw1, db1),
        );
        let dev = xw.device();
        Ok((
            Some(Tensor::from_vec(dxw, xw.shape(), dev)?),
            Some(Tensor::from_vec(dw, w_hh.shape(), dev)?),
            Some(Tensor::from_vec(db, bias.shape(), dev)?),
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
    /// Packed tokens `N`.
    tokens: usize,
}

impl Backward<'_> {
    /// Backpropagation through time for direction `d`: writes its half of `dxw` (`[N, 8H]`),
    /// its `dw` block `[4H, H]` and its `db` half `[4H]`.
    fn direction(&self, d: usize, w: &[f32], dxw: Shared, dw: &mut [f32], db: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::activations::avx2_fma() {
            // SAFETY: the CPU has the features the copy is compiled for.
            return unsafe { self.direction_avx2(d, w, dxw, dw, db) };
        }
        self.direction_body(d, w, dxw, dw, db)
    }

    /// [`Self::direction`] compiled for AVX2 + FMA.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn direction_avx2(
        &self,
        d: usize,
        w: &[f32],
        dxw: Shared,
        dw: &mut [f32],
        db: &mut [f32],
    ) {
        self.direction_body(d, w, dxw, dw, db)
    }

    #[inline(always)]
    fn direction_body(&self, d: usize, w: &[f32], dxw: Shared, dw: &mut [f32], db: &mut [f32]) {
        let Dims { b, t, h } = self.dims;
        let (g4, plan, sv) = (4 * h, self.plan, self.saved);
        let mut dh_rec = vec![0f32; b * h];
        let mut dc = vec![0f32; b * h];
        let mut da = vec![0f32; b * g4];
        let mut tc = vec![0f32; h];
        let zeros = vec![0f32; h];
        for s in (0..t).rev() {
            let ti = plan.time(d, s);
            let n = plan.running[ti];
            for (r, &row) in plan.order[..n].iter().enumerate() {
                let p = plan.offsets[row] + ti;
                // The cell state before this step: the neighbour in this direction's order.
                let prev = match d {
                    0 if ti > 0 => Some(p - 1),
                    1 if ti + 1 < plan.lengths[row] => Some(p + 1),
                    _ => None,
                };
                let c_prev = prev.map_or(&zeros[..], |q| &sv.cells[q * 2 * h + d * h..][..h]);
                let c_t = &sv.cells[p * 2 * h + d * h..][..h];
                let acts = &sv.gates[p * 2 * g4 + d * g4..][..g4];
                let dy = &self.dout[(row * t + ti) * 2 * h + d * h..][..h];
                let dar = &mut da[r * g4..(r + 1) * g4];
                let (dhr, dcr) = (&dh_rec[r * h..(r + 1) * h], &mut dc[r * h..(r + 1) * h]);
                tanh_into(&mut tc, c_t);
                let (i, f) = (&acts[..h], &acts[h..2 * h]);
                let (g, o) = (&acts[2 * h..3 * h], &acts[3 * h..4 * h]);
                let (dai, rest) = dar.split_at_mut(h);
                let (daf, rest) = rest.split_at_mut(h);
                let (dag, dao) = rest.split_at_mut(h);
                let (c_prev, dy, tc) = (&c_prev[..h], &dy[..h], &tc[..h]);
                for j in 0..h {
                    let dhj = dy[j] + dhr[j];
                    let dcj = dcr[j] + dhj * o[j] * (1.0 - tc[j] * tc[j]);
                    dai[j] = dcj * g[j] * i[j] * (1.0 - i[j]);
                    daf[j] = dcj * c_prev[j] * f[j] * (1.0 - f[j]);
                    dag[j] = dcj * i[j] * (1.0 - g[j] * g[j]);
                    dao[j] = dhj * tc[j] * o[j] * (1.0 - o[j]);
                    dcr[j] = dcj * f[j];
                }
                for (acc, &v) in db.iter_mut().zip(dar.iter()) {
                    *acc += v;
                }
                // SAFETY: token `p`'s half `d` of `dxw` belongs to this direction.
                unsafe {
                    let q = dxw.0.add(p * 2 * g4 + d * g4);
                    std::ptr::copy_nonoverlapping(dar.as_ptr(), q, g4);
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
        // dW_hh = sum over tokens of da^T h_prev, as one GEMM over all of them.
        let mut h_prev = vec![0f32; self.tokens * h];
        for row in 0..b {
            for ti in 0..plan.lengths[row] {
                let prev = match d {
                    0 if ti > 0 => ti - 1,
                    1 if ti + 1 < plan.lengths[row] => ti + 1,
                    _ => continue,
                };
                let src = &self.out[(row * t + prev) * 2 * h + d * h..][..h];
                h_prev[(plan.offsets[row] + ti) * h..][..h].copy_from_slice(src);
            }
        }
        // SAFETY: dxw's direction-d columns are read as a [4h, N] matrix (column stride 8h);
        // nothing writes them any more. `h_prev` is [N, h], `dw` [4h, h].
        unsafe {
            mm(
                g4,
                h,
                self.tokens,
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
