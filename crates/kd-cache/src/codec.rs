//! The binary encoding of one record inside an mmap-shard block
//! (little-endian; layout in `schemas/cache-v2.md`: the `kd-cache/1` encoding, whose
//! reserved header byte counts the `attention_qk` tensors that follow the attention ones;
//! `kd-cache/3`, `schemas/cache-v3.md`: flag 64 announces a count byte and the
//! `attention_input` tensors after the `attention_qk` ones).

use crate::precision::Precision;
use crate::quant::Quantized;
use crate::record::{Label, LayerValues, Record, Sampled, TopK};

const F_TOKEN_TYPES: u8 = 1;
const F_TOPK: u8 = 2;
const F_SAMPLED: u8 = 4;
const F_LOGITS: u8 = 8;
const F_LABEL_CLASS: u8 = 16;
const F_LABEL_VALUE: u8 = 32;
const F_ATTENTION_INPUT: u8 = 64;
const KNOWN_FLAGS: u8 = 127;

/// Fixed record header: seq_id, epoch, n, n_mask, flags, n_hidden, n_attention, n_attention_qk
/// (reserved, always 0, in `kd-cache/1`).
pub const RECORD_HEADER: usize = 8 + 4 + 4 + 4 + 4;
/// Tensor header: layer, precision, 3 reserved bytes, rows, cols.
pub const TENSOR_HEADER: usize = 4 + 4 + 4 + 4;

fn put_u32s(out: &mut Vec<u8>, v: &[u32]) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

fn len_u32(n: usize, what: &str) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("{what}: {n} exceeds the u32 range"))
}

fn put_tensor(out: &mut Vec<u8>, layer: u32, q: &Quantized) -> Result<(), String> {
    out.extend_from_slice(&layer.to_le_bytes());
    out.extend_from_slice(&[q.precision().code(), 0, 0, 0]);
    out.extend_from_slice(&len_u32(q.rows(), "tensor rows")?.to_le_bytes());
    out.extend_from_slice(&len_u32(q.cols(), "tensor cols")?.to_le_bytes());
    put_f32s(out, q.scales());
    out.extend_from_slice(q.data());
    Ok(())
}

fn tensor_size(q: &Quantized) -> u64 {
    (TENSOR_HEADER + q.byte_size()) as u64
}

/// Appends the encoding of `r` to `out`.
pub fn encode_record(r: &Record, out: &mut Vec<u8>) -> Result<(), String> {
    let n = len_u32(r.input_ids.len(), "input_ids")?;
    let m = len_u32(r.mlm_positions.len(), "mlm_positions")?;
    let nh = u8::try_from(r.hidden.len()).map_err(|_| "more than 255 hidden layers")?;
    let na = u8::try_from(r.attention.len()).map_err(|_| "more than 255 attention layers")?;
    let nqk =
        u8::try_from(r.attention_qk.len()).map_err(|_| "more than 255 attention_qk layers")?;
    let ni = u8::try_from(r.attention_input.len())
        .map_err(|_| "more than 255 attention_input layers")?;
    let mut flags = 0u8;
    if ni > 0 {
        flags |= F_ATTENTION_INPUT;
    }
    if r.token_type_ids.is_some() {
        flags |= F_TOKEN_TYPES;
    }
    if r.mlm_topk.is_some() {
        flags |= F_TOPK;
    }
    if r.mlm_sampled.is_some() {
        flags |= F_SAMPLED;
    }
    if r.logits.is_some() {
        flags |= F_LOGITS;
    }
    match r.label {
        Some(Label::Class(_)) => flags |= F_LABEL_CLASS,
        Some(Label::Value(_)) => flags |= F_LABEL_VALUE,
        None => {}
    }
    out.extend_from_slice(&r.seq_id.to_le_bytes());
    out.extend_from_slice(&r.epoch.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&m.to_le_bytes());
    out.extend_from_slice(&[flags, nh, na, nqk]);
    put_u32s(out, &r.input_ids);
    if let Some(t) = &r.token_type_ids {
        put_u32s(out, t);
    }
    put_u32s(out, &r.mlm_positions);
    put_u32s(out, &r.mlm_labels);
    if let Some(t) = &r.mlm_topk {
        out.extend_from_slice(&len_u32(t.logits.cols(), "k")?.to_le_bytes());
        let nt = t.log_partition.len().checked_div(r.mlm_positions.len());
        out.extend_from_slice(&len_u32(nt.unwrap_or(0), "temperatures")?.to_le_bytes());
        put_u32s(out, &t.ids);
        put_tensor(out, 0, &t.logits)?;
        put_f32s(out, &t.log_partition);
    }
    if let Some(s) = &r.mlm_sampled {
        out.extend_from_slice(&len_u32(s.ids.len(), "sampled ids")?.to_le_bytes());
        put_u32s(out, &s.offsets);
        put_u32s(out, &s.ids);
        for c in &s.counts {
            out.extend_from_slice(&c.to_le_bytes());
        }
    }
    for l in r.hidden.iter().chain(&r.attention).chain(&r.attention_qk) {
        put_tensor(out, l.layer, &l.values)?;
    }
    if ni > 0 {
        out.push(ni);
        for l in &r.attention_input {
            put_tensor(out, l.layer, &l.values)?;
        }
    }
    if let Some(l) = &r.logits {
        out.extend_from_slice(&len_u32(l.len(), "logits")?.to_le_bytes());
        put_f32s(out, l);
    }
    match r.label {
        Some(Label::Class(c)) => out.extend_from_slice(&c.to_le_bytes()),
        Some(Label::Value(v)) => out.extend_from_slice(&v.to_le_bytes()),
        None => {}
    }
    Ok(())
}

/// Encoded bytes of `r` per section, named like the Parquet columns
/// (`ids` = the fixed header, `input_ids`, `token_type_ids`, `mlm_positions`,
/// `mlm_labels`), `topk_ids`, `topk_logits`, `log_partition`, `sampled`,
/// `hidden_l{L}`, `attention_l{L}`, `logits`, `label`. They add up to the
/// encoded length.
pub fn section_sizes(r: &Record) -> Vec<(String, u64)> {
    let n = r.input_ids.len() as u64;
    let m = r.mlm_positions.len() as u64;
    let mut v = vec![
        ("ids".to_string(), RECORD_HEADER as u64),
        ("input_ids".to_string(), 4 * n),
    ];
    if r.token_type_ids.is_some() {
        v.push(("token_type_ids".into(), 4 * n));
    }
    v.push(("mlm_positions".into(), 4 * m));
    v.push(("mlm_labels".into(), 4 * m));
    if let Some(t) = &r.mlm_topk {
        v.push(("topk_ids".into(), 8 + 4 * t.ids.len() as u64));
        v.push(("topk_logits".into(), tensor_size(&t.logits)));
        v.push(("log_partition".into(), 4 * t.log_partition.len() as u64));
    }
    if let Some(s) = &r.mlm_sampled {
        let size = 4 + 4 * s.offsets.len() + 4 * s.ids.len() + 2 * s.counts.len();
        v.push(("sampled".into(), size as u64));
    }
    for l in &r.hidden {
        v.push((format!("hidden_l{}", l.layer), tensor_size(&l.values)));
    }
    for l in &r.attention {
        v.push((format!("attention_l{}", l.layer), tensor_size(&l.values)));
    }
    for l in &r.attention_qk {
        v.push((format!("attention_qk_l{}", l.layer), tensor_size(&l.values)));
    }
    if !r.attention_input.is_empty() {
        // The count byte belongs to the fixed part.
        v[0].1 += 1;
    }
    for l in &r.attention_input {
        v.push((
            format!("attention_input_l{}", l.layer),
            tensor_size(&l.values),
        ));
    }
    if let Some(l) = &r.logits {
        v.push(("logits".into(), 4 + 4 * l.len() as u64));
    }
    if r.label.is_some() {
        v.push(("label".into(), 4));
    }
    v
}

/// A bounds-checked little-endian reader.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format!(
                "truncated: {what} needs {n} bytes at offset {}, {} left",
                self.pos,
                self.buf.len() - self.pos
            )),
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn sized(&mut self, count: u64, elem: u64, what: &str) -> Result<&'a [u8], String> {
        let bytes = count
            .checked_mul(elem)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(|| format!("{what}: size {count} x {elem} overflows"))?;
        self.take(bytes, what)
    }

    fn u32s(&mut self, count: u64, what: &str) -> Result<Vec<u32>, String> {
        let b = self.sized(count, 4, what)?;
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn f32s(&mut self, count: u64, what: &str) -> Result<Vec<f32>, String> {
        let b = self.sized(count, 4, what)?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn tensor(&mut self, what: &str) -> Result<(u32, Quantized), String> {
        let layer = self.u32(what)?;
        let head = self.take(4, what)?;
        let precision = Precision::from_code(head[0])
            .ok_or_else(|| format!("{what}: unknown precision code {}", head[0]))?;
        let rows = u64::from(self.u32(what)?);
        let cols = u64::from(self.u32(what)?);
        let scales = if precision == Precision::Int8 {
            self.f32s(rows, what)?
        } else {
            Vec::new()
        };
        let count = rows
            .checked_mul(cols)
            .ok_or_else(|| format!("{what}: {rows} x {cols} overflows"))?;
        let data = self
            .sized(count, precision.elem_size() as u64, what)?
            .to_vec();
        if cols == 0 && rows != 0 {
            return Err(format!("{what}: {rows} rows of 0 columns"));
        }
        let q = Quantized::from_parts(precision, cols as usize, data, scales)
            .map_err(|e| format!("{what}: {e}"))?;
        Ok((layer, q))
    }
}

/// The `(epoch, token count)` of an encoded record, read from its fixed header alone.
pub fn peek_epoch_and_len(buf: &[u8]) -> Result<(u32, u32), String> {
    let mut c = Cursor { buf, pos: 0 };
    c.u64("seq_id")?;
    let epoch = c.u32("epoch")?;
    Ok((epoch, c.u32("n")?))
}

/// Decodes one record encoded by [`encode_record`] (all of `buf`).
pub fn decode_record(buf: &[u8]) -> Result<Record, String> {
    let mut c = Cursor { buf, pos: 0 };
    let seq_id = c.u64("seq_id")?;
    let epoch = c.u32("epoch")?;
    let n = u64::from(c.u32("n")?);
    let m = u64::from(c.u32("n_mask")?);
    let flags = c.u8("flags")?;
    let nh = c.u8("n_hidden")?;
    let na = c.u8("n_attention")?;
    let nqk = c.u8("n_attention_qk")?;
    if flags & !KNOWN_FLAGS != 0 || flags & F_LABEL_CLASS != 0 && flags & F_LABEL_VALUE != 0 {
        return Err(format!("bad flags {flags:#04x}"));
    }
    let mut r = Record {
        seq_id,
        epoch,
        input_ids: c.u32s(n, "input_ids")?,
        ..Record::default()
    };
    if flags & F_TOKEN_TYPES != 0 {
        r.token_type_ids = Some(c.u32s(n, "token_type_ids")?);
    }
    r.mlm_positions = c.u32s(m, "mlm_positions")?;
    r.mlm_labels = c.u32s(m, "mlm_labels")?;
    if flags & F_TOPK != 0 {
        let k = u64::from(c.u32("topk k")?);
        let nt = u64::from(c.u32("topk temperatures")?);
        let count = m
            .checked_mul(k)
            .ok_or_else(|| "topk size overflows".to_string())?;
        let ids = c.u32s(count, "topk_ids")?;
        let (_, logits) = c.tensor("topk_logits")?;
        let lp = m
            .checked_mul(nt)
            .ok_or_else(|| "log_partition size overflows".to_string())?;
        let log_partition = c.f32s(lp, "log_partition")?;
        r.mlm_topk = Some(TopK {
            ids,
            logits,
            log_partition,
        });
    }
    if flags & F_SAMPLED != 0 {
        let total = u64::from(c.u32("sampled total")?);
        let offsets = c.u32s(m + 1, "sampled offsets")?;
        let ids = c.u32s(total, "sampled ids")?;
        let counts = c
            .sized(total, 2, "sampled counts")?
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        r.mlm_sampled = Some(Sampled {
            offsets,
            ids,
            counts,
        });
    }
    for (what, count) in [("hidden", nh), ("attention", na), ("attention_qk", nqk)] {
        for _ in 0..count {
            let (layer, values) = c.tensor(what)?;
            let lv = LayerValues { layer, values };
            match what {
                "hidden" => r.hidden.push(lv),
                "attention" => r.attention.push(lv),
                _ => r.attention_qk.push(lv),
            }
        }
    }
    if flags & F_ATTENTION_INPUT != 0 {
        let ni = c.u8("n_attention_input")?;
        if ni == 0 {
            return Err("attention_input flag set with 0 tensors".into());
        }
        for _ in 0..ni {
            let (layer, values) = c.tensor("attention_input")?;
            r.attention_input.push(LayerValues { layer, values });
        }
    }
    if flags & F_LOGITS != 0 {
        let len = u64::from(c.u32("logits length")?);
        r.logits = Some(c.f32s(len, "logits")?);
    }
    if flags & F_LABEL_CLASS != 0 {
        r.label = Some(Label::Class(c.u32("label")?));
    } else if flags & F_LABEL_VALUE != 0 {
        r.label = Some(Label::Value(f32::from_bits(c.u32("label")?)));
    }
    if c.pos != buf.len() {
        return Err(format!(
            "{} trailing bytes after the record",
            buf.len() - c.pos
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::TargetSpec;

    fn sample() -> Record {
        let spec = TargetSpec::parse("mlm-topk:k=3,t=1,2", 2).unwrap();
        let vocab: Vec<f32> = (0..20).map(|i| (i as f32 * 0.7).sin()).collect();
        let topk = spec.mlm_topk.as_ref().unwrap();
        Record {
            seq_id: 9,
            epoch: 2,
            input_ids: vec![101, 5, 6, 7, 102],
            token_type_ids: Some(vec![0, 0, 0, 1, 1]),
            mlm_positions: vec![1, 3],
            mlm_labels: vec![8, 9],
            mlm_topk: Some(
                TopK::from_vocab_logits(&vocab, 10, 3, &topk.temperatures, Precision::F16).unwrap(),
            ),
            mlm_sampled: Some(Sampled {
                offsets: vec![0, 2, 3],
                ids: vec![4, 7, 1],
                counts: vec![3, 1, 4],
            }),
            hidden: vec![LayerValues {
                layer: 2,
                values: Quantized::encode(&[0.5; 10], 2, Precision::Int8).unwrap(),
            }],
            attention: vec![LayerValues {
                layer: 1,
                values: Quantized::encode(&[1.5; 50], 5, Precision::Bf16).unwrap(),
            }],
            logits: Some(vec![0.1, -0.2]),
            label: Some(Label::Value(0.75)),
            attention_qk: vec![LayerValues {
                layer: 2,
                values: crate::qk::encode(&[0.25; 20], &[-0.5; 20], 5, 4, 2, Precision::Int8)
                    .unwrap(),
            }],
            attention_input: vec![LayerValues {
                layer: 1,
                values: crate::attention_input::encode(&[0.75; 20], 5, 4, 2, Precision::Int8)
                    .unwrap(),
            }],
            attention_weights: None,
        }
    }

    #[test]
    fn round_trip_and_section_sizes() {
        let r = sample();
        let mut buf = Vec::new();
        encode_record(&r, &mut buf).unwrap();
        assert_eq!(decode_record(&buf).unwrap(), r);
        let total: u64 = section_sizes(&r).iter().map(|(_, b)| b).sum();
        assert_eq!(total, buf.len() as u64);
        let mut plain = Record {
            label: Some(Label::Class(3)),
            ..Record::default()
        };
        plain.input_ids = vec![1, 2];
        buf.clear();
        encode_record(&plain, &mut buf).unwrap();
        assert_eq!(decode_record(&buf).unwrap(), plain);
    }

    #[test]
    fn damaged_encodings_are_errors() {
        let mut buf = Vec::new();
        encode_record(&sample(), &mut buf).unwrap();
        for cut in 0..buf.len() {
            assert!(decode_record(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert!(decode_record(&longer).unwrap_err().contains("trailing"));
        // Flips may decode to other values but never panic.
        for at in 0..buf.len() {
            for bit in [0x01, 0x80] {
                let mut bad = buf.clone();
                bad[at] ^= bit;
                let _ = decode_record(&bad);
            }
        }
        let mut huge = buf.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_record(&huge).unwrap_err().contains("input_ids"));
    }
}
