#!/usr/bin/env python3
"""Checks the results of benches/gpu.sh against thresholds; exits 1 naming each one missed.

    python3 benches/gpu_check.py WORK_DIR/results.jsonl

Thresholds (environment overrides):
  MIN_AGREEMENT (0.99)       the teacher against the GPU's cache, on the CPU and the GPU: top-1
  MAX_KL (0.01)              agreement, KL (nats per position) and hidden cosine: both devices
  MIN_COSINE (0.999)         compute the same teacher
  MAX_ONLINE_LOSS_DIFF (0.05) relative difference of the last logged loss, distilled from the
                             cache vs online on the GPU (the same run up to float rounding)
  MIN_GPU_SPEEDUP (2.0)      training tokens/s on the GPU over this machine's CPU
  MIN_CACHE_SPEEDUP (1.0)    BERT-base student: tokens/s from the cache over online
"""
import json
import os
import sys


def threshold(name, default):
    return float(os.environ.get(name, default))


def main(path):
    lines = [json.loads(l) for l in open(path) if l.strip()]
    failures, checked = [], 0

    def check(ok, what):
        nonlocal checked
        checked += 1
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    parity = [l for l in lines if l.get("check") == "teacher vs GPU cache"]
    check(len(parity) == 2, f"teacher parity measured on 2 devices (found {len(parity)})")
    for p in parity:
        dev = p["device"]
        a, kl, cos = p["agreement"], p["kl"], p["hidden_cosine"]
        check(a is not None and a >= threshold("MIN_AGREEMENT", 0.99),
              f"{dev}: agreement with the GPU cache {a}")
        check(kl is not None and kl <= threshold("MAX_KL", 0.01), f"{dev}: KL to the GPU cache {kl}")
        check(cos is not None and cos >= threshold("MIN_COSINE", 0.999),
              f"{dev}: hidden cosine with the GPU cache {cos}")

    def train(out):
        for l in lines:
            r = l.get("report") or {}
            if l.get("kind") == "train" and str(r.get("model_dir", "")).startswith(out):
                return r
        return None

    cache, online, cpu = (train(f"runs/quickstart/{d}/") for d in ("distilled", "online", "cpu"))
    check(cache is not None and online is not None, "distilled from the cache and online")
    if cache and online:
        diff = abs(online["last_loss"] - cache["last_loss"]) / abs(cache["last_loss"])
        check(diff <= threshold("MAX_ONLINE_LOSS_DIFF", 0.05),
              f"last loss cache {cache['last_loss']:.4f} vs online {online['last_loss']:.4f}"
              f" (relative {diff:.3g})")
    gpu_run = any(p["device"] != "cpu" for p in parity)
    if gpu_run:
        check(cache is not None and cpu is not None, "the same student on the GPU and the CPU")
        if cache and cpu:
            ratio = cache["tokens_per_s"] / cpu["tokens_per_s"]
            check(ratio >= threshold("MIN_GPU_SPEEDUP", 2.0),
                  f"GPU training {ratio:.2f}x the CPU's tokens/s")

    base = {l["bert_base_student"]: l["tokens_per_s"] for l in lines if "bert_base_student" in l}
    check(set(base) == {"cache", "online"}, f"BERT-base student from the cache and online ({sorted(base)})")
    if set(base) == {"cache", "online"}:
        ratio = base["cache"] / base["online"]
        check(ratio >= threshold("MIN_CACHE_SPEEDUP", 1.0),
              f"BERT-base student: cache {ratio:.2f}x online tokens/s")

    print(f"{checked - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
