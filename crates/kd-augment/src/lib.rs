//! Data augmentation for task-specific distillation: the transfer set a fine-tuned teacher
//! labels once, built from a task's training split plus augmented copies.
//!
//! Two families:
//! - [`tinybert`] (Jiao et al. 2020): alphabetic non-stopwords replaced (p = 0.4) by the
//!   teacher's MLM candidates (one-piece words, batched forward passes of
//!   `[CLS] masked [SEP] original [SEP]`) or by embedding neighbours (multi-piece words).
//! - [`tang`] (Tang et al. 2019): per word `[MASK]` (p = 0.1) or a word of the same POS tag
//!   (p = 0.1, tags from Brill's lexicon, [`lexicon`] and [`pos`]), then n-gram sampling
//!   (p = 0.25, n in 1..=5).
//!
//! [`run_augment`] reads a task file ([`input`]), writes the JSONL transfer set ([`output`]):
//! the original first, duplicates dropped, `source_id` and `method` columns, every draw from a
//! ChaCha8 stream per (seed, example, copy) ([`rng`]), so one seed always writes the same bytes
//! (for `tinybert`, at one `batch_size`: another batch shape rounds the teacher's logits
//! differently, which can reorder candidates at near-ties).
//!
//! ```
//! use kd_augment::{lexicon::Lexicon, tang::{TangSettings, TangText}, rng::copy_rng};
//! let lex = Lexicon::parse("lexicon.js".as_ref(),
//!     r#"module.exports = {"a": ["DT"], "good": ["JJ"], "fine": ["JJ"], "film": ["NN"]};"#)?;
//! let text = TangText::new("a good film", &lex);
//! assert_eq!(text.tags(), ["DT", "JJ", "NN"]);
//! let copy = text.augment(&lex, &TangSettings::default(), &mut copy_rng(b"tang", 0, 0, 0));
//! assert!(!copy.is_empty());
//! # Ok::<(), kd_augment::AugmentError>(())
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod input;
pub mod lexicon;
pub mod neighbours;
pub mod output;
pub mod parquet_out;
pub mod pos;
pub mod rng;
pub mod run;
pub mod stopwords;
pub mod tang;
pub mod teacher;
pub mod tinybert;
pub mod words;

pub use error::{AugmentError, Result};
pub use run::{run_augment, AugmentConfig, AugmentReport, Method};
