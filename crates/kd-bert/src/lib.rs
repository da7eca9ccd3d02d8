//! BERT on candle for knowledge distillation: the model teachers and students share, with
//! differentiable fused ops and Hugging Face checkpoint and tokenizer I/O.
//!
//! - [`config`]: `config.json` fields and validation.
//! - [`model`]: embeddings, encoder (hidden states of every layer, attention scores and
//!   probabilities of chosen layers), pooler, MLM head with tied decoder, classifier.
//! - [`ops`]: softmax, LayerNorm, GELU and dropout with fused CPU kernels *and* backward.
//! - [`checkpoint`]: safetensors / `pytorch_model.bin` in, HF directories out, name mapping.
//! - [`pretrained`]: building a model from a directory or from a config.
//! - [`shapes`]: parameter shapes from a config, without allocating the parameters.
//! - [`tokenizer`]: `tokenizer.json` or a WordPiece tokenizer from `vocab.txt`.

pub mod checkpoint;
pub mod config;
pub mod error;
mod files;
pub mod init;
pub mod model;
pub mod ops;
pub mod pretrained;
pub mod shapes;
pub mod tokenizer;

pub use config::{Activation, Architecture, BertConfig};
pub use error::{Error, Result};
pub use model::{Bert, BertInput, EncoderOutput, ForwardCtx};
pub use pretrained::{init_model, load_model, LoadOptions, LoadedModel};
