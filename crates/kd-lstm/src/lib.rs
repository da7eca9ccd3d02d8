//! A BiLSTM student after Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT
//! into Simple Neural Networks": word embeddings, one bidirectional LSTM layer, max pooling
//! over time, a ReLU layer and class logits, trained from a teacher cache on the teacher's
//! logits. The embedding table has a row for every word piece of the teacher, or
//! (`vocabulary = "transfer_set"`) only for the pieces seen in the transfer set and the special
//! tokens, the model mapping the teacher's ids to its rows ([`vocab`]).
//!
//! ```
//! use candle_core::Device;
//! use kd_bert::ForwardCtx;
//! use kd_data::{collate, BatchItem};
//! use kd_lstm::{init, io, BiLstmConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = BiLstmConfig { vocab_size: 100, embedding_size: 16, hidden_size: 8, ..Default::default() };
//! let built = init::fresh(&cfg, 0, &Device::Cpu)?; // seeded; or init::from_teacher(dir, ...)
//! let ids = [2u32, 17, 45, 3];                      // the teacher tokenizer's word pieces
//! let item = BatchItem { id: 0, input_ids: &ids, token_type_ids: None, mlm_positions: &[],
//!                        mlm_labels: &[], label: None };
//! let batch = collate(&[item], cfg.pad_token_id)?;
//! let logits = built.model.forward(&batch, &mut ForwardCtx::eval(), &Device::Cpu)?;
//! assert_eq!(logits.dims(), &[1, 2]);
//! let dir = tempfile::tempdir()?;
//! io::save(&built.model.config, &built.varmap, &dir.path().join("student"), None)?;
//! # Ok(())
//! # }
//! ```
//!
//! The saved directory loads in PyTorch with `tests/fixtures/kd_bilstm.py` (`load(dir)` gives
//! an `nn.Module` with the same logits).
//!
//! - [`recurrence`]: the LSTM recurrence of both directions as one candle node on the CPU,
//!   with backpropagation through time.
//! - [`lstm`]: the bidirectional layer under PyTorch's `nn.LSTM` parameter names.
//! - [`config`]: `config.json` (its fields and the saved tensor names are documented there).
//! - [`vocab`]: a vocabulary of the transfer set's pieces and the map to its rows.
//! - [`model`]: the classifier (single sentences, or siamese over sentence pairs).
//! - [`init`]: seeded fresh parameters, the embedding table from a teacher.
//! - [`io`]: the saved directory (config, PyTorch-named weights, tokenizer files).
//! - [`student`]: the model as a kd-student `Student` (class logits for logit losses).
//! - [`error`]: the crate's error type.

mod activations;
pub mod config;
pub mod error;
pub mod init;
pub mod io;
pub mod lstm;
pub mod model;
pub mod recurrence;
pub mod student;
pub mod vocab;

pub use config::{BiLstmConfig, Vocabulary};
pub use error::{Error, Result};
pub use lstm::BiLstm;
pub use model::BiLstmClassifier;
pub use recurrence::bilstm_recurrence;
pub use student::BiLstmStudent;
pub use vocab::VocabMap;
