#!/usr/bin/env bash
# TinyBERT general distillation: the student step from the cache vs `--online` (teacher in
# process), in the same run, for two teachers:
#   minilm     all-MiniLM-L6-v2 (6 x 384) -> pipelines/students/minilm-3x192.json, g(m) = 2m
#   bert-base  a teacher of bert-base shape (12 x 768, FFN 3072, 12 heads, random weights: speed
#              does not depend on them) -> pipelines/students/tinybert-4.json, g(m) = 3m
# Reports training tokens/s of each run, the cache / online ratio and the peak RSS of each.
# Cache and online runs alternate, twice each, so drift of the machine's speed hits both.
#
#   benches/tinybert.sh [STEPS] [ATTENTION_FORM]     (defaults: 12 steps, attention-qk@int8;
#                                                     ATTENTION_FORM: attention or attention-qk,
#                                                     with an optional @precision)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-12}
form=${2:-attention-qk@int8}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" KD_NO_PROGRESS=1
cargo build --release --bin kd >/dev/null
kd="$CARGO_TARGET_DIR/release/kd"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# A bert-base-shaped BertModel with random weights in [-1/32, 1/32] (random mantissas, random
# signs), MiniLM's tokenizer; written by plain python (no numpy needed).
python3 - "$out/bert-base" assets/minilm <<'PY'
import json, os, shutil, struct, sys
out, tok = sys.argv[1:]
os.makedirs(out)
H, F, L, V, P = 768, 3072, 12, 30522, 512
cfg = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": H, "intermediate_size": F,
       "num_hidden_layers": L, "num_attention_heads": 12, "vocab_size": V, "max_position_embeddings": P,
       "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
       "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "pad_token_id": 0}
json.dump(cfg, open(os.path.join(out, "config.json"), "w"))
for f in ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]:
    shutil.copy(os.path.join(tok, f), out)
shapes = {"embeddings.word_embeddings.weight": [V, H], "embeddings.position_embeddings.weight": [P, H],
          "embeddings.token_type_embeddings.weight": [2, H],
          "embeddings.LayerNorm.weight": [H], "embeddings.LayerNorm.bias": [H]}
for i in range(L):
    p = f"encoder.layer.{i}."
    for n in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]:
        shapes[p + n + ".weight"], shapes[p + n + ".bias"] = [H, H], [H]
    shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = [F, H], [F]
    shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = [H, F], [H]
    for n in ["attention.output.LayerNorm", "output.LayerNorm"]:
        shapes[p + n + ".weight"], shapes[p + n + ".bias"] = [H], [H]
header, offset = {}, 0
for name, shape in shapes.items():
    n = 1
    for d in shape:
        n *= d
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * n]}
    offset += 4 * n
head = json.dumps(header).encode()
head += b" " * (-len(head) % 8)
sign = bytes(0x3C if i < 128 else 0xBC for i in range(256))  # exponent 2^-7..2^-6, random sign
with open(os.path.join(out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(head)) + head)
    for name, shape in shapes.items():
        n = header[name]["data_offsets"][1] // 4 - header[name]["data_offsets"][0] // 4
        if name.endswith("LayerNorm.weight"):
            f.write(struct.pack("<f", 1.0) * n)
        elif name.endswith("bias") or name.endswith("LayerNorm.bias"):
            f.write(b"\0" * (4 * n))
        else:
            b = bytearray(os.urandom(4 * n))
            b[3::4] = os.urandom(n).translate(sign)
            f.write(b)
PY

bench() { # name teacher student hidden_layers attention_layers
  local name=$1 teacher=$2 student=$3 hidden=$4 attn=$5
  local kind=${form%%@*} prec=""
  [[ $form == *@* ]] && prec="@${form#*@}"
  "$kd" precompute --teacher "$teacher" --corpus assets/sotu --heldout-docs 12 --split train \
    --max-sequences 512 --targets "hidden:$hidden@f16,$kind:$attn$prec" \
    --out "$out/$name-cache" >/dev/null
  cat > "$out/$name.toml" <<'TOML'
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
TOML
  for run in cache online cache_b online_b; do
    local extra=()
    [[ $run == online* ]] && extra=(--online "$teacher")
    /usr/bin/time -f "%M" -o "$out/$name-$run.rss" "$kd" train --cache "$out/$name-cache" \
      --out "$out/$name-$run" --student-config "$student" --tokenizer-from "$teacher" \
      --config "$out/$name.toml" --max-steps "$steps" --batch-size 32 "${extra[@]}" \
      > "$out/$name-$run.json"
  done
  python3 - "$out" "$name" <<'PY'
import json, os, sys
d, name = sys.argv[1:]
r = {}
for run in ["cache", "online", "cache_b", "online_b"]:
    rep = json.load(open(os.path.join(d, f"{name}-{run}.json")))
    rss = int(open(os.path.join(d, f"{name}-{run}.rss")).read().split()[-1]) / 1024
    r[run] = (rep["tokens_per_s"], rss)
    print(json.dumps({"teacher": name, "run": run, "tokens_per_s": rep["tokens_per_s"], "peak_rss_mib": rss}))
cache = (r["cache"][0] + r["cache_b"][0]) / 2
online = (r["online"][0] + r["online_b"][0]) / 2
pairs = [r[c][0] / r[o][0] for c, o in [("cache", "online"), ("cache_b", "online_b")]]
print(f"{name}: cache / online TinyBERT step {cache / online:.2f}x (pairs {pairs[0]:.2f}x, {pairs[1]:.2f}x), "
      f"peak RSS cache / online {max(r['cache'][1], r['cache_b'][1]):.0f} / "
      f"{max(r['online'][1], r['online_b'][1]):.0f} MiB")
PY
}

bench minilm assets/minilm pipelines/students/minilm-3x192.json 0,2,4,6 2,4,6
bench bert-base "$out/bert-base" pipelines/students/tinybert-4.json 0,3,6,9,12 3,6,9,12
