#!/usr/bin/env bash
# Runs the kd model benchmark and, when torch is importable, the PyTorch baseline in the same
# run, then prints kd/torch throughput ratios. Usage: benches/run.sh [--configs minilm,bert-base]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
out=$(mktemp -d)
cargo bench --bench bert -- "$@" | tee "$out/kd.jsonl"
if python3 -c "import torch, transformers" 2>/dev/null; then
  python3 benches/torch_bert.py "$@" | tee "$out/torch.jsonl"
  python3 - "$out/kd.jsonl" "$out/torch.jsonl" <<'PY'
import json, sys
rows = {}
for path in sys.argv[1:]:
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            rows[(r["impl"], r["config"], r["what"])] = r["tokens_per_s"]
print(f"{'config':<10} {'what':<11} {'kd tok/s':>9} {'torch tok/s':>11} {'kd/torch':>8}")
for (impl, cfg, what), v in sorted(rows.items()):
    if impl != "kd":
        continue
    t = rows.get(("torch", cfg, what))
    ratio = f"{v / t:.2f}x" if t else "-"
    print(f"{cfg:<10} {what:<11} {v:>9.0f} {t or 0:>11.0f} {ratio:>8}")
PY
else
  echo "torch not installed: kd numbers only"
fi
