#!/usr/bin/env bash
# The BiLSTM layer at Tang et al.'s shape (batch 50, hidden 150, embedding 300 and 384, lengths
# 30..60): kd's fused recurrence (crates/kd-lstm/benches/lstm.rs) and, when torch is importable,
# torch.nn.LSTM on packed sequences (benches/lstm_torch.py) in the same run; prints kd/torch
# ratios of real tokens per second. Usage: benches/lstm.sh [--iters N] [--embed 300,384]
# (PYTHON=... picks the interpreter that has torch).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
py=${PYTHON:-python3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo bench -p kd-lstm --bench lstm -- "$@" | tee "$out/kd.jsonl"
if "$py" -c "import torch" 2>/dev/null; then
  "$py" benches/lstm_torch.py "$@" | tee "$out/torch.jsonl"
  "$py" - "$out/kd.jsonl" "$out/torch.jsonl" <<'PY'
import json, sys
rows = {}
for path in sys.argv[1:]:
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            rows[(r["impl"], r["config"], r["what"])] = r
print(f"{'config':<20} {'what':<11} {'kd ms':>8} {'torch ms':>9} {'kd/torch':>8}")
for (impl, cfg, what), r in sorted(rows.items()):
    if impl != "kd":
        continue
    t = rows.get(("torch", cfg, what))
    ratio = f"{r['tokens_per_s'] / t['tokens_per_s']:.2f}x" if t else "-"
    print(f"{cfg:<20} {what:<11} {r['ms']:>8.2f} {t['ms'] if t else 0:>9.2f} {ratio:>8}")
PY
else
  echo "torch not installed: kd numbers only"
fi
