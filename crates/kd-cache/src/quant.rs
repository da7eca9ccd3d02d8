//! Quantized row-major matrices: f32, f16, bf16, and int8 with one scale per row.
//!
//! Error bounds of [`Quantized::encode`] (checked by the tests):
//! - `f32`: exact.
//! - `f16`: `|x' - x| <= 2^-11 |x|` for `|x| >= 2^-14`, `<= 2^-25` below (subnormals);
//!   values with `|x| > 65504` are refused.
//! - `bf16`: `|x' - x| <= 2^-8 |x|` (same exponent range as f32).
//! - `int8`: per row `scale = max|x| / 127`, `q = round(x / scale)`, and
//!   `|q * scale - x| <= scale / 2`.
//!
//! Non-finite inputs are refused for every precision.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::error::{CacheError, Result};
use crate::precision::Precision;

/// A row-major matrix of `rows x cols` values stored at a [`Precision`].
///
/// `data` holds the little-endian element bytes; for [`Precision::Int8`],
/// `scales` holds one f32 per row (empty otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    precision: Precision,
    cols: usize,
    data: Vec<u8>,
    scales: Vec<f32>,
}

/// Values converted at a time between f16 and f32 (uses the CPU's
/// conversion instructions where `half` detects them).
const CHUNK: usize = 1024;

fn check_finite(values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(CacheError::Invalid(format!(
            "cannot store non-finite value {} at element {i}",
            values[i]
        ))),
        None => Ok(()),
    }
}

impl Quantized {
    /// Quantizes `values` (row-major, rows of `cols`) to `precision`.
    ///
    /// Fails when `values.len()` is not a multiple of `cols`, a value is not
    /// finite, or (f16) a value is outside the f16 range.
    pub fn encode(values: &[f32], cols: usize, precision: Precision) -> Result<Self> {
        if cols == 0 && !values.is_empty() {
            return Err(CacheError::Invalid(format!(
                "{} values cannot form rows of 0 columns",
                values.len()
            )));
        }
        if cols > 0 && !values.len().is_multiple_of(cols) {
            return Err(CacheError::Invalid(format!(
                "{} values do not form rows of {cols}",
                values.len()
            )));
        }
        check_finite(values)?;
        let mut data = Vec::with_capacity(values.len() * precision.elem_size());
        let mut scales = Vec::new();
        match precision {
            Precision::F32 => {
                for v in values {
                    data.extend_from_slice(&v.to_le_bytes());
                }
            }
            Precision::F16 => {
                if let Some(v) = values.iter().find(|v| v.abs() > f16::MAX.to_f32()) {
                    return Err(CacheError::Invalid(format!(
                        "value {v} is outside the f16 range (max 65504); use bf16 or f32"
                    )));
                }
                let mut buf = [f16::ZERO; CHUNK];
                for chunk in values.chunks(CHUNK) {
                    let buf = &mut buf[..chunk.len()];
                    buf.convert_from_f32_slice(chunk);
                    for h in buf.iter() {
                        data.extend_from_slice(&h.to_le_bytes());
                    }
                }
            }
            Precision::Bf16 => {
                for v in values {
                    data.extend_from_slice(&bf16::from_f32(*v).to_le_bytes());
                }
            }
            Precision::Int8 => {
                scales.reserve(values.len() / cols.max(1));
                for row in values.chunks_exact(cols.max(1)) {
                    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let scale = max / 127.0;
                    scales.push(scale);
                    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                    for v in row {
                        let q = (v * inv).round().clamp(-127.0, 127.0) as i8;
                        data.push(q as u8);
                    }
                }
            }
        }
        Ok(Quantized {
            precision,
            cols,
            data,
            scales,
        })
    }

    /// Stores `values` exactly (f32).
    pub fn from_f32(values: &[f32], cols: usize) -> Result<Self> {
        Quantized::encode(values, cols, Precision::F32)
    }

    /// Rebuilds a matrix from its stored parts, checking that the sizes fit:
    /// `data.len()` a multiple of `cols * elem_size`, and for int8 one finite,
    /// non-negative scale per row (no scales otherwise).
    pub fn from_parts(
        precision: Precision,
        cols: usize,
        data: Vec<u8>,
        scales: Vec<f32>,
    ) -> Result<Self> {
        let row_bytes = cols * precision.elem_size();
        if row_bytes == 0 {
            if !data.is_empty() || !scales.is_empty() {
                return Err(CacheError::Invalid(format!(
                    "{} bytes cannot form rows of 0 columns",
                    data.len()
                )));
            }
        } else if !data.len().is_multiple_of(row_bytes) {
            return Err(CacheError::Invalid(format!(
                "{} bytes do not form {precision} rows of {cols} columns",
                data.len()
            )));
        }
        let rows = data.len().checked_div(row_bytes).unwrap_or(0);
        let want_scales = if precision == Precision::Int8 {
            rows
        } else {
            0
        };
        if scales.len() != want_scales {
            return Err(CacheError::Invalid(format!(
                "{precision} matrix of {rows} rows needs {want_scales} scales, got {}",
                scales.len()
            )));
        }
        if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(CacheError::Invalid(format!("bad int8 row scale {s}")));
        }
        Ok(Quantized {
            precision,
            cols,
            data,
            scales,
        })
    }

    /// The storage precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.data
            .len()
            .checked_div(self.cols * self.precision.elem_size())
            .unwrap_or(0)
    }

    /// Number of values (`rows * cols`).
    pub fn len(&self) -> usize {
        self.rows() * self.cols
    }

    /// Whether there is no value.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The little-endian element bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The int8 row scales (empty for other precisions).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Stored size: element bytes plus 4 bytes per scale.
    pub fn byte_size(&self) -> usize {
        self.data.len() + 4 * self.scales.len()
    }

    /// Splits into `(precision, cols, data, scales)`.
    pub fn into_parts(self) -> (Precision, usize, Vec<u8>, Vec<f32>) {
        (self.precision, self.cols, self.data, self.scales)
    }

    /// All values as f32, row-major.
    pub fn decode(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len());
        for r in 0..self.rows() {
            self.decode_row_into(r, &mut out);
        }
        out
    }

    /// Row `r` as f32, or `None` past the last row.
    pub fn decode_row(&self, r: usize) -> Option<Vec<f32>> {
        if r >= self.rows() {
            return None;
        }
        let mut out = Vec::with_capacity(self.cols);
        self.decode_row_into(r, &mut out);
        Some(out)
    }

    fn decode_row_into(&self, r: usize, out: &mut Vec<f32>) {
        let size = self.precision.elem_size();
        let start = r * self.cols * size;
        let bytes = &self.data[start..start + self.cols * size];
        match self.precision {
            Precision::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            Precision::F16 => {
                let mut halves = [f16::ZERO; CHUNK];
                let mut floats = [0f32; CHUNK];
                for chunk in bytes.chunks(2 * CHUNK) {
                    let n = chunk.len() / 2;
                    for (h, b) in halves.iter_mut().zip(chunk.chunks_exact(2)) {
                        *h = f16::from_le_bytes([b[0], b[1]]);
                    }
                    halves[..n].convert_to_f32_slice(&mut floats[..n]);
                    out.extend_from_slice(&floats[..n]);
                }
            }
            Precision::Bf16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            Precision::Int8 => {
                let scale = self.scales[r];
                out.extend(bytes.iter().map(|&b| f32::from(b as i8) * scale));
            }
        }
    }

    /// The same values stored at `precision` (decoded and encoded again; a
    /// clone when the precision is already `precision`).
    pub fn to_precision(&self, precision: Precision) -> Result<Quantized> {
        if precision == self.precision {
            return Ok(self.clone());
        }
        Quantized::encode(&self.decode(), self.cols, precision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn sample(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let mag = 10f32.powf(rng.random_range(-6.0..4.0));
                let v = if i.is_multiple_of(7) { 0.0 } else { mag };
                if rng.random_bool(0.5) {
                    -v
                } else {
                    v
                }
            })
            .collect()
    }

    #[test]
    fn f32_is_exact() {
        let v = sample(1000, 1);
        let q = Quantized::encode(&v, 10, Precision::F32).unwrap();
        assert_eq!(q.rows(), 100);
        assert_eq!(q.decode(), v);
    }

    #[test]
    fn f16_relative_error_bound() {
        let v = sample(4000, 2);
        let d = Quantized::encode(&v, 40, Precision::F16).unwrap().decode();
        for (x, y) in v.iter().zip(&d) {
            let bound = x.abs() * 2f32.powi(-11) + 2f32.powi(-25);
            assert!((x - y).abs() <= bound, "{x} -> {y}");
            assert!((x - y).abs() <= 1e-3 * x.abs() + 1e-7);
        }
    }

    #[test]
    fn bf16_relative_error_bound() {
        let v = sample(4000, 3);
        let d = Quantized::encode(&v, 40, Precision::Bf16).unwrap().decode();
        for (x, y) in v.iter().zip(&d) {
            assert!((x - y).abs() <= x.abs() * 2f32.powi(-8), "{x} -> {y}");
            assert!((x - y).abs() <= 8e-3 * x.abs());
        }
    }

    #[test]
    fn int8_error_is_at_most_half_a_step_per_row() {
        let v = sample(4000, 4);
        let q = Quantized::encode(&v, 50, Precision::Int8).unwrap();
        assert_eq!(q.scales().len(), 80);
        assert_eq!(q.byte_size(), 4000 + 80 * 4);
        let d = q.decode();
        for (r, (row, back)) in v.chunks(50).zip(d.chunks(50)).enumerate() {
            let scale = q.scales()[r];
            let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!((scale - max / 127.0).abs() <= 1e-6 * max);
            for (x, y) in row.iter().zip(back) {
                assert!(
                    (x - y).abs() <= scale / 2.0 * (1.0 + 1e-5) + 1e-30,
                    "{x} {y}"
                );
            }
        }
        let zero = Quantized::encode(&[0.0; 8], 4, Precision::Int8).unwrap();
        assert_eq!(zero.decode(), vec![0.0; 8]);
        assert_eq!(zero.decode_row(1).unwrap(), vec![0.0; 4]);
        assert!(zero.decode_row(2).is_none());
    }

    #[test]
    fn refuses_bad_input() {
        assert!(Quantized::encode(&[1.0; 5], 2, Precision::F16).is_err());
        assert!(Quantized::encode(&[1.0], 0, Precision::F16).is_err());
        let err = Quantized::encode(&[1.0, f32::NAN], 2, Precision::Int8).unwrap_err();
        assert!(err.to_string().contains("non-finite"), "{err}");
        let err = Quantized::encode(&[70000.0, 1.0], 2, Precision::F16).unwrap_err();
        assert!(err.to_string().contains("f16 range"), "{err}");
        assert!(Quantized::from_parts(Precision::F16, 3, vec![0; 5], vec![]).is_err());
        assert!(Quantized::from_parts(Precision::Int8, 2, vec![0; 4], vec![1.0]).is_err());
        assert!(Quantized::from_parts(Precision::Int8, 2, vec![0; 4], vec![1.0, -1.0]).is_err());
        let ok = Quantized::from_parts(Precision::Int8, 2, vec![0; 4], vec![1.0, 2.0]).unwrap();
        assert_eq!(ok.rows(), 2);
        let empty = Quantized::encode(&[], 0, Precision::Bf16).unwrap();
        assert_eq!((empty.rows(), empty.len()), (0, 0));
    }

    #[test]
    fn conversion_between_precisions() {
        let v = sample(600, 5);
        let f32q = Quantized::from_f32(&v, 30).unwrap();
        let i8q = f32q.to_precision(Precision::Int8).unwrap();
        assert_eq!(i8q.precision(), Precision::Int8);
        assert_eq!(i8q.rows(), 20);
        assert_eq!(f32q.to_precision(Precision::F32).unwrap(), f32q);
    }
}
