#!/usr/bin/python3
"""Speed baseline: training steps (forward, backward, clipping, AdamW) of the CAR model in
PyTorch (the reference implementation of car_ref.py, float32), on random histories of equal
length. Prints one line: "torch tokens/s X step_ms Y threads Z" (tokens = input tokens per step,
B * (items - 1) * (L + 1) in car mode, B * (items * (L + 1) - 1) in ar mode), so that `make bench`
can compare the C code on the same model, batch and thread count.

    /usr/bin/python3 tests/reference/bench_torch.py --d 64 --layers 2 --heads 2 --levels 3 \\
        --codebook 256 --items 12101 --batch 256 --history 21 --threads 1
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from car_ref import CarModel  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--codebook", type=int, default=256)
    ap.add_argument("--items", type=int, default=12101, help="V, the number of items")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--history", type=int, default=21, help="items per sequence (car: one is only a target)")
    ap.add_argument("--mode", choices=["car", "ar"], default="car")
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    L, C, n = args.levels, args.levels + 1, args.history
    spec = dict(levels=L, codebook=[args.codebook] * L, n_items=args.items, max_chunks=n, d_model=args.d,
                n_layers=args.layers, n_heads=args.heads, dropout=args.dropout, fusion="sum", level_embedding=0,
                tie_uid=0, mode=args.mode, alpha=1.0)
    model = CarModel(spec).float()
    with torch.no_grad():
        for _, p in model.named_c_tensors():
            if p.dim() == 2:
                p.normal_(0, 0.02)
    codes = torch.randint(0, args.codebook, (args.items, L))
    seqs = torch.randint(0, args.items, (args.batch, n))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    # Token ids and targets of the batch, vectorised (car_ref's per-token lists are for small tests).
    T = (n - 1) * C if args.mode == "car" else n * C - 1
    full = torch.cat([codes[seqs], seqs.unsqueeze(-1)], dim=2).reshape(args.batch, n * C)  # (B, n*C)
    tok, valid = full[:, :T], torch.ones(args.batch, T, dtype=torch.bool)
    ce = torch.nn.functional.cross_entropy

    def loss_fn():
        h = model.hidden(tok, valid)
        if args.mode == "car":
            hu = h[:, L::C].reshape(-1, args.d)  # UID positions of chunks 0..n-2
            nxt = full.view(args.batch, n, C)[:, 1:].reshape(-1, C)
            act = ce(model.head_logits(hu, L), nxt[:, L])
            think = sum(ce(model.head_logits(hu, k), nxt[:, k]) for k in range(L)) / max(L, 1)
            return act + think
        total, count = 0.0, 0
        tgt = full[:, 1:T + 1]
        for k in range(C):
            sel = (torch.arange(1, T + 1) % C) == k
            z = model.head_logits(h[:, sel].reshape(-1, args.d), k)
            total = total + ce(z, tgt[:, sel].reshape(-1), reduction="sum")
            count += z.shape[0]
        return total / count

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()  # warm-up
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    best = min(times)
    print(f"torch tokens/s {args.batch * T / best:.0f} step_ms {1e3 * best:.1f} threads {args.threads}")


if __name__ == "__main__":
    main()
