#!/usr/bin/env bash
# kd on one GPU, checked against the CPU of the same machine: the quickstart's cache, students
# and eval on `cuda:0`, training speed from the cache vs online vs the PyTorch step on the GPU,
# and a BERT-base-sized teacher -> 6-layer student from the cache vs online.
#
#   KD=path/to/kd benches/gpu.sh TEACHER_DIR CORPUS_DIR WORK_DIR
#
# KD: kd built with `cargo build --release --features cuda` (nvcc on PATH; CUDA_COMPUTE_CAP set
# when the build machine has no GPU). TEACHER_DIR: the quickstart teacher (MiniLM with its MLM
# head fitted), CORPUS_DIR: assets/sotu. Every result is a JSON line in WORK_DIR/results.jsonl.
# DEVICE (default cuda:0), SEQS (training sequences, default 2000), STEPS (student steps, default
# one epoch), BASE_SEQS / BASE_STEPS (BERT-base part, 2048 / 40) shrink it for a smoke test.
# The results are then checked against thresholds (benches/gpu_check.py, which lists them and
# their overrides): the script exits 1 when one is missed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
kd=$(realpath "${KD:-$repo/target/release/kd}")
teacher=$(realpath "${1:?usage: KD=kd benches/gpu.sh TEACHER_DIR CORPUS_DIR WORK_DIR}")
corpus=$(realpath "${2:?corpus dir}")
work=${3:?work dir}
mkdir -p "$work" && cd "$work"
export KD_NO_PROGRESS=1
gpu=${DEVICE:-cuda:0}
sized=(--set "steps.1.source.max_sequences=${SEQS:-2000}")
[ -n "${STEPS:-}" ] && sized+=(--set "steps.3.train.max_steps=$STEPS" --set "steps.4.train.max_steps=$STEPS")
results=$PWD/results.jsonl
: > "$results"
record() { python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])))' "$1" | tee -a "$results"; }

# The quickstart's layout, with the fitted teacher and the corpus in place (no fetch, no fit).
mkdir -p runs/quickstart/teacher assets
ln -sfn "$teacher" runs/quickstart/teacher/model
ln -sfn "$corpus" assets/sotu
run() { "$kd" --device "$1" run --no-fetch "${sized[@]}" "${@:2}" > /dev/null; }
last() { tail -n 1 runs/distilbert-quickstart.jsonl; }

# 1. Caches on the GPU (train and held-out), then the teacher scored against the GPU's cache
#    on the CPU and on the GPU: agreement 1 and KL ~0 mean both devices compute the same teacher.
run $gpu --step 1 && record "$(last)"
run $gpu --step 2 && record "$(last)"
for dev in cpu $gpu; do
  "$kd" --device $dev eval --student "$teacher" --cache runs/quickstart/cache-heldout \
    --max-records 64 --json > parity.json
  record "$(python3 -c 'import json,sys; r=json.load(open("parity.json"));
print(json.dumps({"check": "teacher vs GPU cache", "device": sys.argv[1],
  "agreement": r["agreement"], "kl": r["kl"], "hidden_cosine": r["hidden_cosine"],
  "top1": r["student_top1"], "cache_top1": r["teacher_top1"]}))' $dev)"
done

# 2. The two students and their eval, all on the GPU; the distilled run again online, and a few
#    steps on this machine's CPU for the device ratio.
run $gpu --step 3 && record "$(last)"
run $gpu --step 4 && record "$(last)"
run $gpu --step 5 && record "$(last)"
run $gpu --step 3 --set steps.3.online=runs/quickstart/teacher/model \
  --set steps.3.out=runs/quickstart/online && record "$(last)"
run cpu --step 3 --set steps.3.out=runs/quickstart/cpu --set steps.3.train.max_steps=8 &&
  record "$(last)"
[ "$gpu" != cpu ] && record "$(python3 "$repo/benches/torch_distil.py" --device cuda --iters 50)"

# 3. BERT-base-sized teacher (random weights, uncased vocabulary) -> 6-layer student from the
#    teacher's layers [0, 2, 4, 7, 9, 11]: training speed from the cache vs online.
python3 - "$teacher" <<'PY'
import shutil, sys
from transformers import BertConfig, BertForMaskedLM
import torch
torch.manual_seed(0)
BertForMaskedLM(BertConfig()).save_pretrained("bert-base-random")
for f in ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]:
    shutil.copy(f"{sys.argv[1]}/{f}", "bert-base-random/")
PY
"$kd" --device $gpu precompute --teacher bert-base-random --corpus "$corpus" --heldout-docs 12 \
  --split train --max-sequences "${BASE_SEQS:-2048}" --targets mlm-topk:k=32,t=1,2,hidden:last \
  --out base-cache > base-precompute.json
for mode in cache online; do
  extra=()
  [ $mode = online ] && extra=(--online bert-base-random)
  "$kd" --device $gpu train --cache base-cache --out base-$mode --teacher bert-base-random \
    --layers 0,2,4,7,9,11 --batch-size 32 --max-steps "${BASE_STEPS:-40}" "${extra[@]}" > base-$mode.json
  record "$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]));
print(json.dumps({"bert_base_student": sys.argv[2], "tokens_per_s": r["tokens_per_s"]}))' \
    base-$mode.json $mode)"
done
record "$(python3 -c 'import json; r=json.load(open("base-precompute.json")); print(json.dumps({"bert_base_precompute": r}))')"

# 4. The thresholds: a missed one fails the bench (exit 1), naming it.
python3 "$repo/benches/gpu_check.py" "$results"
