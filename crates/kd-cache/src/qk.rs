//! Attention targets stored as query and key projections (`attention-qk`, schema
//! `kd-cache/2`): the layout of one layer's tensor, its encoding, and the pre-softmax scores
//! recomputed from it exactly as the teacher computes them.
//!
//! # Layout
//! For each of the `n` real tokens, the layer's query projection (`H` values, heads side by
//! side, biases added, unscaled) then its key projection (`H` values): `[n, 2, heads,
//! head_dim]` row-major, `2 H` values per token whatever the sequence length. At f32, f16
//! and bf16 the tensor has one row per token (`[n, 2H]`). At int8 each row of the stored
//! matrix has its own scale, and a token may span several rows: kd writes one row per
//! (token, q|k, head) (`[n * 2 * heads, head_dim]`, [`encode`]); readers accept any whole
//! number of rows per token.
//!
//! # Scores
//! Head `h` of the layer has, for queries `i` and keys `j` of the real block,
//! `s_h[i, j] = (q_h[i] / sqrt(d)) . k_h[j]` with `d = H / heads`: the teacher's own
//! pre-softmax scores without the padding mask (see [`scores`]).

use crate::error::{CacheError, Result};
use crate::precision::Precision;
use crate::quant::Quantized;

fn bad<T>(msg: String) -> Result<T> {
    Err(CacheError::Invalid(msg))
}

/// Values per token of a Q/K tensor over `n` tokens (`2 H`), after checking the row
/// structure: a whole number of rows per token, one row per token unless int8, and an even
/// width. The message says what is wrong; callers add the record and layer.
pub fn width(values: &Quantized, n: usize) -> std::result::Result<usize, String> {
    let (rows, cols) = (values.rows(), values.cols());
    if n == 0 {
        return if rows == 0 {
            Ok(0)
        } else {
            Err(format!("has {rows} rows for 0 tokens"))
        };
    }
    if rows % n != 0 {
        return Err(format!(
            "has {rows} rows of {cols}, not a whole number per token ({n} tokens)"
        ));
    }
    if values.precision() != Precision::Int8 && rows != n {
        return Err(format!(
            "has {rows} rows of {cols}, expected one row per token ({n}) at {}",
            values.precision()
        ));
    }
    let w = rows / n * cols;
    if w == 0 || !w.is_multiple_of(2) {
        return Err(format!(
            "holds {w} values per token; query and key need an even, non-zero width"
        ));
    }
    Ok(w)
}

/// Head width of `hidden` split into `heads`, or an error naming both.
pub fn head_dim(hidden: usize, heads: usize) -> Result<usize> {
    if heads == 0 || hidden == 0 || !hidden.is_multiple_of(heads) {
        return bad(format!(
            "a hidden width of {hidden} does not split into {heads} attention heads"
        ));
    }
    Ok(hidden / heads)
}

/// The Q/K tensor of one layer from the query and key projections `q`, `k` (`[n, hidden]`
/// each, row-major) at `precision`: int8 with one scale per (token, q|k, head), the others
/// one row per token.
pub fn encode(
    q: &[f32],
    k: &[f32],
    n: usize,
    hidden: usize,
    heads: usize,
    precision: Precision,
) -> Result<Quantized> {
    let d = head_dim(hidden, heads)?;
    if q.len() != n * hidden || k.len() != n * hidden {
        return bad(format!(
            "query/key projections of {} and {} values, expected {n} x {hidden} each",
            q.len(),
            k.len()
        ));
    }
    let mut values = Vec::with_capacity(2 * n * hidden);
    for t in 0..n {
        values.extend_from_slice(&q[t * hidden..(t + 1) * hidden]);
        values.extend_from_slice(&k[t * hidden..(t + 1) * hidden]);
    }
    let cols = if precision == Precision::Int8 {
        d
    } else {
        2 * hidden
    };
    Quantized::encode(&values, cols, precision)
}

/// Dot product with eight independent accumulators (vectorises; the order differs from a
/// sequential sum by float rounding only).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// The pre-softmax scores `[heads, n, n]` (row-major) recomputed from the Q/K tensor of one
/// layer over `n` tokens, for a teacher of width `hidden` and `heads` heads (the manifest's
/// `hidden_size` and `num_attention_heads`). Errors name the width or split that does not fit.
pub fn scores(values: &Quantized, n: usize, hidden: usize, heads: usize) -> Result<Vec<f32>> {
    let d = head_dim(hidden, heads)?;
    let w = width(values, n).map_err(CacheError::Invalid)?;
    if n > 0 && w != 2 * hidden {
        return bad(format!(
            "Q/K holds {w} values per token, expected 2 x hidden = {} (hidden_size {hidden})",
            2 * hidden
        ));
    }
    let v = values.decode();
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    // Per head: the scaled queries and the keys as contiguous [n, d] blocks.
    let mut qh = vec![0f32; n * d];
    let mut kh = vec![0f32; n * d];
    let mut out = vec![0f32; heads * n * n];
    for h in 0..heads {
        for t in 0..n {
            let row = &v[t * w..(t + 1) * w];
            for (dst, src) in qh[t * d..(t + 1) * d]
                .iter_mut()
                .zip(&row[h * d..(h + 1) * d])
            {
                *dst = src * scale;
            }
            kh[t * d..(t + 1) * d].copy_from_slice(&row[hidden + h * d..hidden + (h + 1) * d]);
        }
        for i in 0..n {
            let qi = &qh[i * d..(i + 1) * d];
            let dst = &mut out[(h * n + i) * n..(h * n + i + 1) * n];
            for (j, o) in dst.iter_mut().enumerate() {
                *o = dot(qi, &kh[j * d..(j + 1) * d]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores by the definition, in f64.
    fn reference(q: &[f32], k: &[f32], n: usize, hidden: usize, heads: usize) -> Vec<f64> {
        let d = hidden / heads;
        let mut out = Vec::new();
        for h in 0..heads {
            for i in 0..n {
                for j in 0..n {
                    let s: f64 = (0..d)
                        .map(|x| {
                            f64::from(q[i * hidden + h * d + x])
                                * f64::from(k[j * hidden + h * d + x])
                        })
                        .sum();
                    out.push(s / (d as f64).sqrt());
                }
            }
        }
        out
    }

    fn sample(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (i as f32 * 0.37 + seed as f32).sin() * 3.0)
            .collect()
    }

    #[test]
    fn scores_match_the_definition_at_every_precision() {
        let (n, hidden, heads) = (5, 12, 3);
        let (q, k) = (sample(n * hidden, 1), sample(n * hidden, 2));
        let want = reference(&q, &k, n, hidden, heads);
        for (p, tol) in [
            (Precision::F32, 1e-5),
            (Precision::F16, 1e-2),
            (Precision::Bf16, 1e-1),
            (Precision::Int8, 1e-1),
        ] {
            let t = encode(&q, &k, n, hidden, heads, p).unwrap();
            let expect_rows = if p == Precision::Int8 {
                n * 2 * heads
            } else {
                n
            };
            assert_eq!((t.rows(), width(&t, n).unwrap()), (expect_rows, 2 * hidden));
            let got = scores(&t, n, hidden, heads).unwrap();
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (f64::from(*a) - b).abs())
                .fold(0.0, f64::max);
            assert!(err < tol, "{p}: {err}");
        }
        // A hand-checked entry: head 1, query 2, key 4.
        let d = 4;
        let s: f32 = (0..d)
            .map(|x| q[2 * hidden + d + x] * k[4 * hidden + d + x])
            .sum();
        let got = scores(
            &encode(&q, &k, n, hidden, heads, Precision::F32).unwrap(),
            n,
            hidden,
            heads,
        )
        .unwrap();
        assert!((got[(n + 2) * n + 4] - s / 2.0).abs() < 1e-5);
    }

    #[test]
    fn bad_widths_and_splits_are_named() {
        let (n, hidden, heads) = (3, 8, 2);
        let t = encode(
            &sample(24, 1),
            &sample(24, 2),
            n,
            hidden,
            heads,
            Precision::F16,
        )
        .unwrap();
        let e = scores(&t, n, 12, 2).unwrap_err().to_string();
        assert!(
            e.contains("16 values per token") && e.contains("2 x hidden = 24"),
            "{e}"
        );
        let e = scores(&t, n, 8, 3).unwrap_err().to_string();
        assert!(e.contains("8 does not split into 3"), "{e}");
        let odd = Quantized::encode(&[1.0; 9], 3, Precision::F32).unwrap();
        assert!(width(&odd, 3).unwrap_err().contains("even"));
        let rows = Quantized::encode(&[1.0; 16], 4, Precision::F16).unwrap();
        assert!(width(&rows, 2).unwrap_err().contains("one row per token"));
        let int8 = Quantized::encode(&[1.0; 16], 4, Precision::Int8).unwrap();
        assert_eq!(width(&int8, 2).unwrap(), 8);
        assert!(width(&int8, 3).unwrap_err().contains("whole number"));
    }
}
