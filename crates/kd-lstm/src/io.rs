//! A BiLSTM student on disk: one directory with `config.json` (see [`crate::config`]),
//! `model.safetensors` (f32, PyTorch names), the teacher's tokenizer files and, for a
//! vocabulary of its own, `vocab_map.json` (see [`crate::vocab`]). Saving is
//! atomic (a temporary sibling directory replaces the target once complete); loading checks
//! every tensor's name, dtype and shape against the config.

use crate::config::{BiLstmConfig, Vocabulary};
use crate::init::Built;
use crate::model::BiLstmClassifier;
use crate::vocab::{VocabMap, VOCAB_MAP};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use kd_core::fs::{sync_file, write_synced};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

/// The weight file's name.
pub const WEIGHTS: &str = "model.safetensors";
/// The config file's name.
pub const CONFIG: &str = "config.json";

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Writes `config`, the parameters of `varmap` and the tokenizer files found in
/// `tokenizer_from` (see [`kd_bert::checkpoint::TOKENIZER_FILES`]) to `out`, atomically: a
/// model with the teacher's vocabulary (see [`save_with_map`] for the other kind).
pub fn save(
    config: &BiLstmConfig,
    varmap: &VarMap,
    out: &Path,
    tokenizer_from: Option<&Path>,
) -> Result<()> {
    save_with_map(config, None, varmap, out, tokenizer_from)
}

/// [`save`] with the vocabulary map of a model whose table is the transfer set's (required
/// exactly when `config.vocabulary` is `transfer_set`), written as `vocab_map.json`.
pub fn save_with_map(
    config: &BiLstmConfig,
    map: Option<&VocabMap>,
    varmap: &VarMap,
    out: &Path,
    tokenizer_from: Option<&Path>,
) -> Result<()> {
    match (config.vocabulary, map) {
        (Vocabulary::Teacher, None) => {}
        (Vocabulary::TransferSet, Some(m)) => m.validate(config, "the vocabulary map to save")?,
        (v, m) => {
            return Err(Error::Config(format!(
                "a BiLSTM with vocabulary {:?} is saved {} a vocabulary map",
                v.name(),
                if m.is_some() { "with" } else { "without" }
            )))
        }
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("model");
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    write_synced(&tmp.join(CONFIG), config.to_json().as_bytes())?;
    if let Some(m) = map {
        write_synced(&tmp.join(VOCAB_MAP), m.to_json().as_bytes())?;
    }

    let mut tensors: Vec<(String, Tensor)> = {
        let vars = varmap.data().lock().expect("varmap lock poisoned");
        vars.iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().to_dtype(DType::F32)?.contiguous()?)))
            .collect::<Result<_>>()?
    };
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let weights = tmp.join(WEIGHTS);
    let metadata: Option<HashMap<String, String>> =
        Some([("format".to_string(), "pt".to_string())].into());
    let bytes = safetensors::tensor::serialize(tensors, metadata).map_err(|e| Error::Weights {
        path: weights.clone(),
        msg: e.to_string(),
    })?;
    write_synced(&weights, &bytes)?;
    sync_file(&weights)?;
    if let Some(src) = tokenizer_from {
        for f in kd_bert::checkpoint::TOKENIZER_FILES {
            let from = src.join(f);
            if from.is_file() {
                let bytes = fs::read(&from).map_err(|e| io(&from, e))?;
                write_synced(&tmp.join(f), &bytes)?;
            }
        }
    }
    let old = out.with_extension(format!("old-{}", std::process::id()));
    Ok(kd_core::fs::replace_dir(&tmp, out, &old)?)
}

/// The shapes every tensor of a model of `config` has, by name.
pub fn expected_shapes(config: &BiLstmConfig) -> Result<BTreeMap<String, Vec<usize>>> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    BiLstmClassifier::new(config, vb)?;
    let vars = varmap.data().lock().expect("varmap lock poisoned");
    Ok(vars
        .iter()
        .map(|(n, v)| (n.clone(), v.dims().to_vec()))
        .collect())
}

/// Loads the model saved in `dir` onto `device`. Missing, truncated or corrupt files,
/// tensors of another dtype or shape than the config implies, missing or unknown tensors, and
/// a vocabulary map that does not fit the config are errors naming the file and the tensor
/// or field (the first wrong tensor by name).
pub fn load(dir: &Path, device: &Device) -> Result<Built> {
    let config = BiLstmConfig::from_file(&dir.join(CONFIG))?;
    let map_path = dir.join(VOCAB_MAP);
    let map = match config.vocabulary {
        Vocabulary::TransferSet => Some(VocabMap::from_file(&map_path, &config)?),
        Vocabulary::Teacher if map_path.exists() => {
            return Err(Error::Config(format!(
                "{}: {CONFIG} says vocabulary \"teacher\", which has no vocabulary map",
                map_path.display()
            )))
        }
        Vocabulary::Teacher => None,
    };
    let path = dir.join(WEIGHTS);
    let bytes = fs::read(&path).map_err(|e| io(&path, e))?;
    let bad = |msg: String| Error::Weights {
        path: path.clone(),
        msg,
    };
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
    let want = expected_shapes(&config)?;
    let varmap = VarMap::new();
    {
        let mut vars = varmap.data().lock().expect("varmap lock poisoned");
        let mut stored = st.tensors();
        stored.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, view) in stored {
            let Some(shape) = want.get(&name) else {
                return Err(bad(format!(
                    "unknown tensor {name} (a kd-bilstm model has {})",
                    want.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            };
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(bad(format!("tensor {name} is {:?}, not F32", view.dtype())));
            }
            if view.shape() != shape.as_slice() {
                return Err(bad(format!(
                    "tensor {name} has shape {:?}, {CONFIG} implies {shape:?}",
                    view.shape()
                )));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let t = Tensor::from_vec(values, shape.as_slice(), device)?;
            vars.insert(name, Var::from_tensor(&t)?);
        }
        if let Some(missing) = want.keys().find(|n| !vars.contains_key(*n)) {
            return Err(bad(format!("missing tensor {missing}")));
        }
    }
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let mut model = BiLstmClassifier::new(&config, vb)?;
    if let Some(map) = map {
        model = model.with_vocab_map(map, &map_path.display().to_string())?;
    }
    Ok(Built { model, varmap })
}
