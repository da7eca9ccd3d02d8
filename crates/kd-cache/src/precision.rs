//! Storage precisions of floating-point targets.

use std::fmt;
use std::str::FromStr;

use crate::error::{CacheError, Result};

/// How the values of a floating-point target are stored.
///
/// The byte layout of each is little-endian: `f32` IEEE binary32, `f16` IEEE
/// binary16, `bf16` the upper 16 bits of binary32 (rounded to nearest even),
/// `int8` two's-complement bytes with one `f32` scale per row
/// (`x ≈ q * scale`, `scale = max|x| / 127`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit float (exact).
    F32,
    /// IEEE half precision: relative error <= 2^-11.
    F16,
    /// bfloat16: relative error <= 2^-8.
    Bf16,
    /// Symmetric 8-bit integers with one f32 scale per row: absolute error <= scale / 2.
    Int8,
}

impl Precision {
    /// Every precision, in code order.
    pub const ALL: [Precision; 4] = [
        Precision::F32,
        Precision::F16,
        Precision::Bf16,
        Precision::Int8,
    ];

    /// Bytes per stored element (without the int8 row scales).
    pub fn elem_size(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 | Precision::Bf16 => 2,
            Precision::Int8 => 1,
        }
    }

    /// The one-byte code used in mmap shards: 0 f32, 1 f16, 2 bf16, 3 int8.
    pub fn code(self) -> u8 {
        match self {
            Precision::F32 => 0,
            Precision::F16 => 1,
            Precision::Bf16 => 2,
            Precision::Int8 => 3,
        }
    }

    /// The precision with [`Precision::code`] `code`.
    pub fn from_code(code: u8) -> Option<Precision> {
        Precision::ALL.into_iter().find(|p| p.code() == code)
    }

    /// The lower-case name (`f32`, `f16`, `bf16`, `int8`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = CacheError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "int8" | "i8" | "q8" => Ok(Precision::Int8),
            other => Err(CacheError::Target(format!(
                "unknown precision `{other}` (known: f32, f16, bf16, int8)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_codes_and_parsing_agree() {
        for p in Precision::ALL {
            assert_eq!(Precision::from_code(p.code()), Some(p));
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
        }
        assert_eq!(Precision::from_code(9), None);
        let err = "f8".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("f8") && err.contains("bf16"), "{err}");
    }
}
