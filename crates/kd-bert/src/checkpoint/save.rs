//! Saving a model as a Hugging Face directory that `transformers` loads.

use super::names::base_model_name;
use crate::config::Architecture;
use crate::error::{Error, Result};
use crate::model::Bert;
use candle_core::Tensor;
use candle_nn::VarMap;
use kd_core::fs::{sync_file, write_synced};
use std::collections::HashMap;
use std::fs;
use std::path::Path;

/// Tokenizer files copied next to saved weights when present.
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// The model's parameters under Hugging Face names for its architecture (`BertModel` names
/// carry no `bert.` prefix; the tied decoder is not stored, as transformers does).
pub fn hf_state_dict(model: &Bert, varmap: &VarMap) -> HashMap<String, Tensor> {
    let vars = varmap.data().lock().expect("varmap lock poisoned");
    vars.iter()
        .filter(|(n, _)| {
            n.starts_with("bert.")
                || (model.mlm.is_some() && n.starts_with("cls."))
                || (model.classifier.is_some() && n.starts_with("classifier."))
        })
        .map(|(n, v)| {
            let name = match model.architecture {
                Architecture::Base => base_model_name(n).to_string(),
                _ => n.clone(),
            };
            (name, v.as_tensor().clone())
        })
        .collect()
}

/// Writes `config.json`, `model.safetensors` and the tokenizer files found in `tokenizer_from`
/// into `out`, atomically: everything goes to a temporary sibling directory that replaces `out`
/// only once complete.
pub fn save_hf_dir(
    model: &Bert,
    varmap: &VarMap,
    out: &Path,
    tokenizer_from: Option<&Path>,
) -> Result<()> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model")
        .to_string();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;

    let config = serde_json::to_string_pretty(&model.config).expect("config serialises");
    write_synced(&tmp.join("config.json"), config.as_bytes())?;
    let weights = tmp.join("model.safetensors");
    let mut state = hf_state_dict(model, varmap);
    for t in state.values_mut() {
        *t = t.contiguous()?;
    }
    let metadata: Option<HashMap<String, String>> =
        Some([("format".to_string(), "pt".to_string())].into());
    let views: Vec<(String, Tensor)> = {
        let mut v: Vec<_> = state.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    safetensors::tensor::serialize_to_file(views, metadata, &weights).map_err(|e| {
        Error::Checkpoint {
            path: weights.clone(),
            msg: e.to_string(),
        }
    })?;
    // safetensors writes through a private temp file (mode 0600); make it readable like the rest.
    set_readable(&weights)?;
    sync_file(&weights)?;
    if let Some(src) = tokenizer_from {
        for f in TOKENIZER_FILES {
            let from = src.join(f);
            if from.is_file() {
                let bytes = fs::read(&from).map_err(|e| Error::io(&from, e))?;
                write_synced(&tmp.join(f), &bytes)?;
            }
        }
    }
    let old = out.with_extension(format!("old-{}", std::process::id()));
    Ok(kd_core::fs::replace_dir(&tmp, out, &old)?)
}

#[cfg(unix)]
fn set_readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).map_err(|e| Error::io(path, e))
}

#[cfg(not(unix))]
fn set_readable(_path: &Path) -> Result<()> {
    Ok(())
}
