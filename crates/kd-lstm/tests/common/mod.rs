//! What the kd-lstm tests share: fixture and asset paths, batches, small configs.
#![allow(dead_code)]

use kd_data::{collate, Batch, BatchItem, Label};
use kd_lstm::BiLstmConfig;
use std::path::{Path, PathBuf};

/// `tests/fixtures/NAME` of this crate.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// An asset under `assets/` (or `$KD_ASSETS`).
pub fn asset(name: &str) -> PathBuf {
    let root = std::env::var_os("KD_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets"));
    let p = root.join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-assets.sh",
        p.display()
    );
    p
}

/// A small model: vocabulary 99, E 8, H 6, ReLU layer 10, 3 classes, no dropout.
pub fn small_config(siamese: bool) -> BiLstmConfig {
    BiLstmConfig {
        vocab_size: 99,
        embedding_size: 8,
        hidden_size: 6,
        mlp_hidden_size: 10,
        num_labels: 3,
        siamese,
        dropout: 0.0,
        ..BiLstmConfig::default()
    }
}

/// A padded batch of `(ids, token types, label)` rows.
pub fn batch(rows: &[(Vec<u32>, Vec<u32>, u32)]) -> Batch {
    let items: Vec<BatchItem> = rows
        .iter()
        .enumerate()
        .map(|(i, (ids, types, label))| BatchItem {
            id: i as u64,
            input_ids: ids,
            token_type_ids: Some(types),
            mlm_positions: &[],
            mlm_labels: &[],
            label: Some(Label::Class(*label)),
        })
        .collect();
    collate(&items, 0).expect("batch collates")
}

/// Values of a tensor, flattened.
pub fn values(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}
