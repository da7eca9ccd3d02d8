//! The teacher side of distillation: run a teacher once over a masked corpus (or task data)
//! and write what students need to a cache (see the `kd-cache` crate and
//! `schemas/cache-v2.md`).
//!
//! - [`sources`]: which sequences (corpus split and sample, or a task split).
//! - [`plan`]: shards per masked epoch, and the slice a `--shard i/N` part produces.
//! - [`labels`]: a task's labels checked against (and named ones mapped to) the teacher's.
//! - [`mismatch`]: what differs when an output folder holds another configuration's cache.
//!
//! Records come from one teacher forward pass in [`kd_teacher::targets`].
//! - [`run`]: the whole run: teacher thread, bounded queue, writer thread, resume, manifest.

pub mod error;
pub mod labels;
pub mod mismatch;
pub mod plan;
pub mod run;
pub mod sources;

pub use error::{Error, Result};
pub use run::{run_precompute, PrecomputeConfig, PrecomputeReport};
