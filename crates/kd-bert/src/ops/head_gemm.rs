//! Per-head GEMMs over `[B, L, H]` buffers for the fused attention kernels.
//!
//! The attention kernels parallelise over (sequence, head) pairs and run one single-threaded
//! GEMM per pair on strided views of the dense layers' outputs, so no head split is copied.

use gemm::{gemm, Parallelism};

/// Sizes of an attention over `[B, L, H]` inputs split into `heads` heads.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    /// Sequences.
    pub b: usize,
    /// Tokens per sequence.
    pub l: usize,
    /// Hidden width (all heads side by side).
    pub h: usize,
    /// Number of heads.
    pub heads: usize,
}

impl Dims {
    /// Head width.
    pub fn d(&self) -> usize {
        self.h / self.heads
    }

    /// Offset of head `hd` of sequence `s` in a `[B, L, H]` buffer.
    pub fn head_offset(&self, s: usize, hd: usize) -> usize {
        s * self.l * self.h + hd * self.d()
    }

    /// Elements of one `[B, heads, L, L]` map.
    pub fn map_len(&self) -> usize {
        self.b * self.heads * self.l * self.l
    }
}

/// A raw pointer that rayon tasks write through at disjoint offsets.
#[derive(Clone, Copy)]
pub(super) struct Out(pub *mut f32);
// SAFETY: every task writes a disjoint set of elements (one head of one sequence).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The output matrix at element `offset`, with row stride `rs`.
    ///
    /// # Safety
    /// `offset` must lie inside the output buffer.
    pub unsafe fn at(self, offset: usize, rs: isize) -> Dst {
        Dst(self.0.add(offset), rs)
    }
}

/// A row-major output matrix view for [`mm`]: base pointer and row stride.
#[derive(Clone, Copy)]
pub(super) struct Dst(pub *mut f32, pub isize);

/// A row-major or strided matrix view for [`mm`]: base pointer, row stride, column stride.
#[derive(Clone, Copy)]
pub(super) struct Mat(pub *const f32, pub isize, pub isize);

/// `dst = beta * a b` (`a` m x k, `b` k x n, `dst` m x n), single-threaded: the caller
/// parallelises over heads.
///
/// # Safety
/// The views must lie inside their buffers for the given sizes.
pub(super) unsafe fn mm(m: usize, n: usize, k: usize, dst: Dst, a: Mat, b: Mat, beta: f32) {
    gemm(
        m,
        n,
        k,
        dst.0,
        1,
        dst.1,
        false,
        a.0,
        a.2,
        a.1,
        b.0,
        b.2,
        b.1,
        0.0,
        beta,
        false,
        false,
        false,
        Parallelism::None,
    );
}
