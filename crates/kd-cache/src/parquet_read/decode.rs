//! Decoding one row of a record batch into a [`Record`].

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float32Type, UInt16Type, UInt32Type, UInt64Type};
use arrow::record_batch::RecordBatch;

use crate::parquet_write::{
    attention_column, attention_input_column, attention_qk_column, hidden_column,
};
use crate::precision::Precision;
use crate::quant::Quantized;
use crate::record::{Label, LayerValues, Record, Sampled, TopK};
use crate::targets::TargetSpec;

pub(super) type Res<T> = std::result::Result<T, String>;

pub(super) fn column<'a>(b: &'a RecordBatch, name: &str) -> Res<&'a dyn Array> {
    b.column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| format!("column `{name}` is missing"))
}

fn list_u32(b: &RecordBatch, name: &str, i: usize) -> Res<Option<Vec<u32>>> {
    let col = column(b, name)?;
    if col.is_null(i) {
        return Ok(None);
    }
    let list = col
        .as_list_opt::<i32>()
        .ok_or(format!("column `{name}` is not a list"))?;
    let v = list.value(i);
    let p = v
        .as_primitive_opt::<UInt32Type>()
        .ok_or(format!("column `{name}` is not a list<uint32>"))?;
    Ok(Some(p.values().to_vec()))
}

fn need<T>(v: Option<T>, name: &str) -> Res<T> {
    v.ok_or_else(|| format!("column `{name}` is null"))
}

fn list_f32(b: &RecordBatch, name: &str, i: usize) -> Res<Vec<f32>> {
    let col = column(b, name)?;
    if col.is_null(i) {
        return Err(format!("column `{name}` is null"));
    }
    let list = col
        .as_list_opt::<i32>()
        .ok_or(format!("column `{name}` is not a list"))?;
    let v = list.value(i);
    let p = v
        .as_primitive_opt::<Float32Type>()
        .ok_or(format!("column `{name}` is not a list<float32>"))?;
    Ok(p.values().to_vec())
}

/// The tensor in column `name` at row `i`; `cols` maps the element count and
/// the number of row scales (int8; else 0) to the row length.
fn tensor(
    b: &RecordBatch,
    name: &str,
    i: usize,
    p: Precision,
    cols: &dyn Fn(usize, usize) -> usize,
) -> Res<Quantized> {
    let data = if p == Precision::F32 {
        list_f32(b, name, i)?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    } else {
        let col = column(b, name)?;
        let bin = col
            .as_binary_opt::<i32>()
            .ok_or(format!("column `{name}` is not binary"))?;
        if bin.is_null(i) {
            return Err(format!("column `{name}` is null"));
        }
        bin.value(i).to_vec()
    };
    let scales = if p == Precision::Int8 {
        list_f32(b, &format!("{name}_scale"), i)?
    } else {
        Vec::new()
    };
    let cols = cols(data.len() / p.elem_size(), scales.len());
    Quantized::from_parts(p, cols, data, scales).map_err(|e| format!("column `{name}`: {e}"))
}

/// Decodes row `i` of `b` (a batch of a shard holding `spec`).
pub(super) fn decode_row(b: &RecordBatch, i: usize, spec: &TargetSpec) -> Res<Record> {
    let seq = column(b, "seq_id")?
        .as_primitive_opt::<UInt64Type>()
        .ok_or("column `seq_id` is not uint64")?;
    let epoch = column(b, "epoch")?
        .as_primitive_opt::<UInt32Type>()
        .ok_or("column `epoch` is not uint32")?;
    if seq.is_null(i) || epoch.is_null(i) {
        return Err("seq_id or epoch is null".into());
    }
    let input_ids = need(list_u32(b, "input_ids", i)?, "input_ids")?;
    let n = input_ids.len();
    let mut r = Record {
        seq_id: seq.value(i),
        epoch: epoch.value(i),
        input_ids,
        token_type_ids: list_u32(b, "token_type_ids", i)?,
        mlm_positions: need(list_u32(b, "mlm_positions", i)?, "mlm_positions")?,
        mlm_labels: need(list_u32(b, "mlm_labels", i)?, "mlm_labels")?,
        ..Record::default()
    };
    if let Some(t) = &spec.mlm_topk {
        r.mlm_topk = Some(TopK {
            ids: need(list_u32(b, "topk_ids", i)?, "topk_ids")?,
            logits: tensor(b, "topk_logits", i, t.logit_precision, &|_, _| t.k as usize)?,
            log_partition: list_f32(b, "log_partition", i)?,
        });
    }
    if spec.mlm_sampled.is_some() {
        let counts_col = column(b, "sampled_counts")?
            .as_list_opt::<i32>()
            .ok_or("column `sampled_counts` is not a list")?;
        let counts = counts_col.value(i);
        let counts = counts
            .as_primitive_opt::<UInt16Type>()
            .ok_or("column `sampled_counts` is not a list<uint16>")?;
        r.mlm_sampled = Some(Sampled {
            offsets: need(list_u32(b, "sampled_offsets", i)?, "sampled_offsets")?,
            ids: need(list_u32(b, "sampled_ids", i)?, "sampled_ids")?,
            counts: counts.values().to_vec(),
        });
    }
    if let Some(h) = &spec.hidden {
        for &layer in &h.layers {
            let per_token = |elems: usize, _| elems.checked_div(n).unwrap_or(0);
            let values = tensor(b, &hidden_column(layer), i, h.precision, &per_token)?;
            r.hidden.push(LayerValues { layer, values });
        }
    }
    if let Some(a) = &spec.attention {
        for &layer in &a.layers {
            let values = tensor(b, &attention_column(layer), i, a.precision, &|_, _| n)?;
            r.attention.push(LayerValues { layer, values });
        }
    }
    if let Some(a) = &spec.attention_qk {
        // One row per token, or one per int8 scale.
        let rows = |elems: usize, scales: usize| {
            let rows = if a.precision == Precision::Int8 {
                scales
            } else {
                n
            };
            elems.checked_div(rows).unwrap_or(0)
        };
        for &layer in &a.layers {
            let values = tensor(b, &attention_qk_column(layer), i, a.precision, &rows)?;
            r.attention_qk.push(LayerValues { layer, values });
        }
    }
    if let Some(a) = &spec.attention_input {
        // One row per token, or one per int8 scale.
        let rows = |elems: usize, scales: usize| {
            let rows = if a.precision == Precision::Int8 {
                scales
            } else {
                n
            };
            elems.checked_div(rows).unwrap_or(0)
        };
        for layer in crate::attention_input::stored_layers(spec) {
            let values = tensor(b, &attention_input_column(layer), i, a.precision, &rows)?;
            r.attention_input.push(LayerValues { layer, values });
        }
    }
    if spec.logits {
        r.logits = Some(list_f32(b, "logits", i)?);
    }
    let class = column(b, "label_class")?
        .as_primitive_opt::<UInt32Type>()
        .ok_or("column `label_class` is not uint32")?;
    let value = column(b, "label_value")?
        .as_primitive_opt::<Float32Type>()
        .ok_or("column `label_value` is not float32")?;
    r.label = match (class.is_valid(i), value.is_valid(i)) {
        (true, false) => Some(Label::Class(class.value(i))),
        (false, true) => Some(Label::Value(value.value(i))),
        (false, false) => None,
        (true, true) => return Err("both label_class and label_value are set".into()),
    };
    Ok(r)
}
