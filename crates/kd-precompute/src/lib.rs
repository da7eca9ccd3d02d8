//! The teacher side of distillation: run a teacher once over a masked corpus and write what
//! students need to a cache (see the `kd-cache` crate and `schemas/cache-v1.md`).
//!
//! - [`extract`]: one teacher forward pass over a padded batch -> one record per sequence.

pub mod error;
pub mod extract;

pub use error::{Error, Result};
