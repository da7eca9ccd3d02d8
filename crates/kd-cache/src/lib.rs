//! Offline teacher caches for knowledge distillation: what a teacher produced
//! for each (epoch, sequence), stored once and streamed back by students.
//!
//! Plain Rust data only (no tensor library): ids are `Vec<u32>`, tensors are
//! [`Quantized`] matrices at a chosen [`Precision`].
//!
//! Modules:
//! - [`record`]: [`Record`], [`TopK`], [`Sampled`], [`LayerValues`], [`Label`]
//!   and the check of a record against a [`TargetSpec`].
//! - [`quant`]: f32 / f16 / bf16 / int8 (per-row scale) matrices and their error bounds.
//! - [`precision`]: the [`Precision`] enum.
//! - [`qk`]: attention targets as query/key projections, and the scores recomputed from them.
//! - [`attention_input`]: attention targets as each layer's input hidden state plus the
//!   teacher's query/key weights once per cache ([`AttentionWeights`], its side file).
//! - [`topk`]: top-k and sampled MLM targets from full-vocabulary logits, and
//!   teacher probabilities / tail mass at any stored temperature.
//! - [`targets`]: [`TargetSpec`] and the target-string syntax
//!   (`mlm-topk:k=32,hidden:last,attention:3,6`).
//! - [`manifest`]: `manifest.json` ([`Manifest`]), written atomically.
//! - [`compat`]: [`Expectation`] and [`Manifest::check_compatible`].
//! - [`writer`]: [`ShardWriter`] (one shard, either backend) and [`CacheWriter`]
//!   (a folder of shards plus the manifest).
//! - [`reader`]: [`CacheReader`]: random access and streaming over both backends.
//! - [`parquet_write`], [`parquet_read`]: the Parquet backend (a CRC-32 per
//!   column chunk and of the footer, checked on every read).
//! - [`mmap_shard`], [`codec`]: the mmap backend and its record encoding.
//! - [`verify`](mod@verify): checksums and a full decode ([`verify()`]).
//! - [`inspect`](mod@inspect): sizes per column and bytes per token ([`inspect()`]).
//! - [`merge`](mod@merge): joining the parts of a sharded run ([`merge()`]).
//! - [`error`]: the error type, [`CacheError`].
//!
//! The on-disk formats are specified in `schemas/cache-v3.md` (`kd-cache/3`: `kd-cache/2`
//! plus the `attention-input` target and its weights file), `schemas/cache-v2.md`
//! (`kd-cache/2`: `kd-cache/1` plus the `attention-qk` target) and `schemas/cache-v1.md`; a
//! cache is written with the lowest version that holds its targets, and all three are read.

#![warn(missing_docs)]

pub mod attention_input;
pub mod codec;
pub mod compat;
pub mod error;
pub mod inspect;
pub mod manifest;
pub mod merge;
pub mod mmap_shard;
mod parquet_checksums;
pub mod parquet_read;
pub mod parquet_write;
pub mod precision;
pub mod qk;
pub mod quant;
pub mod reader;
pub mod record;
pub mod targets;
pub mod topk;
pub mod verify;
pub mod writer;

pub use attention_input::{AttentionWeights, LayerWeights, ATTENTION_WEIGHTS_FILE};
pub use compat::Expectation;
pub use error::{CacheError, Result};
pub use inspect::{inspect, ColumnSize, InspectReport};
pub use manifest::{
    Backend, CorpusFile, FileRef, Manifest, MaskingParams, Part, ShardInfo, SideFile, TeacherInfo,
    MANIFEST_FILE, SCHEMA_VERSION, SCHEMA_VERSION_1, SCHEMA_VERSION_3,
};
pub use merge::{merge, MergeMode};
pub use precision::Precision;
pub use quant::Quantized;
pub use reader::{CacheIter, CacheReader, Shard, ShardIter};
pub use record::{Label, LayerValues, Record, Sampled, TopK};
pub use targets::{LayerSpec, SampledSpec, TargetSpec, TopKPositions, TopKSpec};
pub use verify::{verify, ShardReport, VerifyReport};
pub use writer::{CacheWriter, ShardWriter, WriterOptions};
