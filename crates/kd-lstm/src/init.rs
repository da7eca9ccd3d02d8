//! Building a BiLSTM student: every parameter drawn from a seeded ChaCha stream of its own
//! (candle's CPU random init cannot be seeded), with PyTorch's initial distributions, and the
//! embedding table optionally copied from a teacher's word-piece embeddings (all of them, or
//! the rows of a transfer-set vocabulary: [`for_transfer_set`]).
//!
//! Draws: `embedding.weight` Normal(0, 1) (`nn.Embedding`); every LSTM tensor
//! U(-1/sqrt(H), 1/sqrt(H)) (`nn.LSTM`); `mlp.*` and `classifier.*` U(-1/sqrt(in), 1/sqrt(in))
//! (`nn.Linear`). Parameter `name`'s stream is ChaCha8 seeded by
//! `SeedHash::tagged(b"kd-lstm/init/v1\0").u64(seed).bytes(name)`, so a parameter's start does
//! not depend on which other parameters exist.

use crate::config::{BiLstmConfig, Vocabulary};
use crate::model::BiLstmClassifier;
use crate::vocab::VocabMap;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use kd_core::rng::SeedHash;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::path::Path;

/// The teacher tensor the embedding table is copied from (any `bert.` prefix is stripped).
pub const TEACHER_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

/// A model and the variables behind it.
pub struct Built {
    /// The model.
    pub model: BiLstmClassifier,
    /// Its parameters under their saved names.
    pub varmap: VarMap,
}

/// A fresh model of `config`, reproducible from `seed`.
pub fn fresh(config: &BiLstmConfig, seed: u64, device: &Device) -> Result<Built> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = BiLstmClassifier::new(config, vb)?;
    let c = config;
    let lstm_bound = 1.0 / (c.hidden_size as f32).sqrt();
    let vars = varmap.data().lock().expect("varmap lock poisoned");
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let mut rng = SeedHash::tagged(b"kd-lstm/init/v1\0")
            .u64(seed)
            .bytes(name.as_bytes())
            .rng();
        let n = var.elem_count();
        let values: Vec<f32> = if name == "embedding.weight" {
            (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
        } else {
            let bound = if name.starts_with("lstm.") {
                lstm_bound
            } else if name.starts_with("mlp.") {
                1.0 / (c.feature_size() as f32).sqrt()
            } else {
                1.0 / (c.mlp_hidden_size as f32).sqrt()
            };
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        var.set(&Tensor::from_vec(values, var.shape(), device)?)?;
    }
    drop(vars);
    Ok(Built { model, varmap })
}

/// A fresh model of `config` with the vocabulary and padding id of the teacher in
/// `teacher_dir` (a BERT directory), its embedding table drawn fresh at
/// `config.embedding_size` (Tang et al. start from word vectors instead; see [`from_teacher`]).
pub fn fresh_for_teacher(
    teacher_dir: &Path,
    config: &BiLstmConfig,
    seed: u64,
    device: &Device,
) -> Result<Built> {
    let bert = kd_bert::BertConfig::from_file(&teacher_dir.join("config.json"))?;
    let config = BiLstmConfig {
        vocab_size: bert.vocab_size,
        vocabulary: Vocabulary::Teacher,
        pad_token_id: bert.pad_token_id,
        ..config.clone()
    };
    fresh(&config, seed, device)
}

/// A fresh model whose vocabulary, embedding width and padding id are the teacher's in
/// `teacher_dir` (a BERT directory) and whose embedding table is a copy of the teacher's
/// word-piece embeddings; `config` gives the rest (its vocabulary and embedding sizes are
/// replaced).
pub fn from_teacher(
    teacher_dir: &Path,
    config: &BiLstmConfig,
    seed: u64,
    device: &Device,
) -> Result<Built> {
    let (bert, table) = teacher_table(teacher_dir, device)?;
    let (v, e) = table.dims2()?;
    let config = BiLstmConfig {
        vocab_size: v,
        vocabulary: Vocabulary::Teacher,
        embedding_size: e,
        pad_token_id: bert.pad_token_id,
        ..config.clone()
    };
    let built = fresh(&config, seed, device)?;
    let vars = built.varmap.data().lock().expect("varmap lock poisoned");
    vars["embedding.weight"].set(&table.to_dtype(DType::F32)?)?;
    drop(vars);
    Ok(built)
}

/// The teacher's config in `teacher_dir` and its word-piece embedding table `[V, hidden]`.
fn teacher_table(teacher_dir: &Path, device: &Device) -> Result<(kd_bert::BertConfig, Tensor)> {
    let bert = kd_bert::BertConfig::from_file(&teacher_dir.join("config.json"))?;
    let weights = kd_bert::checkpoint::find_weights(teacher_dir)?;
    let tensors = kd_bert::checkpoint::read_tensors(&weights, device)?;
    let table = tensors
        .into_iter()
        .find(|(n, _)| n.strip_prefix("bert.").unwrap_or(n) == TEACHER_EMBEDDINGS)
        .map(|(_, t)| t)
        .ok_or_else(|| Error::Weights {
            path: weights.clone(),
            msg: format!("no tensor {TEACHER_EMBEDDINGS} to copy the embeddings from"),
        })?;
    let (v, e) = table.dims2()?;
    if v != bert.vocab_size || e != bert.hidden_size {
        return Err(Error::Weights {
            path: weights.clone(),
            msg: format!(
                "{TEACHER_EMBEDDINGS} is {:?}, config.json says [{}, {}]",
                table.dims(),
                bert.vocab_size,
                bert.hidden_size
            ),
        });
    }
    Ok((bert, table))
}

/// A fresh model over the transfer set's vocabulary `map` (see [`crate::vocab`]) for the
/// teacher in `teacher_dir`: one row per kept piece, the teacher's padding id, and the rows
/// copied from the teacher's word-piece embeddings at `map.piece_ids` when `copy_embeddings`
/// (then `E` is the teacher's width), else drawn from `seed` at `config.embedding_size`.
pub fn for_transfer_set(
    teacher_dir: &Path,
    config: &BiLstmConfig,
    map: VocabMap,
    copy_embeddings: bool,
    seed: u64,
    device: &Device,
) -> Result<Built> {
    let (bert, table) = if copy_embeddings {
        let (bert, table) = teacher_table(teacher_dir, device)?;
        (bert, Some(table))
    } else {
        let bert = kd_bert::BertConfig::from_file(&teacher_dir.join("config.json"))?;
        (bert, None)
    };
    let origin = format!("the vocabulary map for {}", teacher_dir.display());
    if bert.vocab_size != map.teacher_vocab_size {
        return Err(Error::Config(format!(
            "{origin}: teacher_vocab_size {} is not the teacher's vocab_size {}",
            map.teacher_vocab_size, bert.vocab_size
        )));
    }
    let config = BiLstmConfig {
        vocab_size: map.piece_ids.len(),
        vocabulary: Vocabulary::TransferSet,
        embedding_size: match &table {
            Some(_) => bert.hidden_size,
            None => config.embedding_size,
        },
        pad_token_id: bert.pad_token_id,
        ..config.clone()
    };
    let built = fresh(&config, seed, device)?;
    if let Some(table) = table {
        let n = map.piece_ids.len();
        let idx = Tensor::from_vec(map.piece_ids.clone(), n, device)?;
        let rows = table.index_select(&idx, 0)?.to_dtype(DType::F32)?;
        let vars = built.varmap.data().lock().expect("varmap lock poisoned");
        vars["embedding.weight"].set(&rows)?;
    }
    Ok(Built {
        model: built.model.with_vocab_map(map, &origin)?,
        varmap: built.varmap,
    })
}
