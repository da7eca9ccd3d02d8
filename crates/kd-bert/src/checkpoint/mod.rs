//! Hugging Face checkpoints in and out.

mod fingerprint;
mod load;
mod names;
mod pickle_guard;
mod pth;
mod read;
mod save;

pub use fingerprint::weights_sha256;
pub(crate) use load::plan;
pub use load::{load_into_varmap, LoadReport};
pub use names::{base_model_name, canonical_name, is_head, is_known_head, Mapped};
pub use read::{find_weights, read_tensors, shard_files, weight_files, Checkpoint, TensorMeta};
pub use save::{hf_state_dict, save_hf_dir, TOKENIZER_FILES};
