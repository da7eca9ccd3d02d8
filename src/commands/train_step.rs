//! One training step of `kd train` or a pipeline: a BERT student through kd-student, or a
//! BiLSTM student (`student.bilstm`) built here, where kd-lstm is linked, and trained by the
//! same cache trainer.

use anyhow::{bail, Context, Result};
use candle_core::Device;
use kd_cache::Manifest;
use kd_lstm::{BiLstmConfig, BiLstmStudent};
use kd_student::distil::{run_distil_student, train_student, DistilConfig, DistilReport};

/// Trains the student `c` describes and returns the run's report.
pub fn train(c: &DistilConfig, device: &Device) -> Result<DistilReport> {
    let Some(table) = &c.student.bilstm else {
        return Ok(train_student(c, device)?);
    };
    let Some(teacher) = &c.student.teacher else {
        bail!(
            "student.bilstm: a BiLSTM student needs teacher = DIR (the classifier teacher whose \
             vocabulary, tokenizer and embeddings it uses)"
        );
    };
    let (config, copy_embeddings) = bilstm_config(table, &c.cache)?;
    let student =
        BiLstmStudent::for_teacher(teacher, &config, copy_embeddings, c.train.seed, device)
            .with_context(|| format!("build the BiLSTM student of {}", teacher.display()))?;
    Ok(run_distil_student(c, &student, teacher, device)?)
}

/// The BiLSTM settings of `table` with the class count of the teacher that wrote `cache`, and
/// whether to copy the teacher's embeddings (`copy_embeddings`, default true: Tang et al.
/// start from pre-trained word vectors, and the teacher's are the ones at hand).
fn bilstm_config(
    table: &serde_json::Value,
    cache: &std::path::Path,
) -> Result<(BiLstmConfig, bool)> {
    let mut table = table.clone();
    let Some(map) = table.as_object_mut() else {
        bail!("student.bilstm: expected a table of BiLSTM settings, found {table}");
    };
    let copy = match map.remove("copy_embeddings") {
        None => true,
        Some(serde_json::Value::Bool(b)) => b,
        Some(other) => {
            bail!("student.bilstm.copy_embeddings: expected true or false, found {other}")
        }
    };
    for fixed in [
        "vocab_size",
        "pad_token_id",
        "num_labels",
        "model_type",
        "id2label",
    ] {
        if map.contains_key(fixed) {
            bail!("student.bilstm.{fixed} comes from the teacher and the cache; leave it out");
        }
    }
    let manifest = Manifest::load(cache)?;
    if !manifest.targets.logits {
        bail!(
            "student.bilstm: a BiLSTM student learns from class logits, and the cache in {} holds \
             none (precompute it over task data with the `logits` target)",
            cache.display()
        );
    }
    let teacher: kd_bert::BertConfig = serde_json::from_value(manifest.teacher.config.clone())
        .with_context(|| format!("{}: the teacher's config", Manifest::path(cache).display()))?;
    map.insert("num_labels".into(), teacher.num_labels().into());
    if let Some(names) = &teacher.id2label {
        map.insert("id2label".into(), serde_json::to_value(names)?);
    }
    let config: BiLstmConfig =
        serde_json::from_value(table).context("student.bilstm: the BiLSTM settings")?;
    Ok((config, copy))
}
