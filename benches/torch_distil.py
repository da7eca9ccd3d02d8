#!/usr/bin/env python3
"""PyTorch baseline for benches/train.sh: one online DistilBERT step (teacher forward without
grad, student forward + backward + AdamW; soft targets at T = 2 over the full vocabulary at the
masked positions, MLM CE, cosine on the last hidden state) for a MiniLM-sized teacher
(6 x 384, 12 heads) and a 3-layer student of the same width, batch 32 x 110 tokens, on the CPU
(default) or a GPU (`--device cuda`).

Prints one JSON object: {"impl": "torch", "what": "distil_online_step", "tokens_per_s": ...}.
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = dict(vocab_size=30522, hidden_size=384, num_attention_heads=12,
                intermediate_size=1536, max_position_embeddings=512)
    dev = torch.device(args.device)
    teacher = BertForMaskedLM(BertConfig(num_hidden_layers=6, **base)).eval().to(dev)
    student = BertForMaskedLM(BertConfig(num_hidden_layers=3, **base)).train().to(dev)
    opt = torch.optim.AdamW(student.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
    b, l, t = 32, 110, 2.0
    ids = torch.randint(1000, 30000, (b, l), device=dev)
    mask = torch.ones(b, l, dtype=torch.long, device=dev)
    flat = torch.randperm(b * l, device=dev)[: int(0.15 * b * l)]
    labels = ids.view(-1)[flat]

    def step():
        with torch.no_grad():
            t_out = teacher.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            t_logits = teacher.cls(t_out.reshape(b * l, -1)[flat])
        s_out = student.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        s_logits = student.cls(s_out.reshape(b * l, -1)[flat])
        ce = F.kl_div(F.log_softmax(s_logits / t, -1), F.softmax(t_logits / t, -1),
                      reduction="batchmean") * t * t
        mlm = F.cross_entropy(s_logits, labels)
        cos = F.cosine_embedding_loss(s_out.reshape(b * l, -1), t_out.reshape(b * l, -1),
                                      torch.ones(b * l, device=dev))
        (5 * ce + 2 * mlm + cos).backward()
        opt.step()
        opt.zero_grad()

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    step()
    sync()
    start = time.perf_counter()
    for _ in range(args.iters):
        step()
    sync()
    tps = b * l * args.iters / (time.perf_counter() - start)
    print(json.dumps({"impl": "torch", "what": "distil_online_step", "device": args.device,
                      "tokens_per_s": tps}))


if __name__ == "__main__":
    main()
