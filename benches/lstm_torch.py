#!/usr/bin/env python3
"""PyTorch baseline for crates/kd-lstm/benches/lstm.rs: torch.nn.LSTM (bidirectional, batch_first)
on packed sequences of the same shape and lengths, CPU float32.

Prints one JSON object per measurement: {"impl": "torch", "config", "what", "tokens_per_s", "ms"}.
"""
import argparse
import json
import os
import time

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def timed(fn, iters):
    fn()  # warm-up
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--hidden", type=int, default=150)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--embed", default="300,384")
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

        for what, fn in (("forward", forward), ("train_step", step)):
            s = timed(fn, args.iters)
            print(json.dumps({"impl": "torch", "config": config, "what": what,
                              "tokens_per_s": round(tokens / s, 1), "ms": round(s * 1e3, 3)}),
                  flush=True)


if __name__ == "__main__":
    main()
