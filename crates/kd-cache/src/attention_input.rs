//! Attention targets stored as each mapped layer's **input hidden state** (`attention-input`,
//! schema `kd-cache/3`): the records hold hidden state `l - 1` of every chosen encoder layer
//! `l`, and the cache holds the teacher's query/key weights of those layers once, in a side
//! file ([`ATTENTION_WEIGHTS_FILE`]); readers project the input and recompute the scores
//! exactly as for `attention-qk` ([`crate::qk`]).
//!
//! # Layout
//! The input of layer `l` is `[n, H]`, row-major, one token after the other. At f32, f16 and
//! bf16 one row per token. At int8 every row has its own scale and kd writes one row per
//! (token, block of whole heads of at least 64 values) ([`int8_block`], [`encode`]): BERT
//! hidden states have a few outlier dimensions 10-20x the others, and a per-token scale would
//! leave the ordinary dimensions few levels, while a scale per head costs more bytes than it
//! buys (measured in `schemas/cache-v3.md`, section 9). Readers accept any whole number of
//! rows per token.
//!
//! # Reuse of hidden targets
//! When the cache's `hidden` target stores layer `l - 1` at the same precision, and that
//! precision is not int8, the input is not stored again: [`stored_layers`] leaves `l` out and
//! readers take hidden state `l - 1` ([`crate::Record::attention_input_layer`]). At int8 the
//! hidden target has one scale per token, coarser than the input form's per-block scales, so
//! both are stored.
//!
//! # Scores
//! With `W_q, b_q, W_k, b_k` of layer `l` (`[H, H]` as `[out, in]`, `[H]`), `q = x W_q^T + b_q`,
//! `k = x W_k^T + b_k`, then `s_h[i, j] = (q_h[i] / sqrt(d)) . k_h[j]` ([`scores`]).

use std::path::Path;

use crate::error::{CacheError, Result};
use crate::precision::Precision;
use crate::quant::Quantized;
use crate::targets::TargetSpec;

/// Name of the side file with the query/key weights inside a cache folder.
pub const ATTENTION_WEIGHTS_FILE: &str = "attention_weights.safetensors";

fn bad<T>(msg: String) -> Result<T> {
    Err(CacheError::Invalid(msg))
}

/// Query and key weights and biases of one encoder layer, f32.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    /// `W_q`, `[H, H]` row-major as `[out, in]` (PyTorch's `nn.Linear` layout).
    pub query_weight: Vec<f32>,
    /// `b_q`, `[H]`.
    pub query_bias: Vec<f32>,
    /// `W_k`, `[H, H]` as `[out, in]`.
    pub key_weight: Vec<f32>,
    /// `b_k`, `[H]`.
    pub key_bias: Vec<f32>,
}

/// The query/key weights of the `attention-input` layers of a cache, at width `hidden`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionWeights {
    hidden: usize,
    layers: Vec<(u32, LayerWeights)>,
}

/// Names of the four tensors of `layer` in the side file.
fn names(layer: u32) -> [String; 4] {
    ["query.weight", "query.bias", "key.weight", "key.bias"].map(|t| format!("layer.{layer}.{t}"))
}

impl AttentionWeights {
    /// Weights of `layers` (ascending encoder layers) at width `hidden`; every matrix must be
    /// `hidden x hidden` and every bias `hidden` long.
    pub fn new(hidden: usize, layers: Vec<(u32, LayerWeights)>) -> Result<Self> {
        if hidden == 0 || layers.is_empty() || layers.windows(2).any(|w| w[0].0 >= w[1].0) {
            return bad(format!(
                "attention weights need a width and ascending layers (width {hidden}, layers \
                 {:?})",
                layers.iter().map(|l| l.0).collect::<Vec<_>>()
            ));
        }
        for (l, w) in &layers {
            for (what, v, want) in [
                ("query weight", &w.query_weight, hidden * hidden),
                ("query bias", &w.query_bias, hidden),
                ("key weight", &w.key_weight, hidden * hidden),
                ("key bias", &w.key_bias, hidden),
            ] {
                if v.len() != want {
                    return bad(format!(
                        "layer {l}: {what} has {} values, expected {want} (width {hidden})",
                        v.len()
                    ));
                }
                if v.iter().any(|x| !x.is_finite()) {
                    return bad(format!("layer {l}: {what} holds a non-finite value"));
                }
            }
        }
        Ok(Self { hidden, layers })
    }

    /// Width `H`.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// The encoder layers held, ascending.
    pub fn layers(&self) -> Vec<u32> {
        self.layers.iter().map(|l| l.0).collect()
    }

    /// The weights of encoder layer `layer`, if held.
    pub fn layer(&self, layer: u32) -> Option<&LayerWeights> {
        self.layers.iter().find(|l| l.0 == layer).map(|l| &l.1)
    }

    /// The side file's bytes: safetensors, f32, tensors `layer.{l}.query.weight` `[H, H]`,
    /// `layer.{l}.query.bias` `[H]`, `layer.{l}.key.weight`, `layer.{l}.key.bias`.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        use safetensors::tensor::TensorView;
        let h = self.hidden;
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (l, w) in &self.layers {
            let [qw, qb, kw, kb] = names(*l);
            for (name, v, shape) in [
                (qw, &w.query_weight, vec![h, h]),
                (qb, &w.query_bias, vec![h]),
                (kw, &w.key_weight, vec![h, h]),
                (kb, &w.key_bias, vec![h]),
            ] {
                let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                owned.push((name, shape, bytes));
            }
        }
        let views = owned
            .iter()
            .map(|(n, s, b)| {
                TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| CacheError::Invalid(format!("attention weights: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, None)
            .map_err(|e| CacheError::Invalid(format!("attention weights: {e}")))
    }

    /// Parses the side file's bytes for `layers` at width `hidden`; `file` names it in errors
    /// (a tensor missing, of another dtype or shape, or a layer too many).
    pub fn from_bytes(bytes: &[u8], layers: &[u32], hidden: usize, file: &Path) -> Result<Self> {
        let fail = |m: String| CacheError::Invalid(format!("{}: {m}", file.display()));
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| fail(format!("not a safetensors file: {e}")))?;
        let wanted: Vec<String> = layers.iter().flat_map(|&l| names(l)).collect();
        if let Some(extra) = st
            .names()
            .into_iter()
            .find(|n| !wanted.iter().any(|w| w == n))
        {
            return Err(fail(format!(
                "holds `{extra}`, which is not a query/key tensor of the cache's layers {layers:?}"
            )));
        }
        let mut out = Vec::with_capacity(layers.len());
        for &l in layers {
            let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
                let t = st.tensor(name).map_err(|_| {
                    fail(format!(
                        "has no `{name}` (the cache's attention-input layers are {layers:?})"
                    ))
                })?;
                if t.dtype() != safetensors::Dtype::F32 || t.shape() != shape {
                    return Err(fail(format!(
                        "`{name}` is {:?} {:?}, expected F32 {shape:?} (hidden_size {hidden})",
                        t.dtype(),
                        t.shape()
                    )));
                }
                Ok(t.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect())
            };
            let [qw, qb, kw, kb] = names(l);
            let w = LayerWeights {
                query_weight: get(&qw, &[hidden, hidden])?,
                query_bias: get(&qb, &[hidden])?,
                key_weight: get(&kw, &[hidden, hidden])?,
                key_bias: get(&kb, &[hidden])?,
            };
            out.push((l, w));
        }
        AttentionWeights::new(hidden, out).map_err(|e| fail(e.to_string()))
    }

    /// `[n, 2H]`: the query then the key projection of each token of `x` (`[n, H]`), biases
    /// added, unscaled (the layout of an `attention-qk` tensor at f32).
    pub fn project(&self, layer: u32, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let h = self.hidden;
        let Some(w) = self.layer(layer) else {
            return bad(format!(
                "the attention weights hold layers {:?}, not layer {layer}",
                self.layers()
            ));
        };
        if x.len() != n * h {
            return bad(format!(
                "an input of {} values for {n} tokens, expected {n} x {h} (hidden_size {h})",
                x.len()
            ));
        }
        let mut out = vec![0f32; n * 2 * h];
        for t in 0..n {
            let xt = &x[t * h..(t + 1) * h];
            let dst = &mut out[t * 2 * h..(t + 1) * 2 * h];
            for o in 0..h {
                dst[o] = crate::qk::dot(xt, &w.query_weight[o * h..(o + 1) * h]) + w.query_bias[o];
                dst[h + o] = crate::qk::dot(xt, &w.key_weight[o * h..(o + 1) * h]) + w.key_bias[o];
            }
        }
        Ok(out)
    }
}

/// The `attention_input` layers whose input is stored in the records: all of them except
/// those whose hidden state `l - 1` the `hidden` target already stores at the same precision
/// (not int8; see the module doc).
pub fn stored_layers(spec: &TargetSpec) -> Vec<u32> {
    let Some(a) = &spec.attention_input else {
        return Vec::new();
    };
    a.layers
        .iter()
        .copied()
        .filter(|&l| !reused(spec, l))
        .collect()
}

/// Whether the input of `layer` is read from the `hidden` target.
pub fn reused(spec: &TargetSpec, layer: u32) -> bool {
    match (&spec.attention_input, &spec.hidden) {
        (Some(a), Some(h)) => {
            a.precision != Precision::Int8
                && a.precision == h.precision
                && layer >= 1
                && h.layers.contains(&(layer - 1))
        }
        _ => false,
    }
}

/// Values per token of an input tensor over `n` tokens, after checking the row structure: a
/// whole number of rows per token, one row per token unless int8. The message says what is
/// wrong; callers add the record and layer.
pub fn width(values: &Quantized, n: usize) -> std::result::Result<usize, String> {
    let (rows, cols) = (values.rows(), values.cols());
    if n == 0 {
        return if rows == 0 {
            Ok(0)
        } else {
            Err(format!("has {rows} rows for 0 tokens"))
        };
    }
    if rows % n != 0 {
        return Err(format!(
            "has {rows} rows of {cols}, not a whole number per token ({n} tokens)"
        ));
    }
    if values.precision() != Precision::Int8 && rows != n {
        return Err(format!(
            "has {rows} rows of {cols}, expected one row per token ({n}) at {}",
            values.precision()
        ));
    }
    match rows / n * cols {
        0 => Err("holds 0 values per token".into()),
        w => Ok(w),
    }
}

/// Values per int8 scale of an input tensor for a teacher of width `hidden` with `heads` heads:
/// the fewest whole heads, dividing the head count, that hold at least 64 values (one head of
/// BERT-base, two of MiniLM, the whole token of a 2-head teacher of width 16).
pub fn int8_block(hidden: usize, heads: usize) -> Result<usize> {
    let d = crate::qk::head_dim(hidden, heads)?;
    let mut k = 64usize.div_ceil(d).clamp(1, heads);
    while !heads.is_multiple_of(k) {
        k += 1;
    }
    Ok(k * d)
}

/// The input tensor of one layer from hidden state `x` (`[n, hidden]`) at `precision`: int8
/// with one scale per (token, [`int8_block`]), the others one row per token.
pub fn encode(
    x: &[f32],
    n: usize,
    hidden: usize,
    heads: usize,
    precision: Precision,
) -> Result<Quantized> {
    let block = int8_block(hidden, heads)?;
    if x.len() != n * hidden {
        return bad(format!(
            "an input of {} values, expected {n} x {hidden}",
            x.len()
        ));
    }
    let cols = if precision == Precision::Int8 {
        block
    } else {
        hidden
    };
    Quantized::encode(x, cols, precision)
}

/// The pre-softmax scores `[heads, n, n]` of layer `layer` recomputed from its input tensor
/// over `n` tokens and the cache's query/key `weights`, for a teacher with `heads` heads.
pub fn scores(
    values: &Quantized,
    n: usize,
    layer: u32,
    weights: &AttentionWeights,
    heads: usize,
) -> Result<Vec<f32>> {
    let h = weights.hidden();
    let w = width(values, n).map_err(CacheError::Invalid)?;
    if n > 0 && w != h {
        return bad(format!(
            "the input holds {w} values per token, expected hidden_size {h}"
        ));
    }
    let qk = weights.project(layer, &values.decode(), n)?;
    let qk = Quantized::from_f32(&qk, 2 * h)?;
    crate::qk::scores(&qk, n, h, heads)
}

/// Writes `weights` as `dir/attention_weights.safetensors` (atomically) and describes it for
/// the manifest.
pub fn write(dir: &Path, weights: &AttentionWeights) -> Result<crate::manifest::SideFile> {
    let (side, bytes) = side_file(weights)?;
    kd_core::fs::write_atomic(&dir.join(&side.file), &bytes)?;
    Ok(side)
}

/// The manifest's description of the weights file of `weights`, with its bytes (written by
/// [`write`]; the bytes are a pure function of the weights).
pub fn side_file(weights: &AttentionWeights) -> Result<(crate::manifest::SideFile, Vec<u8>)> {
    let bytes = weights.to_bytes()?;
    let side = crate::manifest::SideFile {
        file: ATTENTION_WEIGHTS_FILE.to_string(),
        sha256: kd_core::fs::sha256_hex(&bytes),
        bytes: bytes.len() as u64,
    };
    Ok((side, bytes))
}

/// Reads and checks the weights file a manifest names (its size and SHA-256, then its
/// tensors against the `attention_input` layers and the teacher's `hidden_size`); `None`
/// for a cache without it. Errors name the file.
pub fn load(dir: &Path, manifest: &crate::Manifest) -> Result<Option<AttentionWeights>> {
    let (Some(side), Some(a)) = (
        &manifest.attention_weights,
        &manifest.targets.attention_input,
    ) else {
        return Ok(None);
    };
    let path = dir.join(&side.file);
    let bytes = std::fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CacheError::corrupt(&path, "file", "named in manifest.json but missing")
        } else {
            CacheError::io(&path, e)
        }
    })?;
    if bytes.len() as u64 != side.bytes {
        return Err(CacheError::corrupt(
            &path,
            "file",
            format!(
                "{} bytes, manifest.json says {} (truncated or replaced?)",
                bytes.len(),
                side.bytes
            ),
        ));
    }
    if !kd_core::fs::sha256_hex(&bytes).eq_ignore_ascii_case(&side.sha256) {
        return Err(CacheError::corrupt(
            &path,
            "file",
            "sha256 differs from manifest.json (damaged or replaced?)",
        ));
    }
    let (hidden, _) = manifest
        .attention_shape()
        .map_err(|message| CacheError::Manifest {
            path: crate::Manifest::path(dir),
            message,
        })?;
    AttentionWeights::from_bytes(&bytes, &a.layers, hidden, &path).map(Some)
}
