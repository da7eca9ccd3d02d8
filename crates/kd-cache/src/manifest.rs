//! `manifest.json`: what a cache holds and how it was made.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{CacheError, Result};
use crate::targets::TargetSpec;
use kd_core::fs::{sha256_file, write_atomic};

/// The schema of caches holding `attention_qk` (and no `attention_input`): `kd-cache/1` plus
/// the `attention_qk` target (`schemas/cache-v2.md`). Caches that do not hold it are written
/// as [`SCHEMA_VERSION_1`], so readers that know only version 1 still read them.
pub const SCHEMA_VERSION: &str = "kd-cache/2";

/// The newest schema this crate writes and reads: `kd-cache/2` plus the `attention_input`
/// target and its `attention_weights` side file (`schemas/cache-v3.md`), only for caches that
/// hold it.
pub const SCHEMA_VERSION_3: &str = "kd-cache/3";

/// The first schema (`schemas/cache-v1.md`), still read and written for caches without
/// `attention_qk`.
pub const SCHEMA_VERSION_1: &str = "kd-cache/1";

/// The schema version a cache holding `targets` is written with: [`SCHEMA_VERSION_3`] when it
/// holds `attention_input`, [`SCHEMA_VERSION`] when it holds `attention_qk`, else
/// [`SCHEMA_VERSION_1`]: the lowest version that holds them.
pub fn schema_version_for(targets: &TargetSpec) -> &'static str {
    if targets.attention_input.is_some() {
        SCHEMA_VERSION_3
    } else if targets.attention_qk.is_some() {
        SCHEMA_VERSION
    } else {
        SCHEMA_VERSION_1
    }
}

/// Checks that this crate reads `version` and that a cache of that version may hold
/// `targets` (`attention_qk` needs `kd-cache/2`, `attention_input` `kd-cache/3`); the message
/// says what is wrong.
pub fn check_schema(version: &str, targets: &TargetSpec) -> std::result::Result<(), String> {
    if ![SCHEMA_VERSION_1, SCHEMA_VERSION, SCHEMA_VERSION_3].contains(&version) {
        return Err(format!(
            "schema {version} is not supported (this reader reads {SCHEMA_VERSION_1}, \
             {SCHEMA_VERSION} and {SCHEMA_VERSION_3})"
        ));
    }
    if version == SCHEMA_VERSION_1 && targets.attention_qk.is_some() {
        return Err(format!(
            "schema {version} cannot hold attention_qk targets (they need {SCHEMA_VERSION})"
        ));
    }
    if version != SCHEMA_VERSION_3 && targets.attention_input.is_some() {
        return Err(format!(
            "schema {version} cannot hold attention_input targets (they need {SCHEMA_VERSION_3})"
        ));
    }
    Ok(())
}

/// File name of the manifest inside a cache folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Storage backend of the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Apache Parquet files (zstd), one row per record.
    Parquet,
    /// Memory-mapped shards of zstd blocks with a record index.
    Mmap,
}

impl Backend {
    /// File extension of its shards (`parquet` or `kdc`).
    pub fn extension(self) -> &'static str {
        match self {
            Backend::Parquet => "parquet",
            Backend::Mmap => "kdc",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Parquet => "parquet",
            Backend::Mmap => "mmap",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = CacheError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "parquet" => Ok(Backend::Parquet),
            "mmap" => Ok(Backend::Mmap),
            _ => Err(CacheError::Invalid(format!(
                "unknown backend `{s}` (known: parquet, mmap)"
            ))),
        }
    }
}

/// The teacher that produced the cache.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TeacherInfo {
    /// The teacher's `config.json`, verbatim.
    pub config: serde_json::Value,
    /// SHA-256 (hex) of the weights file.
    pub weights_sha256: String,
    /// Where the teacher came from (a path or name), for people.
    #[serde(default)]
    pub source: Option<String>,
}

/// One corpus file, in reading order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CorpusFile {
    /// Path as given to the producer.
    pub path: String,
    /// SHA-256 (hex) of its bytes.
    pub sha256: String,
}

/// MLM masking parameters (the fields of `kd_data::MaskConfig` plus the seed).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MaskingParams {
    /// Seed of the per-(epoch, sequence) masking generator.
    pub seed: u64,
    /// Share of candidate tokens masked.
    pub mask_prob: f64,
    /// Share of masked positions replaced by `[MASK]`.
    pub mask_frac: f64,
    /// Share kept unchanged.
    pub keep_frac: f64,
    /// Share replaced by a random token.
    pub random_frac: f64,
    /// Frequency-smoothing exponent, if any.
    #[serde(default)]
    pub smoothing: Option<f64>,
}

/// A file of the cache referenced by name and checksum.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileRef {
    /// File name inside the cache folder.
    pub file: String,
    /// SHA-256 (hex) of its bytes.
    pub sha256: String,
}

impl FileRef {
    /// A reference to `dir/file` with its current checksum.
    pub fn for_file(dir: &Path, file: &str) -> Result<FileRef> {
        Ok(FileRef {
            file: file.to_string(),
            sha256: sha256_file(&dir.join(file))?,
        })
    }
}

/// A side file of the cache referenced by name, checksum and size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SideFile {
    /// File name inside the cache folder.
    pub file: String,
    /// SHA-256 (hex) of its bytes.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// One shard file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardInfo {
    /// File name inside the cache folder.
    pub file: String,
    /// Records.
    pub rows: u64,
    /// Real tokens over all records.
    pub tokens: u64,
    /// File size.
    pub bytes: u64,
    /// SHA-256 (hex) of the file.
    pub sha256: String,
}

/// Which slice of a job (`--shard index/count`) produced a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Part {
    /// 0-based index.
    pub index: u32,
    /// Number of parts.
    pub count: u32,
}

/// The manifest of a cache.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// [`schema_version_for`] its targets, for caches this crate writes.
    pub schema_version: String,
    /// The teacher.
    pub teacher: TeacherInfo,
    /// SHA-256 (hex) of the tokenizer file.
    pub tokenizer_sha256: String,
    /// Corpus files in reading order.
    pub corpus: Vec<CorpusFile>,
    /// Masking parameters (`None` for unmasked task data).
    pub masking: Option<MaskingParams>,
    /// Masked epochs written.
    pub epochs: u32,
    /// Targets and precisions.
    pub targets: TargetSpec,
    /// Shard backend.
    pub backend: Backend,
    /// Shards in record order.
    pub shards: Vec<ShardInfo>,
    /// Token frequency table (e.g. `token_counts.json`), if any.
    #[serde(default)]
    pub token_counts: Option<FileRef>,
    /// Set on a partial cache made with `--shard index/count`.
    #[serde(default)]
    pub part: Option<Part>,
    /// Producer-specific settings (packing, vocabulary size, ...).
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
    /// The teacher's query/key weights of the `attention_input` layers
    /// (`attention_weights.safetensors`, `kd-cache/3`); absent from older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_weights: Option<SideFile>,
}

impl Manifest {
    /// A manifest without shards for `targets` on `backend`; the other fields
    /// are empty and meant to be filled in by the producer.
    pub fn new(targets: TargetSpec, backend: Backend) -> Manifest {
        Manifest {
            schema_version: schema_version_for(&targets).to_string(),
            teacher: TeacherInfo {
                config: serde_json::Value::Null,
                weights_sha256: String::new(),
                source: None,
            },
            tokenizer_sha256: String::new(),
            corpus: Vec::new(),
            masking: None,
            epochs: 1,
            targets,
            backend,
            shards: Vec::new(),
            token_counts: None,
            part: None,
            extra: BTreeMap::new(),
            attention_weights: None,
        }
    }

    /// Path of the manifest in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(MANIFEST_FILE)
    }

    /// Reads `dir/manifest.json` and checks its internal consistency.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = Manifest::path(dir);
        let text = std::fs::read_to_string(&path).map_err(|e| CacheError::io(&path, e))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| CacheError::Manifest {
            path: path.clone(),
            message: format!("line {}: {e}", e.line()),
        })?;
        m.validate().map_err(|e| CacheError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if m.targets.attention_input.is_some() && m.attention_weights.is_none() {
            return Err(CacheError::Manifest {
                path,
                message: "targets hold attention_input but no attention_weights file is named"
                    .into(),
            });
        }
        Ok(m)
    }

    /// Pretty JSON text.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| CacheError::Invalid(e.to_string()))
    }

    /// Writes `dir/manifest.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.validate()?;
        let mut text = self.to_json()?;
        text.push('\n');
        Ok(write_atomic(&Manifest::path(dir), text.as_bytes())?)
    }

    /// Checks file names (plain names, no folders), the targets, and the part.
    pub fn validate(&self) -> Result<()> {
        self.targets.validate()?;
        if self.targets.attention_qk.is_some() && self.schema_version == SCHEMA_VERSION_1 {
            return Err(CacheError::Invalid(format!(
                "schema {SCHEMA_VERSION_1} cannot hold attention_qk targets (they need \
                 {SCHEMA_VERSION})"
            )));
        }
        if self.targets.attention_input.is_some() && self.schema_version != SCHEMA_VERSION_3 {
            return Err(CacheError::Invalid(format!(
                "schema {} cannot hold attention_input targets (they need {SCHEMA_VERSION_3})",
                self.schema_version
            )));
        }
        if self.attention_weights.is_some() && self.targets.attention_input.is_none() {
            return Err(CacheError::Invalid(
                "an attention_weights file is named but targets hold no attention_input".into(),
            ));
        }
        let names = self
            .shards
            .iter()
            .map(|s| s.file.as_str())
            .chain(self.token_counts.iter().map(|t| t.file.as_str()))
            .chain(self.attention_weights.iter().map(|t| t.file.as_str()));
        for name in names {
            if !is_plain_name(name) {
                return Err(CacheError::Invalid(format!(
                    "file name `{name}` must be a plain name inside the cache folder"
                )));
            }
        }
        for (i, s) in self.shards.iter().enumerate() {
            if self.shards[..i].iter().any(|t| t.file == s.file) {
                return Err(CacheError::Invalid(format!(
                    "shard `{}` listed twice",
                    s.file
                )));
            }
        }
        if let Some(p) = self.part {
            if p.count == 0 || p.index >= p.count {
                return Err(CacheError::Invalid(format!(
                    "bad part {}/{}",
                    p.index, p.count
                )));
            }
        }
        Ok(())
    }

    /// The teacher's `(hidden_size, num_attention_heads)` from its config, checked to split
    /// into whole heads: what recomputing scores from `attention_qk` targets needs.
    pub fn attention_shape(&self) -> std::result::Result<(usize, usize), String> {
        let get = |k: &str| {
            self.teacher
                .config
                .get(k)
                .and_then(|v| v.as_u64())
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| {
                    format!("teacher.config has no {k}, which attention_qk targets need")
                })
        };
        let (hidden, heads) = (get("hidden_size")?, get("num_attention_heads")?);
        crate::qk::head_dim(hidden, heads).map_err(|e| format!("teacher.config: {e}"))?;
        Ok((hidden, heads))
    }

    /// Records over all shards.
    pub fn rows(&self) -> u64 {
        self.shards.iter().map(|s| s.rows).sum()
    }

    /// Real tokens over all shards.
    pub fn tokens(&self) -> u64 {
        self.shards.iter().map(|s| s.tokens).sum()
    }

    /// Bytes of all shard files.
    pub fn bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes).sum()
    }
}

/// Whether `name` is a plain file name (no separator, not `.`/`..`).
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("../../../schemas/manifest-v1.example.json");
        let m: Manifest = serde_json::from_str(text).unwrap();
        m.validate().unwrap();
        assert_eq!(m.schema_version, SCHEMA_VERSION_1);
        assert_eq!(
            m.targets.to_string(),
            "mlm-topk:k=32,t=1,2@f16,mlm-sampled:k=12,t=2,hidden:0,6@f16,attention:3,6@int8"
        );
        assert_eq!(m.to_json().unwrap().trim(), text.trim());
    }

    #[test]
    fn the_documented_version_2_example_parses() {
        let text = include_str!("../../../schemas/manifest-v2.example.json");
        let m: Manifest = serde_json::from_str(text).unwrap();
        m.validate().unwrap();
        assert_eq!(m.schema_version, SCHEMA_VERSION);
        assert_eq!(schema_version_for(&m.targets), SCHEMA_VERSION);
        assert_eq!(m.attention_shape().unwrap(), (384, 12));
        assert_eq!(
            m.targets.to_string(),
            "mlm-topk:k=32,t=1,2@f16,mlm-sampled:k=12,t=2,hidden:0,6@f16,attention:3,6@int8,\
             attention-qk:2,4@int8"
        );
        assert_eq!(m.to_json().unwrap().trim(), text.trim());
        let mut v1 = m.clone();
        v1.schema_version = SCHEMA_VERSION_1.into();
        let e = v1.validate().unwrap_err().to_string();
        assert!(e.contains("kd-cache/1 cannot hold attention_qk"), "{e}");
        assert!(check_schema(SCHEMA_VERSION_1, &m.targets).is_err());
        assert!(check_schema("kd-cache/4", &TargetSpec::default())
            .unwrap_err()
            .contains("not supported"));
    }

    #[test]
    fn the_documented_version_3_example_parses() {
        let text = include_str!("../../../schemas/manifest-v3.example.json");
        let m: Manifest = serde_json::from_str(text).unwrap();
        m.validate().unwrap();
        assert_eq!(m.schema_version, SCHEMA_VERSION_3);
        assert_eq!(schema_version_for(&m.targets), SCHEMA_VERSION_3);
        assert_eq!(
            m.targets.to_string(),
            "mlm-topk:k=32,t=1,2@f16,mlm-sampled:k=12,t=2,hidden:0,2,4,6@int8,\
             attention-input:2,4,6@int8"
        );
        assert_eq!(
            m.attention_weights.as_ref().map(|w| w.file.as_str()),
            Some("attention_weights.safetensors")
        );
        assert_eq!(m.to_json().unwrap().trim(), text.trim());
        for older in [SCHEMA_VERSION_1, SCHEMA_VERSION] {
            let mut v = m.clone();
            v.schema_version = older.into();
            let e = v.validate().unwrap_err().to_string();
            assert!(e.contains("cannot hold attention_input"), "{e}");
            assert!(check_schema(older, &m.targets).is_err());
        }
    }

    #[test]
    fn json_round_trip_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Manifest::new(TargetSpec::parse("hidden:last", 4).unwrap(), Backend::Mmap);
        m.teacher.weights_sha256 = "ab".repeat(32);
        m.shards.push(ShardInfo {
            file: "shard-00000.kdc".into(),
            rows: 3,
            tokens: 30,
            bytes: 100,
            sha256: "00".repeat(32),
        });
        m.extra
            .insert("vocab_size".into(), serde_json::json!(30522));
        m.save(dir.path()).unwrap();
        let back = Manifest::load(dir.path()).unwrap();
        assert_eq!(back, m);
        assert_eq!((back.rows(), back.tokens(), back.bytes()), (3, 30, 100));
        let text = std::fs::read_to_string(Manifest::path(dir.path())).unwrap();
        assert!(
            text.contains("\"schema_version\": \"kd-cache/1\""),
            "{text}"
        );
        assert!(text.contains("\"backend\": \"mmap\""));

        m.shards[0].file = "../x".into();
        assert!(m.save(dir.path()).is_err());
        std::fs::write(Manifest::path(dir.path()), "{\"schema_version\": 3}").unwrap();
        let e = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("manifest.json") && e.contains("line 1"), "{e}");
    }
}
