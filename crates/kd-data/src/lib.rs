//! Text to model inputs for BERT distillation, without any tensor library:
//! every output is plain Rust data (`Vec<u32>` ids and the like).
//!
//! Modules:
//! - [`corpus`]: plain-text and JSONL corpora, read strictly (UTF-8, errors
//!   name file and line) in a deterministic order with stable document ids.
//! - [`parquet_corpus`]: Parquet corpora (a text column, one document per row).
//! - [`packing`]: parallel tokenization and document-aware packing into
//!   `[CLS] paragraphs [SEP]` sequences with the DistilBERT drop rules.
//! - [`task`]: classification/regression datasets from TSV or JSONL.
//! - [`task_data`]: a task's data as settings name it (movie reviews or files per split),
//!   read into train/dev/test.
//! - [`encode`]: `[CLS] a [SEP] b [SEP]` encoding of task examples.
//! - [`movie_reviews`]: the movie-review sentiment set with its fixed split.
//! - [`provenance`]: the record beside a derived task file (transfer set) of what wrote it.
//! - [`masking`]: deterministic MLM masking (80/10/10, optional frequency
//!   smoothing) and token counts.
//! - [`batch`]: padding, attention masks, MLM positions and length-grouped
//!   batch order.
//! - [`tokens`]: special-token lookup and plain tokenization.
//! - [`text`]: strict UTF-8 line reading.
//! - [`error`]: the error type.
//!
//! The tokenizer is a `tokenizers::Tokenizer` built elsewhere; special-token
//! ids are looked up by their strings (`[CLS]`, `[SEP]`, `[MASK]`, `[PAD]`,
//! `[UNK]`).

#![warn(missing_docs)]

pub mod batch;
pub mod corpus;
pub mod encode;
pub mod error;
pub mod masking;
pub mod movie_reviews;
pub mod packing;
pub mod parquet_corpus;
pub mod provenance;
pub mod task;
pub mod task_data;
pub mod text;
pub mod tokens;

pub use batch::{collate, length_grouped_batches, Batch, BatchItem, GroupConfig};
pub use corpus::{Corpus, CorpusFormat, Document, Paragraph};
pub use encode::{encode_dataset, encode_text_pair, EncodedExample};
pub use error::{DataError, Result};
pub use masking::{mask_rng, MaskAction, MaskConfig, MaskedSequence, Masker, TokenCounts};
pub use movie_reviews::{load_movie_reviews, MovieReview, MovieReviews, Split};
pub use packing::{pack_corpus, CutRule, PackConfig, PackStats, Packed, PackedSequence};
pub use provenance::{provenance_path, read_provenance, Provenance};
pub use task::{
    read_task, read_task_with_labels, ColumnRef, Label, LabelKind, TaskDataset, TaskExample,
    TaskFormat, TaskSpec,
};
pub use task_data::{Splits, TaskData, TaskSplit};
pub use tokens::{SpecialTokens, TextEncoder, WordBoundaries};
