//! Where a derived task file came from: the tool that wrote it (e.g. `kd augment`), its
//! settings, and the checksums of its input and of the file itself, in a JSON file beside it
//! (`transfer.jsonl` -> `transfer.jsonl.provenance.json`). Readers trust a record only while
//! the file still has the recorded checksum, so a regenerated or edited file is never
//! described by a stale record.

use crate::{DataError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The provenance record of a derived file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The tool and version that wrote the file, e.g. `kd augment 0.1.0`.
    pub tool: String,
    /// The input file, as given.
    pub input: String,
    /// SHA-256 (hex) of the input file.
    pub input_sha256: String,
    /// SHA-256 (hex) of the derived file when it was written.
    pub sha256: String,
    /// The tool's settings (for `kd augment`: method, copies, seed, probabilities).
    pub settings: serde_json::Value,
}

/// Where the provenance record of `file` lives: `file` with `.provenance.json` appended.
pub fn provenance_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".provenance.json");
    file.with_file_name(name)
}

/// The provenance record of `file` if one exists and still describes it (`file_sha256` is the
/// file's current checksum); `None` when there is none or the file changed since. A record
/// that does not parse is an error naming it.
pub fn read_provenance(file: &Path, file_sha256: &str) -> Result<Option<Provenance>> {
    let path = provenance_path(file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DataError::io(path, e)),
    };
    let record: Provenance = serde_json::from_str(&text).map_err(|e| DataError::Malformed {
        path: path.clone(),
        line: e.line(),
        message: e.to_string(),
    })?;
    Ok((record.sha256 == file_sha256).then_some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_describes_its_file_only_while_the_checksum_matches() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("transfer.jsonl");
        assert_eq!(
            provenance_path(&file),
            dir.path().join("transfer.jsonl.provenance.json")
        );
        assert_eq!(read_provenance(&file, "ab").unwrap(), None);
        let record = Provenance {
            tool: "kd augment 0.1.0".into(),
            input: "reviews.txt".into(),
            input_sha256: "cd".into(),
            sha256: "ab".into(),
            settings: serde_json::json!({"method": "tang", "copies": 1}),
        };
        std::fs::write(
            provenance_path(&file),
            serde_json::to_string(&record).unwrap(),
        )
        .unwrap();
        assert_eq!(read_provenance(&file, "ab").unwrap(), Some(record));
        assert_eq!(read_provenance(&file, "ef").unwrap(), None);
        std::fs::write(provenance_path(&file), "{\"tool\": 1}").unwrap();
        let e = read_provenance(&file, "ab").unwrap_err().to_string();
        assert!(e.contains("transfer.jsonl.provenance.json"), "{e}");
    }
}
