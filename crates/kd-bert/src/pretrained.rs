//! Building models: from a Hugging Face directory, or fresh from a config.

use crate::checkpoint::{find_weights, is_head, load_into_varmap, plan, Checkpoint, LoadReport};
use crate::config::{Architecture, BertConfig, MAX_SIZE};
use crate::error::{Error, Result};
use crate::init::{init_all, init_params};
use crate::model::Bert;
use crate::shapes::{param_shapes, unbacked_sizes};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use std::path::{Path, PathBuf};

/// How to load a model directory.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Heads to build; `None` takes `architectures` from `config.json` (else `BertModel`).
    pub architecture: Option<Architecture>,
    /// Allow heads (pooler, MLM head, classifier) missing from the checkpoint; they are
    /// initialised from `seed` and listed in the report.
    pub fresh_heads: bool,
    /// Number of classes for a classifier built fresh (overrides `id2label`).
    pub num_labels: Option<usize>,
    /// Seed for fresh parameters.
    pub seed: u64,
    /// Where the weights live.
    pub device: Device,
    /// Parameter dtype.
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            architecture: None,
            fresh_heads: false,
            num_labels: None,
            seed: 0,
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }
}

/// A model with the variables that hold its parameters.
pub struct LoadedModel {
    /// The model.
    pub model: Bert,
    /// Its parameters by Hugging Face name (trainable `Var`s).
    pub varmap: VarMap,
    /// Fresh and ignored tensors.
    pub report: LoadReport,
    /// The directory it came from, if any (tokenizer files are copied from there on save).
    pub dir: Option<PathBuf>,
}

impl LoadedModel {
    /// The same model over detached views of its parameters (no copy): forward passes record no
    /// autograd graph, so activations are freed as soon as they are used. For teachers and
    /// evaluation.
    pub fn inference_model(&self) -> Result<Bert> {
        let vars = self.varmap.data().lock().expect("varmap lock poisoned");
        let mut tensors = std::collections::HashMap::with_capacity(vars.len());
        let (mut dtype, mut device) = (DType::F32, Device::Cpu);
        for (name, var) in vars.iter() {
            (dtype, device) = (var.dtype(), var.device().clone());
            tensors.insert(name.clone(), var.as_tensor().detach());
        }
        let vb = VarBuilder::from_tensors(tensors, dtype, &device);
        Ok(Bert::new(&self.model.config, self.model.architecture, vb)?)
    }
}

/// Loads `dir/config.json` and the directory's weights.
///
/// Both are untrusted: the config's sizes are compared with the checkpoint's tensor shapes
/// (read from the file headers, checked against the file sizes) and the whole model is matched
/// against the checkpoint before any parameter is allocated, so a size the checkpoint does not
/// back is refused naming the field, and a mismatch is reported naming each tensor.
pub fn load_model(dir: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let cfg_path = dir.join("config.json");
    if !cfg_path.exists() {
        return Err(Error::Config {
            path: cfg_path,
            msg: "not found (a model directory needs config.json)".into(),
        });
    }
    let cfg_err = |msg: String| Error::Config {
        path: cfg_path.clone(),
        msg,
    };
    let mut config = BertConfig::read_unvalidated(&cfg_path)?;
    let arch = opts
        .architecture
        .or_else(|| config.architecture())
        .unwrap_or(Architecture::Base);
    if let Some(n) = opts.num_labels {
        if n > MAX_SIZE {
            return Err(cfg_err(format!(
                "{n} labels requested, more than the {MAX_SIZE} accepted"
            )));
        }
        if config.num_labels() != n || config.id2label.is_none() {
            config.set_labels(None, n);
        }
    }
    let weights = find_weights(dir)?;
    let checkpoint = Checkpoint::open(&weights)?;
    let tensors = checkpoint.tensors();
    let unbacked = unbacked_sizes(&config, arch, &tensors, &weights);
    if !unbacked.is_empty() {
        return Err(cfg_err(unbacked.join("; ")));
    }
    config.validate().map_err(cfg_err)?;
    let fresh_heads = opts.fresh_heads;
    let fresh_ok = move |n: &str| fresh_heads && is_head(n);
    let params = param_shapes(&config, arch).map_err(|e| cfg_err(e.to_string()))?;
    let plan = plan(&params, &tensors, &fresh_ok);
    if !plan.problems.is_empty() {
        let mut report = plan.problems;
        report.push(format!(
            "model           {} from {}",
            arch.hf_name(),
            cfg_path.display()
        ));
        return Err(Error::Mismatch {
            path: weights,
            report: report.join("\n"),
        });
    }
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, opts.dtype, &opts.device);
    let model = Bert::new(&config, arch, vb)?;
    let report = load_into_varmap(&varmap, checkpoint.load(&opts.device)?, &weights, &fresh_ok)?;
    init_params(&varmap, &report.initialized, opts.seed)?;
    Ok(LoadedModel {
        model,
        varmap,
        report,
        dir: Some(dir.to_path_buf()),
    })
}

/// Builds a randomly initialised model from `config`, reproducibly from `seed`.
pub fn init_model(
    config: &BertConfig,
    architecture: Architecture,
    seed: u64,
    device: &Device,
    dtype: DType,
) -> Result<LoadedModel> {
    config.validate().map_err(|msg| Error::Config {
        path: PathBuf::from("<config>"),
        msg,
    })?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, device);
    let model = Bert::new(config, architecture, vb)?;
    init_all(&varmap, seed)?;
    Ok(LoadedModel {
        model,
        varmap,
        report: LoadReport::default(),
        dir: None,
    })
}
