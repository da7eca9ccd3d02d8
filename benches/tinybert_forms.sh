#!/usr/bin/env bash
# Does the storage form of the attention targets change what a TinyBERT student learns?
# Writes caches of the same masked sequences that differ only in how the targets are stored:
# the attention of teacher layers 2, 4, 6 as maps f32, maps f16, Q/K f16, Q/K int8 (hidden states
# of 0, 2, 4, 6 at f16), and the smallest set, hidden states and attention inputs at int8
# (`input-int8`); trains the 3 x 192 student from each with SEEDS student seeds, and
# evaluates every student on one held-out cache (f32 maps) layer by layer. Prints, per form, the
# held-out hidden MSE, attention-score MSE and attention KL (means over the mapped layers) with
# their mean and spread over seeds: forms agree when their differences are within the spread.
#
#   benches/tinybert_forms.sh TEACHER_DIR [SEEDS] [SEQUENCES] [EPOCHS]
#   (e.g. runs/quickstart/teacher/model; defaults: 3 seeds, 400 sequences, 2 epochs)
set -euo pipefail
cd "$(dirname "$0")/.."
teacher=${1:?usage: benches/tinybert_forms.sh TEACHER_DIR [SEEDS] [SEQUENCES] [EPOCHS]}
seeds=${2:-3}
sequences=${3:-400}
epochs=${4:-2}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" KD_NO_PROGRESS=1
cargo build --release --bin kd >/dev/null
kd="$CARGO_TARGET_DIR/release/kd"
out=${KD_BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"
hidden="hidden:0,2,4,6@f16"
declare -A forms=([maps-f32]="$hidden,attention:2,4,6@f32" [maps-f16]="$hidden,attention:2,4,6@f16"
  [qk-f16]="$hidden,attention-qk:2,4,6@f16" [qk-int8]="$hidden,attention-qk:2,4,6@int8"
  [input-int8]="hidden:0,2,4,6@int8,attention-input:2,4,6@int8")
names=(maps-f32 maps-f16 qk-f16 qk-int8 input-int8)
[[ -d $out/heldout ]] || "$kd" precompute --teacher "$teacher" --corpus assets/sotu --heldout-docs 12 \
  --split heldout --max-sequences 200 --seed 1234 --targets "$hidden,attention:2,4,6@f32" \
  --out "$out/heldout" >/dev/null
cat > "$out/losses.toml" <<'TOML'
[[loss]]
kind = "embedding_mse"
projection = "linear"
[[loss]]
kind = "hidden_mse"
map = "uniform"
projection = "linear"
[[loss]]
kind = "attention_mse"
map = "uniform"
[train]
lr = 1e-3
warmup_fraction = 0.1
TOML
for form in "${names[@]}"; do
  [[ -d $out/cache-$form ]] || "$kd" precompute --teacher "$teacher" --corpus assets/sotu \
    --heldout-docs 12 --split train --max-sequences "$sequences" --targets "${forms[$form]}" \
    --out "$out/cache-$form" >/dev/null
  for ((s = 0; s < seeds; s++)); do
    run="$out/$form-seed$s"
    [[ -f $run/eval.json ]] && continue
    "$kd" train --cache "$out/cache-$form" --out "$run" \
      --student-config pipelines/students/minilm-3x192.json --tokenizer-from "$teacher" \
      --config "$out/losses.toml" --epochs "$epochs" --batch-size 32 --seed "$s" >/dev/null
    "$kd" eval --student "$run/model" --cache "$out/heldout" --layers uniform \
      --projections "$run/projections.safetensors" --json > "$run/eval.json"
  done
done
python3 - "$out" "$seeds" "${names[@]}" <<'PY'
import json, os, statistics, sys
out, seeds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
du = lambda p: sum(os.path.getsize(os.path.join(p, f)) for f in os.listdir(p)
                   if f.startswith("shard-") or f == "attention_weights.safetensors")
rows = {}
for form in names:
    vals = {"hidden_mse": [], "attention_mse": [], "attention_kl": []}
    for s in range(seeds):
        layers = json.load(open(os.path.join(out, f"{form}-seed{s}", "eval.json")))["layer_metrics"]
        for k in vals:
            vals[k].append(sum(l[k] for l in layers) / len(layers))
    rows[form] = vals
    print(json.dumps({"form": form, "cache_bytes": du(os.path.join(out, f"cache-{form}")), **vals}))
print(f"{'form':<9} " + " ".join(f"{k:>24}" for k in ["hidden_mse", "attention_mse", "attention_kl"]))
for form, vals in rows.items():
    cells = []
    for k, v in vals.items():
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        cells.append(f"{statistics.mean(v):>12.5f} ± {sd:<9.5f}")
    print(f"{form:<9} " + " ".join(cells))
ref = rows["maps-f32"]
for form, vals in rows.items():
    if form == "maps-f32":
        continue
    # Same seed, other form: the paired difference, against the spread over seeds.
    for k in vals:
        d = [a - b for a, b in zip(vals[k], ref[k])]
        sd = statistics.stdev(ref[k]) if len(ref[k]) > 1 else float("nan")
        print(f"{form} - maps-f32 {k}: paired mean {statistics.mean(d):+.5f} (max |d| "
              f"{max(abs(x) for x in d):.5f}) vs seed spread {sd:.5f}")
PY
