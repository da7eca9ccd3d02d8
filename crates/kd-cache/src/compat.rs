//! Whether a cache fits its consumer: [`Expectation`] and
//! [`Manifest::check_compatible`].

use crate::error::{CacheError, Result};
use crate::manifest::{check_schema, Manifest};
use crate::targets::{LayerSpec, TargetSpec};

/// What a consumer (a student run) needs from a cache.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Expectation {
    /// SHA-256 of the consumer's tokenizer file, if it must match.
    pub tokenizer_sha256: Option<String>,
    /// SHA-256 of the teacher weights the consumer was configured with, if any.
    pub teacher_weights_sha256: Option<String>,
    /// Targets needed. Precisions are ignored; `mlm_topk` needs at least `k`
    /// and every listed temperature, `mlm_sampled` the same temperature and
    /// at least `k` draws, layers must all be present. An `attention` layer is
    /// present when the cache stores its map or its query/key projections
    /// (`attention_qk`); a needed `attention_qk` layer only in the second form.
    pub targets: TargetSpec,
    /// Accept a partial cache (one `--shard i/N` part); refused by default.
    pub allow_partial: bool,
}

impl Expectation {
    /// Needs `targets`, checks no checksum.
    pub fn new(targets: TargetSpec) -> Self {
        Expectation {
            targets,
            ..Expectation::default()
        }
    }

    /// Also requires the tokenizer SHA-256 `sha`.
    pub fn tokenizer(mut self, sha: impl Into<String>) -> Self {
        self.tokenizer_sha256 = Some(sha.into());
        self
    }

    /// Also requires the teacher weights SHA-256 `sha`.
    pub fn teacher(mut self, sha: impl Into<String>) -> Self {
        self.teacher_weights_sha256 = Some(sha.into());
        self
    }
}

fn short(sha: &str) -> String {
    if sha.is_empty() {
        return "(none)".into();
    }
    let head: String = sha.chars().take(12).collect();
    if head.len() < sha.len() {
        format!("{head}..")
    } else {
        head
    }
}

fn list(v: &[u32]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn stored(t: &TargetSpec) -> String {
    let mut v = Vec::new();
    if t.mlm_topk.is_some() {
        v.push("mlm-topk");
    }
    if t.mlm_sampled.is_some() {
        v.push("mlm-sampled");
    }
    if t.hidden.is_some() {
        v.push("hidden");
    }
    if t.attention.is_some() {
        v.push("attention");
    }
    if t.attention_qk.is_some() {
        v.push("attention-qk");
    }
    if t.attention_input.is_some() {
        v.push("attention-input");
    }
    if t.logits {
        v.push("logits");
    }
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(", ")
    }
}

fn check_layers(
    what: &str,
    have: Option<&LayerSpec>,
    need: Option<&LayerSpec>,
    all: &TargetSpec,
    out: &mut Vec<String>,
) {
    let Some(need) = need else { return };
    let Some(have) = have else {
        out.push(format!("cache has no {what} (it stores {})", stored(all)));
        return;
    };
    for l in &need.layers {
        if !have.layers.contains(l) {
            out.push(format!(
                "cache has no {what} for layer {l} (it has {})",
                list(&have.layers)
            ));
        }
    }
}

/// Needed attention layers: each present as a map (`attention`), as query/key projections
/// (`attention_qk`) or as input hidden states (`attention_input`).
fn check_attention(have: &TargetSpec, need: Option<&LayerSpec>, out: &mut Vec<String>) {
    let Some(need) = need else { return };
    if have.attention_qk.is_none() && have.attention_input.is_none() {
        return check_layers("attention", have.attention.as_ref(), Some(need), have, out);
    }
    let held = |s: &Option<LayerSpec>| s.as_ref().map(|s| s.layers.clone()).unwrap_or_default();
    let (maps, qk, inputs) = (
        held(&have.attention),
        held(&have.attention_qk),
        held(&have.attention_input),
    );
    for l in &need.layers {
        if !maps.contains(l) && !qk.contains(l) && !inputs.contains(l) {
            let inputs = match have.attention_input {
                Some(_) => format!(", inputs of {}", list(&inputs)),
                None => String::new(),
            };
            out.push(format!(
                "cache has no attention for layer {l} (maps of {}, query/key of {}{inputs})",
                list(&maps),
                list(&qk),
            ));
        }
    }
}

/// The smallest target spec holding both `have` and `need` (for the `--targets` spelling
/// that would make a cache fit).
pub fn union(have: &TargetSpec, need: &TargetSpec) -> TargetSpec {
    let mut u = have.clone();
    if let Some(n) = &need.mlm_topk {
        let t = u.mlm_topk.get_or_insert_with(|| n.clone());
        t.k = t.k.max(n.k);
        for x in &n.temperatures {
            if !t.temperatures.contains(x) {
                t.temperatures.push(*x);
            }
        }
        if !n.positions.is_masked() {
            t.positions = n.positions;
        }
    }
    if let Some(n) = &need.mlm_sampled {
        let s = u.mlm_sampled.get_or_insert_with(|| n.clone());
        (s.k, s.temperature) = (s.k.max(n.k), n.temperature);
    }
    // Attention layers missing from the cache join the form it already uses for attention
    // (its query/key projections or its inputs when it stores only those).
    let mut need_attention = need.attention.clone();
    if let Some(mut n) = need_attention.take() {
        for other in [&have.attention_qk, &have.attention_input]
            .into_iter()
            .flatten()
        {
            n.layers.retain(|l| !other.layers.contains(l));
        }
        let only_inputs = have.attention.is_none() && have.attention_qk.is_none();
        match u.attention_qk.as_mut() {
            _ if n.layers.is_empty() => {}
            None if only_inputs && u.attention_input.is_some() => {
                if let Some(q) = u.attention_input.as_mut() {
                    // n.layers holds no layer of the inputs (retained above).
                    q.layers.extend(n.layers.iter().copied());
                    q.layers.sort_unstable();
                }
            }
            Some(q) if have.attention.is_none() => {
                let add: Vec<u32> = n
                    .layers
                    .iter()
                    .filter(|x| !q.layers.contains(x))
                    .copied()
                    .collect();
                q.layers.extend(add);
                q.layers.sort_unstable();
            }
            _ => need_attention = Some(n),
        }
    }
    for (mine, theirs) in [
        (&mut u.hidden, &need.hidden),
        (&mut u.attention, &need_attention),
        (&mut u.attention_qk, &need.attention_qk),
    ] {
        if let Some(n) = theirs {
            let l = mine.get_or_insert_with(|| n.clone());
            l.layers.extend(
                n.layers
                    .iter()
                    .filter(|x| !l.layers.contains(x))
                    .copied()
                    .collect::<Vec<_>>(),
            );
            l.layers.sort_unstable();
        }
    }
    u.logits |= need.logits;
    u
}

/// `spec` with its attention layers in the other form (maps as query/key projections or
/// the reverse, same precision), when it holds one form only.
fn other_attention_form(spec: &TargetSpec) -> Option<TargetSpec> {
    let mut alt = spec.clone();
    match (&spec.attention, &spec.attention_qk) {
        (Some(a), None) => (alt.attention, alt.attention_qk) = (None, Some(a.clone())),
        (None, Some(q)) => (alt.attention, alt.attention_qk) = (Some(q.clone()), None),
        _ => return None,
    }
    Some(alt)
}

/// Differences of `have` against what `need` asks for, one line each.
pub fn missing_targets(have: &TargetSpec, need: &TargetSpec) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(n) = &need.mlm_topk {
        match &have.mlm_topk {
            None => out.push(format!(
                "cache has no mlm-topk (it stores {})",
                stored(have)
            )),
            Some(h) => {
                if h.k < n.k {
                    out.push(format!("cache mlm-topk has k = {} < {} needed", h.k, n.k));
                }
                if !n.positions.is_masked() && h.positions.is_masked() {
                    out.push(
                        "cache mlm-topk is stored at masked positions only; soft targets at \
                         every token need `mlm-topk:...,positions=all`"
                            .to_string(),
                    );
                }
                for t in &n.temperatures {
                    if !h.temperatures.contains(t) {
                        out.push(format!(
                            "cache mlm-topk has no log-partition at temperature {t} (it has {:?})",
                            h.temperatures
                        ));
                    }
                }
            }
        }
    }
    if let Some(n) = &need.mlm_sampled {
        match &have.mlm_sampled {
            None => out.push(format!(
                "cache has no mlm-sampled (it stores {})",
                stored(have)
            )),
            Some(h) => {
                if h.temperature != n.temperature {
                    out.push(format!(
                        "cache mlm-sampled is at temperature {} != {} needed",
                        h.temperature, n.temperature
                    ));
                }
                if h.k < n.k {
                    out.push(format!(
                        "cache mlm-sampled has k = {} < {} needed",
                        h.k, n.k
                    ));
                }
            }
        }
    }
    check_layers(
        "hidden state",
        have.hidden.as_ref(),
        need.hidden.as_ref(),
        have,
        &mut out,
    );
    check_attention(have, need.attention.as_ref(), &mut out);
    check_layers(
        "attention-qk",
        have.attention_qk.as_ref(),
        need.attention_qk.as_ref(),
        have,
        &mut out,
    );
    if need.logits && !have.logits {
        out.push(format!(
            "cache has no classifier logits (it stores {})",
            stored(have)
        ));
    }
    out
}

impl Manifest {
    /// Refuses a cache whose schema version, tokenizer or teacher differ from
    /// `expect`, that lacks a needed target, or that is a single part of a
    /// sharded job; the message names every difference.
    pub fn check_compatible(&self, expect: &Expectation) -> Result<()> {
        let mut out = Vec::new();
        if let Err(e) = check_schema(&self.schema_version, &self.targets) {
            out.push(format!("cache {e}"));
        }
        if let Some(sha) = &expect.tokenizer_sha256 {
            if !sha.eq_ignore_ascii_case(&self.tokenizer_sha256) {
                out.push(format!(
                    "cache tokenizer sha256 {} != student tokenizer {}",
                    short(&self.tokenizer_sha256),
                    short(sha)
                ));
            }
        }
        if let Some(sha) = &expect.teacher_weights_sha256 {
            if !sha.eq_ignore_ascii_case(&self.teacher.weights_sha256) {
                out.push(format!(
                    "cache teacher weights sha256 {} != expected teacher {}",
                    short(&self.teacher.weights_sha256),
                    short(sha)
                ));
            }
        }
        let missing = missing_targets(&self.targets, &expect.targets);
        if !missing.is_empty() {
            out.extend(missing);
            let with = union(&self.targets, &expect.targets);
            out.push(format!("a cache with them: kd precompute --targets {with}"));
            if let Some(alt) = other_attention_form(&with) {
                out.push(format!(
                    "or, with the other attention form: --targets {alt}"
                ));
            }
        }
        if let (Some(p), false) = (self.part, expect.allow_partial) {
            out.push(format!(
                "cache is part {}/{} of a sharded run; merge the parts first",
                p.index, p.count
            ));
        }
        if out.is_empty() {
            Ok(())
        } else {
            Err(CacheError::Incompatible(out.join("; ")))
        }
    }
}
