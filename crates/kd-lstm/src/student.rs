//! The BiLSTM as a kd-student [`Student`]: it returns class logits, so the cache trainer
//! trains it with logit losses (Tang et al.: `hard_ce` with weight `a` and `logit_mse` with
//! weight `1 - a`); a loss list that asks for anything else is refused by name.

use crate::config::BiLstmConfig;
use crate::init::Built;
use crate::model::BiLstmClassifier;
use candle_core::Device;
use candle_nn::VarMap;
use kd_bert::ForwardCtx;
use kd_data::Batch;
use kd_student::student::{Student, StudentOutputs, Wants};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A BiLSTM student with the directory its tokenizer files are copied from on save.
pub struct BiLstmStudent {
    /// The model.
    pub model: BiLstmClassifier,
    /// Its parameters (the optimizer's and the checkpoints' names).
    pub varmap: VarMap,
    /// Where `save` copies the tokenizer files from (the teacher's directory).
    pub tokenizer_dir: Option<PathBuf>,
    device: Device,
}

impl BiLstmStudent {
    /// A student over `built`, whose parameters live on `device`.
    pub fn new(built: Built, tokenizer_dir: Option<PathBuf>, device: &Device) -> Self {
        Self {
            model: built.model,
            varmap: built.varmap,
            tokenizer_dir,
            device: device.clone(),
        }
    }

    /// A student to distil the teacher in `teacher_dir` into (pass the same directory to
    /// `kd_student::distil::run_distil_student` as its tokenizer directory): the teacher's
    /// vocabulary and padding id, the embedding table copied from the teacher's word-piece
    /// embeddings when `copy_embeddings` (then `E` is the teacher's width) or drawn from
    /// `seed` at `config.embedding_size`; saved with the teacher's tokenizer files.
    pub fn for_teacher(
        teacher_dir: &Path,
        config: &BiLstmConfig,
        copy_embeddings: bool,
        seed: u64,
        device: &Device,
    ) -> crate::Result<Self> {
        let built = if copy_embeddings {
            crate::init::from_teacher(teacher_dir, config, seed, device)?
        } else {
            crate::init::fresh_for_teacher(teacher_dir, config, seed, device)?
        };
        Ok(Self::new(built, Some(teacher_dir.to_path_buf()), device))
    }

    /// [`Self::for_teacher`] over the transfer set's vocabulary `map` (see [`crate::vocab`]):
    /// one embedding row per kept piece, copied from the teacher's rows when
    /// `copy_embeddings`; the model maps the teacher tokenizer's ids to its rows.
    pub fn for_transfer_set(
        teacher_dir: &Path,
        config: &BiLstmConfig,
        map: crate::vocab::VocabMap,
        copy_embeddings: bool,
        seed: u64,
        device: &Device,
    ) -> crate::Result<Self> {
        let built =
            crate::init::for_transfer_set(teacher_dir, config, map, copy_embeddings, seed, device)?;
        Ok(Self::new(built, Some(teacher_dir.to_path_buf()), device))
    }

    /// The student saved in `dir` (its own tokenizer files are copied on the next save).
    pub fn load(dir: &Path, device: &Device) -> crate::Result<Self> {
        let built = crate::io::load(dir, device)?;
        Ok(Self::new(built, Some(dir.to_path_buf()), device))
    }

    /// Sizes and settings.
    pub fn config(&self) -> &BiLstmConfig {
        &self.model.config
    }
}

impl Student for BiLstmStudent {
    fn forward(
        &self,
        batch: &Batch,
        wants: &Wants,
        ctx: &mut ForwardCtx,
    ) -> kd_student::Result<StudentOutputs> {
        let mut asked = Vec::new();
        if wants.mlm_logits || wants.mlm_logits_all {
            asked.push("vocabulary logits (soft_ce, mlm_ce)".to_string());
        }
        if !wants.hidden.is_empty() {
            asked.push(format!("hidden states of layers {:?}", wants.hidden));
        }
        if !wants.attention.is_empty() {
            asked.push(format!("attention scores of layers {:?}", wants.attention));
        }
        if !asked.is_empty() {
            return Err(kd_student::Error::Config(format!(
                "a BiLSTM student has class logits only (hard_ce, logit_mse); the loss list asks \
                 for {}",
                asked.join(" and ")
            )));
        }
        let class_logits = if wants.class_logits {
            Some(self.model.forward(batch, ctx, &self.device)?)
        } else {
            None
        };
        Ok(StudentOutputs {
            mlm_logits: None,
            mlm_logits_all: None,
            class_logits,
            hidden: BTreeMap::new(),
            attention_scores: BTreeMap::new(),
        })
    }

    fn num_layers(&self) -> usize {
        1
    }

    fn hidden_size(&self) -> usize {
        2 * self.model.config.hidden_size
    }

    fn num_heads(&self) -> usize {
        0
    }

    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn num_parameters(&self) -> usize {
        let vars = self.varmap.data().lock().expect("varmap lock poisoned");
        vars.iter()
            .filter(|(name, _)| !name.starts_with(kd_student::projections::PREFIX))
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    fn save(&self, dir: &Path) -> kd_student::Result<()> {
        let model_vars = VarMap::new();
        {
            let all = self.varmap.data().lock().expect("varmap lock poisoned");
            let mut own = model_vars.data().lock().expect("varmap lock poisoned");
            for (n, v) in all.iter() {
                if !n.starts_with(kd_student::projections::PREFIX) {
                    own.insert(n.clone(), v.clone());
                }
            }
        }
        crate::io::save_with_map(
            &self.model.config,
            self.model.vocab_map.as_ref(),
            &model_vars,
            dir,
            self.tokenizer_dir.as_deref(),
        )?;
        Ok(())
    }

    fn device(&self) -> &Device {
        &self.device
    }
}
