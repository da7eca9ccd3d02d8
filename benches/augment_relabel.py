"""Share of augmented copies that the teacher labels differently from their original.

A sanity figure for a transfer set: reads the transfer set (`kd augment` JSONL: text, label,
source_id, method) and the logits cache the teacher wrote over it (`kd precompute --targets
logits`, Parquet shards), and prints, per augmentation method, how many copies the teacher
assigns another class than it assigns the original, and how many it assigns another class
than the original's gold label. Prints a few copies of each kind as examples.

    python3 benches/augment_relabel.py runs/sentiment/transfer.jsonl runs/sentiment/cache-transfer

Needs pyarrow (pip install pyarrow).
"""

import glob
import json
import os
import sys
from collections import defaultdict

import pyarrow.parquet as pq


def main(transfer, cache, examples=3):
    rows = [json.loads(line) for line in open(transfer, encoding="utf-8") if line.strip()]
    teacher = {}
    for shard in sorted(glob.glob(os.path.join(cache, "shard-*.parquet"))):
        table = pq.read_table(shard, columns=["seq_id", "logits"]).to_pydict()
        for i, z in zip(table["seq_id"], table["logits"]):
            teacher[i] = max(range(len(z)), key=z.__getitem__)
    if len(teacher) != len(rows):
        sys.exit(f"{cache} holds {len(teacher)} records, {transfer} {len(rows)} rows")
    original = {r["source_id"]: i for i, r in enumerate(rows) if r["method"] == "original"}
    counts = defaultdict(lambda: [0, 0, 0])
    shown = defaultdict(list)
    for i, r in enumerate(rows):
        if r["method"] == "original":
            continue
        o = original[r["source_id"]]
        c = counts[r["method"]]
        c[0] += 1
        flipped = teacher[i] != teacher[o]
        c[1] += flipped
        c[2] += teacher[i] != rows[o]["label"]
        kind = "relabelled" if flipped else "kept"
        if len(shown[(r["method"], kind)]) < examples:
            shown[(r["method"], kind)].append((rows[o]["text"], r["text"], teacher[o], teacher[i]))
    agree = sum(teacher[i] == rows[i]["label"] for i in original.values()) / len(original)
    print(f"originals: {len(original)}, teacher agrees with the gold label on {agree:.1%}")
    for method, (n, flipped, off_gold) in sorted(counts.items()):
        print(
            f"{method}: {n} copies; the teacher labels {flipped} ({flipped / n:.1%}) differently "
            f"from their original, {off_gold} ({off_gold / n:.1%}) differently from its gold label"
        )
    for (method, kind), items in sorted(shown.items()):
        print(f"\n{method}, {kind} by the teacher:")
        for src, copy, a, b in items:
            print(f"  original [{a}]: {src}\n  copy     [{b}]: {copy}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
