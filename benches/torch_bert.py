#!/usr/bin/env python3
"""PyTorch baseline for benches/bert.rs: the same configs, batch and work, on CPU.

Prints one JSON object per measurement: {"impl": "torch", "config", "what", "tokens_per_s"}.
"""
import argparse
import json
import time

import torch
from transformers import BertConfig, BertForMaskedLM

CONFIGS = {
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072),
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                   intermediate_size=1536),
}


def timed(fn, iters):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="minilm,bert-base")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--len", type=int, default=128)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, l = args.batch, args.len
    for name in args.configs.split(","):
        cfg = BertConfig(vocab_size=30522, max_position_embeddings=512, **CONFIGS[name])
        model = BertForMaskedLM(cfg)
        ids = torch.randint(1000, 30000, (b, l))
        mask = torch.ones(b, l, dtype=torch.long)
        model.eval()

        def forward():
            with torch.no_grad():
                model.bert(input_ids=ids, attention_mask=mask)

        t = timed(forward, args.iters)
        print(json.dumps({"impl": "torch", "config": name, "what": "forward",
                          "tokens_per_s": b * l / t}), flush=True)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        n_mask = max(1, int(0.15 * b * l))
        flat = torch.randperm(b * l)[:n_mask]
        labels = ids.view(-1)[flat]

        def step():
            hidden = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            logits = model.cls(hidden.reshape(b * l, -1)[flat])
            loss = torch.nn.functional.cross_entropy(logits, labels)
            loss.backward()
            opt.step()
            opt.zero_grad()

        t = timed(step, args.iters)
        print(json.dumps({"impl": "torch", "config": name, "what": "train_step",
                          "tokens_per_s": b * l / t}), flush=True)


if __name__ == "__main__":
    main()
