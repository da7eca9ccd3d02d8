//! Students: built from a teacher's layers (DistilBERT) or a fresh config, trained from a
//! teacher cache without the teacher in memory (or online, with the teacher in process, as the
//! reference), and evaluated against a held-out cache.
//!
//! - [`error`]: the crate's error type.
//! - [`stream`]: the epoch plan over a cache (shard order, shuffle buffer, length-grouped
//!   batches) and the decode-ahead thread.
//! - [`init`]: students from teacher layers (DistilBERT) or a fresh config.
//! - [`eval`](mod@eval): `kd eval`, a student against a held-out cache: accuracy next to the
//!   teacher's, agreement, KL, hidden cosine, size and speed.
//! - [`distil`]: the DistilBERT objective (soft targets + MLM + cosine) as a training task.

pub mod distil;
pub mod error;
pub mod eval;
pub mod init;
pub mod stream;

pub use error::{Error, Result};
