//! One training step of `kd train` or a pipeline: a BERT student through kd-student, or a
//! BiLSTM student (`student.bilstm`) built here, where kd-lstm is linked, and trained by the
//! same cache trainer. Its embedding table covers the teacher's word pieces (`vocabulary =
//! "teacher"`, the default) or only those the cache's inputs hold at least `min_count` times
//! (default 1) and the special tokens (`vocabulary = "transfer_set"`).

use anyhow::{bail, Context, Result};
use candle_core::Device;
use kd_cache::Manifest;
use kd_lstm::{BiLstmConfig, BiLstmStudent, VocabMap, Vocabulary};
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
    let s = bilstm_settings(table, &c.cache)?;
    let (config, copy) = (&s.config, s.copy_embeddings);
    let built = match s.vocabulary {
        Vocabulary::Teacher => {
            BiLstmStudent::for_teacher(teacher, config, copy, c.train.seed, device)
        }
        Vocabulary::TransferSet => {
            let map = transfer_set_vocabulary(&c.cache, teacher, s.min_count)?;
            BiLstmStudent::for_transfer_set(teacher, config, map, copy, c.train.seed, device)
        }
    };
    let student =
        built.with_context(|| format!("build the BiLSTM student of {}", teacher.display()))?;
    Ok(run_distil_student(c, &student, teacher, device)?)
}

/// The teacher's word pieces that the inputs of the cache in `cache` hold at least
/// `min_count` times, and its special tokens (`[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`
/// and the config's padding id), as the rows of a BiLSTM's own table.
fn transfer_set_vocabulary(
    cache: &std::path::Path,
    teacher: &std::path::Path,
    min_count: u64,
) -> Result<VocabMap> {
    let bert = kd_bert::BertConfig::from_file(&teacher.join("config.json"))?;
    let tokenizer = kd_bert::tokenizer::load_tokenizer(teacher)?;
    let special = kd_data::SpecialTokens::from_tokenizer(&tokenizer)
        .with_context(|| format!("the special tokens of {}", teacher.display()))?;
    let mut specials = special.ids().to_vec();
    specials.push(bert.pad_token_id);
    let mut counts = vec![0u64; bert.vocab_size];
    let reader = kd_cache::reader::CacheReader::open(cache)?;
    for record in reader.iter() {
        let record = record?;
        for &id in &record.input_ids {
            let Some(n) = counts.get_mut(id as usize) else {
                bail!(
                    "student.bilstm.vocabulary: the cache in {} holds token id {id} (sequence \
                     {}), outside the vocabulary of {} of the teacher in {}",
                    cache.display(),
                    record.seq_id,
                    bert.vocab_size,
                    teacher.display()
                );
            };
            *n += 1;
        }
    }
    let map = VocabMap::from_counts(&counts, min_count, &specials, special.unk)?;
    eprintln!(
        "BiLSTM vocabulary: {} of the teacher's {} word pieces (seen at least {min_count} \
         times in the transfer set, and the special tokens)",
        map.piece_ids.len(),
        bert.vocab_size
    );
    Ok(map)
}

/// The BiLSTM settings of a `student.bilstm` table.
struct BiLstmSettings {
    /// The model's settings.
    config: BiLstmConfig,
    /// Copy the teacher's embedding rows.
    copy_embeddings: bool,
    /// The table's pieces.
    vocabulary: Vocabulary,
    /// For a transfer-set vocabulary, how often a piece is seen to get a row.
    min_count: u64,
}

/// The BiLSTM settings of `table` with the class count of the teacher that wrote `cache`,
/// whether to copy the teacher's embeddings (`copy_embeddings`, default true: Tang et al.
/// start from pre-trained word vectors, and the teacher's are the ones at hand), and the
/// vocabulary (`vocabulary`, `min_count`).
fn bilstm_settings(table: &serde_json::Value, cache: &std::path::Path) -> Result<BiLstmSettings> {
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
    let vocabulary = match map.remove("vocabulary") {
        None => Vocabulary::Teacher,
        Some(v) => v
            .as_str()
            .and_then(Vocabulary::from_name)
            .with_context(|| {
                format!(
                "student.bilstm.vocabulary: expected \"teacher\" (the teacher's word pieces) or \
                 \"transfer_set\" (the pieces of the cache's inputs), found {v}"
            )
            })?,
    };
    let min_count = match map.remove("min_count") {
        None => 1,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ => bail!("student.bilstm.min_count: expected a whole number >= 1, found {v}"),
        },
    };
    if vocabulary == Vocabulary::Teacher && min_count != 1 {
        bail!(
            "student.bilstm.min_count applies to vocabulary = \"transfer_set\" (the teacher's \
             vocabulary keeps every piece)"
        );
    }
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
    Ok(BiLstmSettings {
        config,
        copy_embeddings: copy,
        vocabulary,
        min_count,
    })
}
