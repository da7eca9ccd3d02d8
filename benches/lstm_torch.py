#!/usr/bin/env python3
"""PyTorch baseline for crates/kd-lstm/benches/lstm.rs: torch.nn.LSTM (bidirectional, batch_first)
on packed sequences of the same shape and lengths, and the whole classifier as kd_bilstm.py
rebuilds it, CPU float32.

Prints one JSON object per measurement: {"impl": "torch", "config", "what", "tokens_per_s", "ms",
"cpu_ms"} (the fastest of --iters calls; CPU time of the process, all threads).
"""
import argparse
import json
import os
import time

import sys

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates",
                                "kd-lstm", "tests", "fixtures"))
import kd_bilstm  # noqa: E402  (the PyTorch form of a saved kd BiLSTM)


def timed(fn, iters):
    """The fastest of `iters` calls after one warm-up as (wall, CPU) seconds (as the kd bench)."""
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(max(iters, 1)):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        best = (min(best[0], time.perf_counter() - start), min(best[1], time.process_time() - cpu))
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--hidden", type=int, default=150)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--embed", default="300,384")
    ap.add_argument("--composed", default="1")  # kd's option, read here so both take "$@"
    ap.add_argument("--what", default="forward,train_step,model_forward,model_step")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, h = args.batch, args.hidden
    lengths = torch.tensor([min(30 + (i * 7) % 31, 60) for i in range(b)])
    t = int(lengths.max())
    tokens = int(lengths.sum())
    for e in (int(v) for v in args.embed.split(",")):
        lstm = torch.nn.LSTM(e, h, batch_first=True, bidirectional=True)
        x = torch.rand(b, t, e) * 2 - 1
        probe = torch.rand(b, t, 2 * h) * 2 - 1
        config = f"E{e}-H{h}-B{b}-T30..60"

        def run(inp):
            packed = pack_padded_sequence(inp, lengths, batch_first=True, enforce_sorted=False)
            out, _ = lstm(packed)
            return pad_packed_sequence(out, batch_first=True, total_length=t)[0]

        def forward():
            with torch.no_grad():
                run(x)

        xg = x.clone().requires_grad_(True)

        def step():
            lstm.zero_grad(set_to_none=True)
            xg.grad = None
            (run(xg) * probe).sum().backward()

        model = kd_bilstm.KdBiLstm(dict(vocab_size=30522, embedding_size=e, hidden_size=h,
                                        mlp_hidden_size=200, num_labels=2, siamese=False))
        ids = torch.zeros(b, t, dtype=torch.long)
        for i, n in enumerate(lengths.tolist()):
            ids[i, :n] = torch.randint(1000, 30000, (n,))
        mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
        labels = torch.arange(b) % 2

        def model_forward():
            with torch.no_grad():
                model(ids, mask)

        def model_step():
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(ids, mask), labels).backward()

        for what, fn in (("forward", forward), ("train_step", step),
                         ("model_forward", model_forward), ("model_step", model_step)):
            if what not in args.what.split(","):
                continue
            wall, cpu = timed(fn, args.iters)
            print(json.dumps({"impl": "torch", "config": config, "what": what,
                              "tokens_per_s": round(tokens / wall, 1), "ms": round(wall * 1e3, 3),
                              "cpu_ms": round(cpu * 1e3, 3)}), flush=True)


if __name__ == "__main__":
    main()
