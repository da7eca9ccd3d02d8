//! What a student is to the trainer: a forward pass that returns what the listed losses ask
//! for, its parameters under stable names, and a way to save itself. BERT students of any
//! depth and width implement it ([`BertStudent`]); other architectures can too.

use crate::Result;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use kd_bert::model::gather_positions;
use kd_bert::{ForwardCtx, LoadedModel};
use kd_data::Batch;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What the losses of a run need from the student's forward pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wants {
    /// Vocabulary logits at the batch's masked positions.
    pub mlm_logits: bool,
    /// Vocabulary logits at every real token.
    pub mlm_logits_all: bool,
    /// Class logits, one row per sequence.
    pub class_logits: bool,
    /// Hidden states by layer (0 = embedding output).
    pub hidden: BTreeSet<usize>,
    /// Pre-softmax attention scores by layer (1-based).
    pub attention: BTreeSet<usize>,
}

/// The outputs of one forward pass, as [`Wants`] asked.
#[derive(Debug, Clone)]
pub struct StudentOutputs {
    /// `[N, V]` at the masked positions, in batch order.
    pub mlm_logits: Option<Tensor>,
    /// `[R, V]` at every real token, row by row in batch order.
    pub mlm_logits_all: Option<Tensor>,
    /// `[B, C]`.
    pub class_logits: Option<Tensor>,
    /// `[B, L, H]` by layer.
    pub hidden: BTreeMap<usize, Tensor>,
    /// `[B, heads, L, L]` by layer: `QK^T / sqrt(d)` plus the additive padding mask on keys.
    pub attention_scores: BTreeMap<usize, Tensor>,
}

/// A model the cache trainer can train.
pub trait Student {
    /// One forward pass in the mode `ctx` says (train: dropout from its RNG).
    fn forward(&self, batch: &Batch, wants: &Wants, ctx: &mut ForwardCtx)
        -> Result<StudentOutputs>;

    /// Encoder layers.
    fn num_layers(&self) -> usize;

    /// Width of the hidden states.
    fn hidden_size(&self) -> usize;

    /// Attention heads per layer (0 for a model without attention).
    fn num_heads(&self) -> usize;

    /// The trainable parameters by stable name (projections of the losses are added here
    /// under `distill.`, so checkpoints and the optimizer cover them).
    fn varmap(&self) -> &VarMap;

    /// Number of the model's own parameters (projections excluded).
    fn num_parameters(&self) -> usize;

    /// Writes the model to `dir` in its own format (for BERT: a Hugging Face directory).
    fn save(&self, dir: &Path) -> Result<()>;

    /// The device its parameters live on.
    fn device(&self) -> &Device;
}

/// A BERT student with an MLM head and/or a classifier, saved as a Hugging Face directory
/// with the tokenizer files of `tokenizer_dir`.
pub struct BertStudent {
    /// The model and its parameters.
    pub loaded: LoadedModel,
    /// Where the tokenizer files come from on save.
    pub tokenizer_dir: PathBuf,
    device: Device,
}

impl BertStudent {
    /// A student over `loaded`, whose parameters live on `device`.
    pub fn new(loaded: LoadedModel, tokenizer_dir: PathBuf, device: &Device) -> Self {
        Self {
            loaded,
            tokenizer_dir,
            device: device.clone(),
        }
    }
}

impl Student for BertStudent {
    fn forward(
        &self,
        batch: &Batch,
        wants: &Wants,
        ctx: &mut ForwardCtx,
    ) -> Result<StudentOutputs> {
        let model = &self.loaded.model;
        let dev = self.device();
        let input = kd_bert::BertInput::from_batch(batch, dev)?;
        let attention: Vec<usize> = wants.attention.iter().copied().collect();
        let out = model.encode(&input, &attention, ctx)?;
        let mut outputs = StudentOutputs {
            mlm_logits: None,
            mlm_logits_all: None,
            class_logits: None,
            hidden: BTreeMap::new(),
            attention_scores: BTreeMap::new(),
        };
        let n_mask = batch.mlm_positions.len();
        if wants.mlm_logits && n_mask > 0 {
            let pos = Tensor::from_slice(&batch.mlm_positions, n_mask, dev)?;
            let h = gather_positions(out.last_hidden_state(), &pos)?;
            outputs.mlm_logits = Some(model.mlm_logits(&h)?);
        }
        if wants.mlm_logits_all {
            let real = batch.real_positions();
            let n = real.len();
            let h = gather_positions(out.last_hidden_state(), &Tensor::from_vec(real, n, dev)?)?;
            outputs.mlm_logits_all = Some(model.mlm_logits(&h)?);
        }
        if wants.class_logits {
            outputs.class_logits = Some(model.classify(&out, ctx)?);
        }
        for &l in &wants.hidden {
            let h = out.hidden_states.get(l).ok_or_else(|| {
                crate::Error::Config(format!(
                    "the student has no hidden layer {l} (it has {} layers)",
                    self.num_layers()
                ))
            })?;
            outputs.hidden.insert(l, h.clone());
        }
        for &l in &wants.attention {
            let maps = out.attention(l).ok_or_else(|| {
                crate::Error::Config(format!(
                    "the student has no attention layer {l} (it has {} layers)",
                    self.num_layers()
                ))
            })?;
            outputs.attention_scores.insert(l, maps.scores.clone());
        }
        Ok(outputs)
    }

    fn num_layers(&self) -> usize {
        self.loaded.model.config.num_hidden_layers
    }

    fn hidden_size(&self) -> usize {
        self.loaded.model.config.hidden_size
    }

    fn num_heads(&self) -> usize {
        self.loaded.model.config.num_attention_heads
    }

    fn varmap(&self) -> &VarMap {
        &self.loaded.varmap
    }

    fn num_parameters(&self) -> usize {
        let vars = self
            .loaded
            .varmap
            .data()
            .lock()
            .expect("varmap lock poisoned");
        vars.iter()
            .filter(|(name, _)| !name.starts_with(crate::projections::PREFIX))
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    fn save(&self, dir: &Path) -> Result<()> {
        kd_bert::checkpoint::save_hf_dir(
            &self.loaded.model,
            &self.loaded.varmap,
            dir,
            Some(&self.tokenizer_dir),
        )?;
        Ok(())
    }

    fn device(&self) -> &Device {
        &self.device
    }
}
