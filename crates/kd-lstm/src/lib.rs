//! A BiLSTM student after Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT
//! into Simple Neural Networks": word embeddings, one bidirectional LSTM layer, max pooling
//! over time, a ReLU layer and class logits, trained from a teacher cache on the teacher's
//! logits.
//!
//! - [`recurrence`]: the LSTM recurrence of both directions as one candle node on the CPU,
//!   with backpropagation through time.
//! - [`lstm`]: the bidirectional layer under PyTorch's `nn.LSTM` parameter names.
//! - [`config`]: `config.json` (its fields and the saved tensor names are documented there).
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

pub use config::BiLstmConfig;
pub use error::{Error, Result};
pub use lstm::BiLstm;
pub use model::BiLstmClassifier;
pub use recurrence::bilstm_recurrence;
pub use student::BiLstmStudent;
