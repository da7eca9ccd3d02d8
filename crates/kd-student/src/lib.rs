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
//! - [`loss_spec`]: the loss list as settings (kinds, weights, layer maps, projections) and
//!   DistilBERT's shorthand; [`layer_map`]: which student layer learns from which teacher
//!   layer.
//! - [`student`]: the [`Student`](student::Student) interface and the BERT student.
//! - [`loss_terms`]: a loss list resolved against student and cache, and its terms for one
//!   micro-batch; [`projections`]: learned width projections, seeded and saved beside the
//!   student.
//! - [`cache_task`]: any student trained from a cache (or online) as a training task.
//! - [`online`]: the online reference, the teacher recomputing each batch's records.
//! - [`distil`]: a run: settings, open / check / plan / run / finish.

pub mod cache_task;
pub mod distil;
pub mod error;
pub mod eval;
pub mod init;
pub mod layer_map;
pub mod loss_spec;
pub mod loss_terms;
mod loss_terms_attention;
mod loss_terms_input;
pub mod online;
pub mod projections;
pub mod stream;
pub mod student;

pub use error::{Error, Result};
