//! Mapping of the tensor names found in BERT checkpoints onto kd's (Hugging Face) names.

/// What a checkpoint tensor name maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// A model parameter under its canonical name.
    Param(String),
    /// A tensor that is deliberately not loaded, with the reason.
    Ignored(&'static str),
}

/// Canonical name of a checkpoint tensor.
///
/// Handles the layouts of `BertModel` / sentence-transformers (no `bert.` prefix,
/// `embeddings.position_ids` buffer), `BertForMaskedLM` / `BertForPreTraining` (`bert.` prefix,
/// `cls.*`, tied decoder), `BertForSequenceClassification` (`classifier.*`) and the old
/// TensorFlow-era LayerNorm names `gamma` / `beta`.
pub fn canonical_name(name: &str) -> Mapped {
    if name.ends_with("position_ids") {
        return Mapped::Ignored("position-id buffer");
    }
    if name.starts_with("cls.seq_relationship") {
        return Mapped::Ignored("next-sentence head, not used");
    }
    if name == "cls.predictions.decoder.weight" {
        return Mapped::Ignored("decoder is tied to the word embeddings");
    }
    let mut n = name.to_string();
    if n == "cls.predictions.decoder.bias" {
        n = "cls.predictions.bias".into();
    }
    if let Some(stem) = n.strip_suffix("LayerNorm.gamma") {
        n = format!("{stem}LayerNorm.weight");
    } else if let Some(stem) = n.strip_suffix("LayerNorm.beta") {
        n = format!("{stem}LayerNorm.bias");
    }
    if ["embeddings.", "encoder.", "pooler."]
        .iter()
        .any(|p| n.starts_with(p))
    {
        n = format!("bert.{n}");
    }
    Mapped::Param(n)
}

/// Whether a canonical name belongs to a head (pooler, MLM head, classifier) rather than the
/// encoder; such tensors may be absent (fresh head) or left unused (head not in the model).
pub fn is_head(name: &str) -> bool {
    name.starts_with("cls.") || name.starts_with("classifier.") || name.starts_with("bert.pooler.")
}

/// Whether a canonical name is a head parameter of one of kd's architectures: the pooler, the
/// MLM head or the classifier. A checkpoint tensor under a head prefix with any other name is
/// not silently skipped.
pub fn is_known_head(name: &str) -> bool {
    matches!(
        name,
        "bert.pooler.dense.weight"
            | "bert.pooler.dense.bias"
            | "cls.predictions.bias"
            | "cls.predictions.transform.dense.weight"
            | "cls.predictions.transform.dense.bias"
            | "cls.predictions.transform.LayerNorm.weight"
            | "cls.predictions.transform.LayerNorm.bias"
            | "classifier.weight"
            | "classifier.bias"
    )
}

/// The name Hugging Face's `BertModel` uses (no `bert.` prefix) for a canonical name.
pub fn base_model_name(name: &str) -> &str {
    name.strip_prefix("bert.").unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Mapped {
        Mapped::Param(s.into())
    }

    #[test]
    fn maps_every_layout() {
        assert_eq!(
            canonical_name("embeddings.word_embeddings.weight"),
            p("bert.embeddings.word_embeddings.weight")
        );
        assert_eq!(
            canonical_name("bert.encoder.layer.3.output.LayerNorm.gamma"),
            p("bert.encoder.layer.3.output.LayerNorm.weight")
        );
        assert_eq!(
            canonical_name("encoder.layer.0.attention.output.LayerNorm.beta"),
            p("bert.encoder.layer.0.attention.output.LayerNorm.bias")
        );
        assert_eq!(
            canonical_name("cls.predictions.transform.LayerNorm.gamma"),
            p("cls.predictions.transform.LayerNorm.weight")
        );
        assert_eq!(
            canonical_name("cls.predictions.decoder.bias"),
            p("cls.predictions.bias")
        );
        assert_eq!(canonical_name("classifier.weight"), p("classifier.weight"));
        assert!(matches!(
            canonical_name("embeddings.position_ids"),
            Mapped::Ignored(_)
        ));
        assert!(matches!(
            canonical_name("cls.predictions.decoder.weight"),
            Mapped::Ignored(_)
        ));
        assert!(matches!(
            canonical_name("cls.seq_relationship.weight"),
            Mapped::Ignored(_)
        ));
    }

    #[test]
    fn known_heads_are_heads() {
        for n in [
            "bert.pooler.dense.bias",
            "cls.predictions.bias",
            "classifier.weight",
        ] {
            assert!(is_head(n) && is_known_head(n), "{n}");
        }
        assert!(is_head("cls.predictions.bibs") && !is_known_head("cls.predictions.bibs"));
    }
}
