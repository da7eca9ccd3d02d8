//! Why an output folder's cache is not this run's: the inputs whose checksums changed (a
//! regenerated transfer set, a retrained teacher, another tokenizer) or the settings that
//! differ, named in the refusal so the user knows what to restore or where else to write.

use kd_cache::Manifest;

/// What differs between the cache described by `recorded` (an existing manifest) and the one
/// this run would write (`now`), most specific first; empty when nothing but the shards does.
pub fn differences(recorded: &Manifest, now: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    for old in &recorded.corpus {
        match now.corpus.iter().find(|f| f.path == old.path) {
            Some(new) if new.sha256 != old.sha256 => out.push(format!(
                "{} changed since the cache was written (sha256 {} in its manifest, {} now)",
                old.path,
                short(&old.sha256),
                short(&new.sha256)
            )),
            Some(_) => {}
            None => out.push(format!("the cache was written from {}", old.path)),
        }
    }
    for new in &now.corpus {
        if !recorded.corpus.iter().any(|f| f.path == new.path) {
            out.push(format!("{} is not among the cache's inputs", new.path));
        }
    }
    if recorded.teacher.weights_sha256 != now.teacher.weights_sha256 {
        out.push(format!(
            "the teacher's weights differ (sha256 {} in the manifest, {} now)",
            short(&recorded.teacher.weights_sha256),
            short(&now.teacher.weights_sha256)
        ));
    }
    if recorded.tokenizer_sha256 != now.tokenizer_sha256 {
        out.push("the teacher's tokenizer differs".into());
    }
    if recorded.targets != now.targets {
        out.push("the targets differ".into());
    }
    let settings = |m: &Manifest| {
        serde_json::json!([
            m.masking,
            m.epochs,
            m.backend,
            m.part,
            m.extra,
            m.teacher.config
        ])
    };
    if out.is_empty() && settings(recorded) != settings(now) {
        out.push("the settings differ (masking, epochs, backend, source or teacher config)".into());
    }
    out
}

/// The refusal for `out`, which holds a `what` ("finished cache", "unfinished run") of another
/// configuration.
pub fn refusal(out: &std::path::Path, what: &str, differences: &[String]) -> String {
    let why = if differences.is_empty() {
        String::new()
    } else {
        format!(": {}", differences.join("; "))
    };
    format!(
        "{} holds a {what} of a different configuration{why}; choose another --out",
        out.display()
    )
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use kd_cache::{Backend, CorpusFile, TargetSpec};

    fn manifest(sha: &str, weights: &str) -> Manifest {
        let mut m = Manifest::new(TargetSpec::parse("logits", 2).unwrap(), Backend::Parquet);
        m.corpus = vec![CorpusFile {
            path: "runs/transfer.jsonl".into(),
            sha256: sha.into(),
        }];
        m.teacher.weights_sha256 = weights.into();
        m
    }

    #[test]
    fn a_changed_input_file_and_teacher_are_named_with_both_checksums() {
        let a = manifest(&"a".repeat(64), &"1".repeat(64));
        assert!(differences(&a, &a).is_empty());
        let d = differences(&a, &manifest(&"b".repeat(64), &"2".repeat(64)));
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(
            d[0],
            "runs/transfer.jsonl changed since the cache was written \
             (sha256 aaaaaaaaaaaa in its manifest, bbbbbbbbbbbb now)"
        );
        assert!(d[1].starts_with("the teacher's weights differ (sha256 111111111111"));
        let mut other = a.clone();
        other.epochs = 3;
        assert_eq!(differences(&a, &other).len(), 1);
        let msg = refusal(std::path::Path::new("out"), "finished cache", &d);
        assert!(msg.starts_with("out holds a finished cache of a different configuration: runs/"));
        assert!(msg.ends_with("; choose another --out"));
    }
}
