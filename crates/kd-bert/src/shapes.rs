//! A model's parameter shapes from its config alone, and the config's sizes checked against a
//! checkpoint's tensors, both before anything is allocated.

use crate::checkpoint::{canonical_name, Mapped, TensorMeta};
use crate::config::{Architecture, BertConfig};
use crate::model::Bert;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A variable backend that records every requested parameter and hands out a zero-stride view
/// of one scalar in its place, so building a model allocates nothing per parameter.
struct Recorder(Arc<Mutex<BTreeMap<String, Vec<usize>>>>);

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .expect("recorder lock poisoned")
            .insert(name.to_string(), s.dims().to_vec());
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("shape recorder: {name} requested without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        false
    }
}

/// The shape of every parameter of the model `config` and `architecture` describe, by Hugging
/// Face name, computed without allocating the parameters. The config must be valid
/// ([`BertConfig::validate`]), which bounds the number of parameters listed.
pub fn param_shapes(
    config: &BertConfig,
    architecture: Architecture,
) -> candle_core::Result<BTreeMap<String, Vec<usize>>> {
    let shapes = Arc::new(Mutex::new(BTreeMap::new()));
    let vb = VarBuilder::from_backend(Box::new(Recorder(shapes.clone())), DType::F32, Device::Cpu);
    Bert::new(config, architecture, vb)?;
    let shapes = shapes.lock().expect("recorder lock poisoned").clone();
    Ok(shapes)
}

/// The config's sizes that the checkpoint's tensors contradict, one line each naming the field,
/// its value and the tensor (e.g. `vocab_size = 1000000000000 but
/// bert.embeddings.word_embeddings.weight in model.safetensors has 30522 rows`). Tensors the
/// checkpoint lacks back nothing and are reported later as missing.
pub(crate) fn unbacked_sizes(
    config: &BertConfig,
    architecture: Architecture,
    tensors: &BTreeMap<String, TensorMeta>,
    weights: &Path,
) -> Vec<String> {
    let mut by_name: BTreeMap<String, (&str, &[usize])> = BTreeMap::new();
    let mut layers = std::collections::BTreeSet::new();
    for (orig, meta) in tensors {
        if let Mapped::Param(n) = canonical_name(orig) {
            if let Some(i) = n
                .strip_prefix("bert.encoder.layer.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
            {
                layers.insert(i);
            }
            by_name
                .entry(n)
                .or_insert((orig.as_str(), meta.shape.as_slice()));
        }
    }
    let file = weights.display();
    let mut lines = Vec::new();
    let mut check = |field: &str, value: usize, tensor: &str, axis: usize, what: &str| {
        if let Some((orig, shape)) = by_name.get(tensor) {
            if let (2, Some(&n)) = (shape.len(), shape.get(axis)) {
                if n != value {
                    lines.push(format!(
                        "{field} = {value} but {orig} in {file} has {n} {what}"
                    ));
                }
            }
        }
    };
    let emb = "bert.embeddings.";
    let word = format!("{emb}word_embeddings.weight");
    check("vocab_size", config.vocab_size, &word, 0, "rows");
    check("hidden_size", config.hidden_size, &word, 1, "columns");
    check(
        "max_position_embeddings",
        config.max_position_embeddings,
        &format!("{emb}position_embeddings.weight"),
        0,
        "rows",
    );
    check(
        "type_vocab_size",
        config.type_vocab_size,
        &format!("{emb}token_type_embeddings.weight"),
        0,
        "rows",
    );
    check(
        "intermediate_size",
        config.intermediate_size,
        "bert.encoder.layer.0.intermediate.dense.weight",
        0,
        "rows",
    );
    if architecture == Architecture::SequenceClassification {
        check(
            "num_labels (id2label)",
            config.num_labels(),
            "classifier.weight",
            0,
            "rows",
        );
    }
    let n = config.num_hidden_layers;
    let stored = layers.last().map_or(0, |&l| l + 1);
    if n != stored {
        let found = match layers.len() {
            0 => "no encoder layers".to_string(),
            k => format!(
                "{k} encoder layers (up to bert.encoder.layer.{})",
                stored - 1
            ),
        };
        lines.push(format!("num_hidden_layers = {n} but {file} has {found}"));
    }
    lines
}
