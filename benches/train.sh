#!/usr/bin/env bash
# Student training from the cache vs online (teacher in process) in the same run: training
# tokens/s and their ratio, and peak RSS of each; plus peak RSS when the cache holds 1x and 4x
# the masked views (memory must stay flat in cache size); with torch installed, both against
# the PyTorch online DistilBERT step (benches/torch_distil.py) in the same run.
#
#   benches/train.sh TEACHER_DIR [STEPS]      (TEACHER_DIR: a BertForMaskedLM directory, e.g.
#                                             runs/quickstart/teacher/model)
set -euo pipefail
cd "$(dirname "$0")/.."
teacher=${1:?usage: benches/train.sh TEACHER_DIR [STEPS]}
steps=${2:-20}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" KD_NO_PROGRESS=1
cargo build --release --bin kd >/dev/null
kd="$CARGO_TARGET_DIR/release/kd"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for views in 1 4; do
  "$kd" precompute --teacher "$teacher" --corpus assets/sotu --heldout-docs 12 --split train \
    --max-sequences 1024 --epochs "$views" --targets mlm-topk:k=32,t=1,2,hidden:last \
    --out "$out/cache-$views" >/dev/null
done
run() { # name cache extra...
  local name=$1 cache=$2; shift 2
  /usr/bin/time -f "%M" -o "$out/$name.rss" "$kd" train --cache "$cache" --out "$out/$name" \
    --teacher "$teacher" --layers 0,2,4 --max-steps "$steps" --batch-size 32 "$@" > "$out/$name.json"
  python3 - "$name" "$out/$name.json" "$out/$name.rss" <<'PY'
import json, sys
name, report, rss = sys.argv[1:]
r = json.load(open(report))
print(json.dumps({"run": name, "tokens_per_s": r["tokens_per_s"],
                  "peak_rss_mib": int(open(rss).read().split()[-1]) / 1024}))
PY
}
# Cache and online runs alternate, twice each, so that drift of the machine's speed hits both.
run cache "$out/cache-1" | tee "$out/cache.line"
run online "$out/cache-1" --online "$teacher" | tee "$out/online.line"
run cache_b "$out/cache-1" | tee "$out/cache_b.line"
run online_b "$out/cache-1" --online "$teacher" | tee "$out/online_b.line"
run cache4x "$out/cache-4" | tee "$out/cache4x.line"
python3 - "$out" <<'PY'
import json, sys, os
d = sys.argv[1]
names = ["cache", "online", "cache_b", "online_b", "cache4x"]
r = {n: json.loads(open(os.path.join(d, n + ".line")).read()) for n in names}
tps = lambda *ns: sum(r[n]["tokens_per_s"] for n in ns) / len(ns)
pairs = [r[c]["tokens_per_s"] / r[o]["tokens_per_s"] for c, o in [("cache", "online"), ("cache_b", "online_b")]]
print(f"cache / online training speed: {tps('cache', 'cache_b') / tps('online', 'online_b'):.2f}x "
      f"(pairs {pairs[0]:.2f}x, {pairs[1]:.2f}x)")
print(f"peak RSS cache / online: {r['cache']['peak_rss_mib']:.0f} / {r['online']['peak_rss_mib']:.0f} MiB")
print(f"peak RSS 4x / 1x cache: {r['cache4x']['peak_rss_mib'] / r['cache']['peak_rss_mib']:.3f}")
PY
if python3 -c "import torch, transformers" 2>/dev/null; then
  torch_tps=$(python3 benches/torch_distil.py | python3 -c "import json,sys; print(json.load(sys.stdin)['tokens_per_s'])")
  python3 - "$out" "$torch_tps" <<'PY'
import json, os, sys
d, t = sys.argv[1], float(sys.argv[2])
for n in ["cache", "online"]:
    r = json.loads(open(os.path.join(d, n + ".line")).read())
    print(f"kd {n} / torch online DistilBERT step: {r['tokens_per_s'] / t:.2f}x ({t:.0f} tok/s in torch)")
PY
else
  echo "torch not installed: no PyTorch baseline"
fi
