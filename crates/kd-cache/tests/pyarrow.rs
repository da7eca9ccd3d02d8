//! pyarrow opens a Parquet shard and reads the same values as this crate. Without pyarrow
//! the test fails (scripts/test.sh installs it) unless `KD_SKIP_PYARROW=1` asks to skip it.

mod common;

use std::process::Command;

use common::*;
use kd_cache::{Backend, CacheReader, TargetSpec};

const SCRIPT: &str = r#"
import json, struct, sys
import pyarrow.parquet as pq
path = sys.argv[1]
f = pq.ParquetFile(path)
t = f.read()
d = t.to_pydict()
n1 = len(d["input_ids"][1])
H = len(d["hidden_l2"][1]) // n1
q = struct.unpack_from("<%db" % H, d["hidden_l2"][1], 3 * H)
scale = d["hidden_l2_scale"][1][3]
n2 = len(d["input_ids"][2])
att = struct.unpack_from("<%de" % n2, d["attention_l1"][2], 2 * n2 * 2)
k = 4
top = struct.unpack_from("<%de" % k, d["topk_logits"][0], 0)
print(json.dumps({
    "num_rows": t.num_rows,
    "row_groups": f.num_row_groups,
    "seq_id": d["seq_id"],
    "epoch": d["epoch"],
    "input_ids_1": d["input_ids"][1],
    "hidden_row": [v * scale for v in q],
    "attention_row": list(att),
    "topk_ids_0": d["topk_ids"][0],
    "topk_logits_0": list(top),
    "log_partition_0": d["log_partition"][0],
    "label_class": d["label_class"],
    "types": {fld.name: str(fld.type) for fld in t.schema},
    "targets": f.schema_arrow.metadata[b"kd.targets"].decode(),
    "hidden_precision": f.schema_arrow.field("hidden_l2").metadata[b"kd.precision"].decode(),
}))
"#;

fn has_pyarrow() -> bool {
    Command::new("python3")
        .args(["-c", "import pyarrow"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn pyarrow_reads_a_parquet_shard() {
    if std::env::var_os("KD_SKIP_PYARROW").is_some_and(|v| v == "1") {
        println!("note: KD_SKIP_PYARROW=1: the pyarrow check is skipped");
        return;
    }
    assert!(
        has_pyarrow(),
        "python3 -c 'import pyarrow' fails: run `python3 -m pip install pyarrow` (scripts/test.sh \
         does), or set KD_SKIP_PYARROW=1 to skip this check"
    );
    let spec = TargetSpec::parse(
        "mlm-topk:k=4,t=1,2@f16,hidden:0,2@int8,attention:1@f16",
        LAYERS,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let records = random_records(11, &spec, 8);
    let mut opts = small_options();
    opts.rows_per_shard = 100;
    let m = write_cache(
        dir.path(),
        manifest(&spec, Backend::Parquet),
        &records,
        opts,
    );
    let shard = dir.path().join(&m.shards[0].file);
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(&shard)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reader = CacheReader::open(dir.path()).unwrap();
    let rust: Vec<_> = reader.iter().map(|r| r.unwrap()).collect();

    assert_eq!(py["num_rows"], 8);
    assert_eq!(py["row_groups"], 3, "row groups of 3 rows");
    let seq: Vec<u64> = rust.iter().map(|r| r.seq_id).collect();
    assert_eq!(py["seq_id"], serde_json::json!(seq));
    let epochs: Vec<u32> = rust.iter().map(|r| r.epoch).collect();
    assert_eq!(py["epoch"], serde_json::json!(epochs));
    assert_eq!(py["input_ids_1"], serde_json::json!(rust[1].input_ids));
    assert_eq!(
        py["topk_ids_0"],
        serde_json::json!(rust[0].mlm_topk.as_ref().unwrap().ids)
    );
    let lp = &rust[0].mlm_topk.as_ref().unwrap().log_partition;
    let py_lp: Vec<f32> = serde_json::from_value(py["log_partition_0"].clone()).unwrap();
    assert_eq!(&py_lp, lp);

    let close = |py_vals: &serde_json::Value, want: &[f32], what: &str| {
        let got: Vec<f64> = serde_json::from_value(py_vals.clone()).unwrap();
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - f64::from(*w)).abs() <= 1e-6 * (1.0 + g.abs()),
                "{what}: {g} vs {w}"
            );
        }
    };
    let hidden = rust[1].hidden_layer(2).unwrap().decode_row(3).unwrap();
    close(&py["hidden_row"], &hidden, "hidden_l2 row 3 of record 1");
    let att = rust[2].attention_layer(1).unwrap().decode_row(2).unwrap();
    close(&py["attention_row"], &att, "attention_l1 row 2 of record 2");
    let top = rust[0]
        .mlm_topk
        .as_ref()
        .unwrap()
        .logits
        .decode_row(0)
        .unwrap();
    close(&py["topk_logits_0"], &top, "topk_logits row 0");

    let types = &py["types"];
    assert_eq!(types["seq_id"], "uint64");
    assert_eq!(types["input_ids"], "list<item: uint32>");
    assert_eq!(types["hidden_l2"], "binary");
    assert_eq!(types["hidden_l2_scale"], "list<item: float>");
    assert_eq!(types["label_class"], "uint32");
    assert_eq!(py["targets"], spec.to_string());
    assert_eq!(py["hidden_precision"], "int8");
    let labels: Vec<Option<u32>> = rust
        .iter()
        .map(|r| match r.label {
            Some(kd_cache::Label::Class(c)) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(py["label_class"], serde_json::json!(labels));
}
