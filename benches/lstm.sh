#!/usr/bin/env bash
# The BiLSTM layer at Tang et al.'s shape (batch 50, hidden 150, embedding 300 and 384, lengths
# 30..60): kd's fused recurrence (crates/kd-lstm/benches/lstm.rs) and, when torch is importable,
# torch.nn.LSTM on packed sequences and the whole classifier (benches/lstm_torch.py) in the same
# run; prints how many times faster kd is (torch time / kd time), by wall time and by CPU time,
# each the fastest of --iters calls. On a shared machine compare single-threaded runs by CPU time:
#   RAYON_NUM_THREADS=1 benches/lstm.sh --threads 1
# Usage: benches/lstm.sh [--iters N] [--embed 300,384] [--threads N] [--composed 0]
#                       [--what forward,train_step,model_forward,model_step]
# (PYTHON=... picks the interpreter that has torch; --threads sets torch's threads).
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
print(f"{'impl':<12} {'config':<22} {'what':<14} {'ms':>8} {'torch ms':>9} {'x torch':>8}"
      f" {'cpu ms':>8} {'torch cpu':>9} {'x torch':>8}")
for (impl, cfg, what), r in sorted(rows.items()):
    if impl == "torch":
        continue
    t = rows.get(("torch", cfg, what))
    if not t:
        print(f"{impl:<12} {cfg:<22} {what:<14} {r['ms']:>8.2f}")
        continue
    print(f"{impl:<12} {cfg:<22} {what:<14} {r['ms']:>8.2f} {t['ms']:>9.2f} "
          f"{t['ms'] / r['ms']:>7.2f}x {r['cpu_ms']:>8.2f} {t['cpu_ms']:>9.2f} "
          f"{t['cpu_ms'] / r['cpu_ms']:>7.2f}x")
PY
else
  echo "torch not installed: kd numbers only"
fi
