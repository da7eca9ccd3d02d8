//! Encoding of task examples as `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`
//! with token types and longest-first truncation.

use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::task::{Label, TaskDataset};
use crate::tokens::TextEncoder;

/// One encoded example.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EncodedExample {
    /// `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`.
    pub input_ids: Vec<u32>,
    /// 0 over `[CLS] a [SEP]`, 1 over `b [SEP]`.
    pub token_type_ids: Vec<u32>,
    /// The label.
    pub label: Label,
}

/// Shortens `a` and `b` to at most `budget` tokens together, one token at a
/// time from the end of the longer one (from `b` on a tie), like the
/// `longest_first` strategy of the BERT reference tokenizers.
pub fn truncate_longest_first(a: &mut Vec<u32>, b: &mut Vec<u32>, budget: usize) {
    while a.len() + b.len() > budget {
        if a.len() > b.len() {
            a.pop();
        } else {
            b.pop();
        }
    }
}

/// Encodes one text or text pair into at most `max_len` (>= 3) tokens:
/// `[CLS] a [SEP]` with token types 0, or `[CLS] a [SEP] b [SEP]` with token
/// types 0 then 1, truncating longest-first. Returns `(input_ids, token_type_ids)`.
pub fn encode_text_pair(
    encoder: &TextEncoder,
    a: &str,
    b: Option<&str>,
    max_len: usize,
) -> Result<(Vec<u32>, Vec<u32>)> {
    if max_len < 3 {
        return Err(DataError::Invalid(format!(
            "max_len must be at least 3, got {max_len}"
        )));
    }
    let s = encoder.specials();
    let mut ta = encoder.encode(a)?;
    let mut tb = b.map(|b| encoder.encode(b)).transpose()?;
    match tb.as_mut() {
        Some(tb) => truncate_longest_first(&mut ta, tb, max_len - 3),
        None => ta.truncate(max_len - 2),
    }
    let mut ids = Vec::with_capacity(max_len);
    ids.push(s.cls);
    ids.extend_from_slice(&ta);
    ids.push(s.sep);
    let first = ids.len();
    if let Some(tb) = tb {
        ids.extend_from_slice(&tb);
        ids.push(s.sep);
    }
    let mut types = vec![0u32; first];
    types.resize(ids.len(), 1);
    Ok((ids, types))
}

/// Encodes every example of `dataset` (in parallel on the current rayon
/// pool; the output keeps the file order).
pub fn encode_dataset(
    dataset: &TaskDataset,
    encoder: &TextEncoder,
    max_len: usize,
) -> Result<Vec<EncodedExample>> {
    dataset
        .examples
        .par_iter()
        .map(|ex| {
            let (input_ids, token_type_ids) =
                encode_text_pair(encoder, &ex.text, ex.text_pair.as_deref(), max_len)?;
            Ok(EncodedExample {
                input_ids,
                token_type_ids,
                label: ex.label,
            })
        })
        .collect()
}
