#!/usr/bin/python3
"""Speed baseline: training steps (forward, backward, clipping, AdamW) of the CAR model written as
fast as we can in PyTorch, float32, for comparison with bench_train (bench/bench_train.c) on the
same model, batch and thread count. Prints one line:

    torch tokens/s X step_ms Y threads Z ...

with the median step over --steps timed steps (after one warm-up step) and tokens = input tokens
per step, sum over the sequences of (n_b - 1) * (L + 1) in car mode and n_b * (L + 1) - 1 in ar
mode (B * (items - 1) * (L + 1) in car mode with --lengths max).

    /usr/bin/python3 tests/reference/bench_torch.py --d 64 --layers 2 --heads 2 --levels 3 \\
        --codebook 256 --items 12101 --batch 256 --history 21 --threads 1 [--lengths beauty]

The model is car_ref.py's (see its docstring and DESIGN.md section 1) with fusion "sum", no
level embedding and an untied UID head, written for speed instead of clarity (car_ref.py stays
the per-token reference for the gradient checks; --check compares the two):
  * the sequences of a batch are sorted by length and packed without padding: everything but
    attention runs on the (N, d) token rows, attention runs once per distinct length on a
    (sequences, heads, T, T) batch (one group with --lengths max, i.e. a plain padded batch);
  * one embedding table for all SID levels and the UIDs (one gather, one scatter-add backward),
    fusion as a cumulative sum over each chunk's C = L + 1 rows, learned positions;
  * attention: F.scaled_dot_product_attention(is_causal) where it exists (torch >= 2.0); in
    torch 1.13 scaled scores plus causal mask in one baddbmm, softmax, bmm (its private
    _scaled_dot_product_attention is the same computation and measured no faster);
  * think heads: one (L K x d) matrix, one matmul and one cross-entropy for all levels (car);
  * UID head: fused linear + cross-entropy by blocks of rows (LinearCrossEntropy below): the
    (positions x V) logits never exist at once, the gradients are computed with the loss
    (matmul + F.cross_entropy over all items at once: 4.1 s instead of 0.36 s of CPU for the
    UID head's forward and backward, most of it faulting in and traversing 250 MB of logits);
  * dropout masks from rand_like (see dropout()), GELU, LayerNorm and AdamW stock;
  * malloc tuned so that activations stop being mapped and faulted in again at every step
    (setup_runtime()).
torch.jit is left out: this build has no CPU fuser (LLVM off), and all the Python and dispatch
overhead it could remove is ~2 ms of the step (measured on a tiny model).
--check compares loss and gradients with car_ref.CarModel on a tiny model and prints ok / FAIL.
"""
import argparse
import ctypes
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
SDPA = getattr(F, "scaled_dot_product_attention", None)  # public from torch 2.0
BEAUTY = os.path.join(HERE, "..", "..", "..", "shared", "data", "amazon", "beauty", "sequences.txt")


class LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(h_i W^T, y_i) for h (n, d), W (V, d), by blocks of `block` rows. Each block's
    logits (block, V) become softmax - onehot in place and give that block's dh and its share of
    dW at once, so only one block of logits is ever in memory and no softmax is saved for the
    backward, which just scales the stored gradients."""

    @staticmethod
    def forward(ctx, h, w, y, block):
        loss = h.new_zeros(())
        dh, dw = torch.empty_like(h), torch.zeros_like(w)
        for i in range(0, h.shape[0], block):
            hb, yb = h[i:i + block], y[i:i + block]
            p = torch.log_softmax(hb @ w.t(), dim=1)
            rows = torch.arange(hb.shape[0])
            loss -= p[rows, yb].sum()
            p.exp_()
            p[rows, yb] -= 1  # softmax - onehot = d CE / d logits
            torch.mm(p, w, out=dh[i:i + block])
            dw.addmm_(p.t(), hb)
        ctx.save_for_backward(dh, dw)
        return loss

    @staticmethod
    def backward(ctx, g):
        dh, dw = ctx.saved_tensors
        return dh * g, dw * g, None, None


def causal_attention(qkv, groups, masks, n_heads):
    """qkv (N, 3d) of the packed rows -> (N, d). groups: (first row, sequences, T) of each run of
    sequences of equal length T; masks[T]: (T, T) additive causal mask (0 / -inf)."""
    d = qkv.shape[1] // 3
    hs = d // n_heads
    out = []
    for r0, nb, T in groups:
        q, k, v = qkv[r0:r0 + nb * T].view(nb, T, 3, n_heads, hs).permute(2, 0, 3, 1, 4).unbind(0)
        if SDPA is not None:  # torch >= 2.0: fused kernels
            y = SDPA(q, k, v, is_causal=True)
        else:  # torch 1.13: scaled scores and mask in one baddbmm (as fast as its private SDPA, measured)
            q, k, v = (z.reshape(nb * n_heads, T, hs) for z in (q, k, v))
            att = torch.baddbmm(masks[T], q, k.transpose(1, 2), alpha=1 / math.sqrt(hs)).softmax(dim=-1)
            y = (att @ v).view(nb, n_heads, T, hs)
        out.append(y.transpose(1, 2).reshape(nb * T, d))
    return out[0] if len(out) == 1 else torch.cat(out)


def dropout(x, p, training):
    """Inverted dropout, its mask drawn by rand_like: F.dropout's bernoulli_ is the slower one in
    torch 1.13 on CPU (measured on 20480 x 64: 11.4 vs 4.9 ms)."""
    if not training or p == 0:
        return x
    return x * torch.rand_like(x).ge_(p).div_(1 - p)


class Block(nn.Module):
    """GPT-2 block on packed rows: pre-LN, causal MHA, GELU(tanh) MLP 4d, residual dropout."""

    def __init__(self, d, n_heads, p_drop):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.mproj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.p = p_drop

    def forward(self, x, groups, masks):
        a = causal_attention(self.qkv(self.ln1(x)), groups, masks, self.n_heads)
        x = x + dropout(self.proj(a), self.p, self.training)
        return x + dropout(self.mproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh")), self.p, self.training)


class CarFast(nn.Module):
    """The CAR chunk Transformer on packed batches (see the module docstring). Every SID level
    has K codes. emb: rows [l K, (l+1) K) are E_l, rows [L K, L K + V) are E_u."""

    def __init__(self, d, n_layers, n_heads, L, K, V, max_chunks, p_drop, mode, alpha, ce_block):
        super().__init__()
        self.d, self.L, self.K, self.V, self.C = d, L, K, V, L + 1
        self.mode, self.alpha, self.ce_block = mode, alpha, ce_block
        self.emb = nn.Parameter(torch.empty(L * K + V, d))
        self.pos_emb = nn.Parameter(torch.empty(max_chunks * self.C, d))
        self.p = p_drop
        self.blocks = nn.ModuleList([Block(d, n_heads, p_drop) for _ in range(n_layers)])
        self.lnf = nn.LayerNorm(d)
        self.think = nn.Parameter(torch.empty(L, K, d))
        self.uid_head = nn.Parameter(torch.empty(V, d))
        with torch.no_grad():  # GPT-2 initialisation, as the C model's
            for p in (self.emb, self.pos_emb, self.think, self.uid_head):
                p.normal_(0, 0.02)
            for b in self.blocks:
                for lin in (b.qkv, b.proj, b.fc, b.mproj):
                    lin.weight.normal_(0, 0.02)
                    lin.bias.zero_()
                for lin in (b.proj, b.mproj):
                    lin.weight.mul_(1 / math.sqrt(2 * n_layers))

    def named_c_tensors(self, grad=False):
        """(name, tensor) pairs in car_ref.CarModel's names and layouts: views of the parameters
        (to copy its weights over) or, with grad, of their gradients."""
        L, K = self.L, self.K
        t = (lambda p: p.grad) if grad else (lambda p: p)
        out = [(f"sid_emb.{l}", t(self.emb)[l * K:(l + 1) * K]) for l in range(L)] + [("pos_emb", t(self.pos_emb))]
        for i, b in enumerate(self.blocks):
            out += [(f"h.{i}.{name}", t(p)) for name, p in [
                ("ln1.w", b.ln1.weight), ("ln1.b", b.ln1.bias), ("attn.qkv.w", b.qkv.weight),
                ("attn.qkv.b", b.qkv.bias), ("attn.proj.w", b.proj.weight), ("attn.proj.b", b.proj.bias),
                ("ln2.w", b.ln2.weight), ("ln2.b", b.ln2.bias), ("mlp.fc.w", b.fc.weight), ("mlp.fc.b", b.fc.bias),
                ("mlp.proj.w", b.mproj.weight), ("mlp.proj.b", b.mproj.bias)]]
        out += [("lnf.w", t(self.lnf.weight)), ("lnf.b", t(self.lnf.bias))]
        out += [(f"think_head.{l}", t(self.think)[l]) for l in range(L)]
        return out + [("uid_emb", t(self.emb)[L * K:]), ("uid_head", t(self.uid_head))]

    def optimizer(self, lr, weight_decay):
        """AdamW, weight decay on the matrices of the blocks and the heads (as the C model)."""
        matrices = [self.think, self.uid_head]
        matrices += [lin.weight for b in self.blocks for lin in (b.qkv, b.proj, b.fc, b.mproj)]
        ids = {id(p) for p in matrices}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return torch.optim.AdamW([{"params": matrices, "weight_decay": weight_decay},
                                  {"params": rest, "weight_decay": 0.0}], lr=lr)

    def batch(self, codes, lens, items):
        """Index tensors of a packed batch. lens (B,) items per sequence, sorted in decreasing
        order; items (sum lens,) their item ids, sequence after sequence."""
        K, C, car = self.K, self.C, self.mode == "car"
        B = lens.shape[0]
        seq = torch.repeat_interleave(torch.arange(B), lens)         # sequence of each item
        start = torch.cumsum(lens, 0) - lens
        j = torch.arange(items.shape[0]) - start[seq]                # item index inside its sequence
        last = j == lens[seq] - 1
        chunk_items = items[~last] if car else items                  # items whose chunks are input
        raw = torch.cat([codes[chunk_items], chunk_items.unsqueeze(1)], dim=1)  # (chunks, C) token ids
        tok = (raw + torch.arange(C) * K).reshape(-1)                 # rows of self.emb
        pos = ((j[~last] if car else j).unsqueeze(1) * C + torch.arange(C)).reshape(-1)
        T = (lens - 1) * C if car else lens * C - 1                   # input tokens per sequence
        b = {"tok": tok, "tokens": int(T.sum())}
        if car:  # the UID row of chunk j predicts chunk j + 1
            nxt = items[j > 0]
            b["y_think"], b["y_uid"] = codes[nxt].reshape(-1), nxt
        else:  # every row but the last of each sequence is input and predicts the next token
            keep = torch.ones(tok.shape[0], dtype=torch.bool)
            keep[torch.cumsum(lens * C, 0) - 1] = False
            b["keep"] = keep.nonzero().squeeze(1)
            pos, nxt_raw = pos[b["keep"]], raw.reshape(-1)[b["keep"] + 1]
            nxt_level = (pos + 1) % C
            b["rows"] = [(nxt_level == k).nonzero().squeeze(1) for k in range(C)]
            b["y"] = [nxt_raw[r] for r in b["rows"]]
        b["pos"] = pos
        b["groups"], r0 = [], 0
        for t in T.unique(sorted=True).flip(0).tolist():
            nb = int((T == t).sum())
            b["groups"].append((r0, nb, t))
            r0 += nb * t
        b["masks"] = {t: torch.full((t, t), float("-inf")).triu(1) for _, _, t in b["groups"]}
        return b

    def forward(self, b):
        """(loss, act, think) means of the batch b (see batch())."""
        L, C, d = self.L, self.C, self.d
        x = self.emb[b["tok"]]  # indexing: the fastest gather + scatter-add backward in torch 1.13
        x = x.view(-1, C, d).cumsum(dim=1).view(-1, d)  # progressive fusion inside each chunk
        if self.mode == "ar":
            x = x[b["keep"]]
        x = dropout(x + self.pos_emb[b["pos"]], self.p, self.training)
        for blk in self.blocks:
            x = blk(x, b["groups"], b["masks"])
        h = self.lnf(x)
        if self.mode == "car":
            hu = h.view(-1, C, d)[:, L]  # UID rows: every chunk's last row
            n = hu.shape[0]
            act = LinearCrossEntropy.apply(hu, self.uid_head, b["y_uid"], self.ce_block) / n
            # logits (n, L K) seen as (n L, K): the mean over its rows is the mean of (1/L) sum_l CE_l
            think = F.cross_entropy((hu @ self.think.view(-1, d).t()).view(-1, self.K), b["y_think"]) if L else act * 0
            return act + self.alpha * think, act, think
        sums = [F.cross_entropy(h[b["rows"][k]] @ self.think[k].t(), b["y"][k], reduction="sum") for k in range(L)]
        act_sum = LinearCrossEntropy.apply(h[b["rows"][L]], self.uid_head, b["y"][L], self.ce_block)
        counts = [r.shape[0] for r in b["rows"]]
        think = sum(sums) / sum(counts[:L]) if L else act_sum * 0
        return (sum(sums) + act_sum) / sum(counts), act_sum / counts[L], think


def beauty_lengths(path, n, B, gen):
    """B lengths drawn from the users of sequences.txt, each truncated to n items."""
    with open(path) as f:
        lens = torch.tensor([min(len(line.split()) - 1, n) for line in f if len(line.split()) > 2])
    return lens[torch.randint(0, lens.shape[0], (B,), generator=gen)]


def setup_runtime(threads):
    """Threads, and glibc malloc kept from returning memory to the system: torch's CPU allocator
    is plain malloc, and by default every activation of tens of MB is a fresh mmap whose pages
    fault in again at each step (measured: ~60k page faults and a quarter of the step)."""
    torch.set_num_threads(threads)
    # torch's matrix products go to OpenBLAS here (Debian's build), whose thread count
    # torch.set_num_threads does not set
    try:
        ctypes.CDLL("libopenblas.so.0").openblas_set_num_threads(threads)
    except OSError:
        pass
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # glibc
    if mallopt:
        mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks below 32 MiB (its maximum) from the heap
        mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD (an int): never shrink the heap


def check():
    """Loss and gradients of CarFast against car_ref.CarModel, same weights and batch, car and
    ar, dropout 0, sequences of different lengths. Returns True when they agree."""
    sys.path.insert(0, HERE)
    from car_ref import CarModel
    torch.manual_seed(1)
    d, layers, heads, L, K, V, n = 8, 2, 2, 3, 5, 30, 4
    codes = torch.randint(0, K, (V, L))
    seqs = [[3, 17, 4, 22], [11, 29, 0], [5, 5]]  # sorted by decreasing length, as batch() wants
    ok = True
    for mode in ("car", "ar"):
        ref = CarModel(dict(levels=L, codebook=[K] * L, n_items=V, max_chunks=n, d_model=d, n_layers=layers,
                            n_heads=heads, dropout=0.0, fusion="sum", level_embedding=0, tie_uid=0, mode=mode,
                            alpha=0.6)).double()
        fast = CarFast(d, layers, heads, L, K, V, n, 0.0, mode, 0.6, ce_block=2)  # several UID blocks
        with torch.no_grad():
            for _, p in ref.named_c_tensors():
                p.normal_(0, 0.5)
            theirs = dict(ref.named_c_tensors())
            for name, p in fast.named_c_tensors():
                p.copy_(theirs[name])
        want = ref.loss(codes, seqs)[:3]
        torch.stack(want).sum().backward()
        b = fast.batch(codes, torch.tensor([len(q) for q in seqs]), torch.tensor([i for q in seqs for i in q]))
        got = fast(b)
        torch.stack(got).sum().backward()
        fast_grads = dict(fast.named_c_tensors(grad=True))
        worst = max(abs(float(g) - float(w)) / abs(float(w)) for g, w in zip(got, want))
        gworst = max(float((fast_grads[nm] - p.grad).abs().max() / p.grad.abs().max())
                     for nm, p in ref.named_c_tensors())
        good = worst < 1e-5 and gworst < 1e-4
        ok &= good
        print(f"check {mode}: loss {float(got[0]):.6f} vs car_ref {float(want[0]):.6f}, max relative error "
              f"loss/act/think {worst:.1e}, gradients {gworst:.1e}: {'ok' if good else 'FAIL'}")
    return ok


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
    ap.add_argument("--lengths", choices=["max", "beauty"], default="max",
                    help="max: every sequence has --history items; beauty: lengths drawn from --sequences")
    ap.add_argument("--sequences", default=BEAUTY, help="sequences.txt for --lengths beauty")
    ap.add_argument("--ce-block", type=int, default=0,
                    help="rows per block of the UID cross-entropy (0: blocks of logits of about 24 MiB, "
                         "512 rows for V = 12101: the fastest measured, and below malloc's 32 MiB mmap threshold)")
    ap.add_argument("--check", action="store_true", help="compare with car_ref.py on a tiny model and exit")
    args = ap.parse_args()
    setup_runtime(args.threads)
    if args.check:
        ok = check()
        print("ok" if ok else "FAIL")
        sys.exit(0 if ok else 1)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    L, n, B, V = args.levels, args.history, args.batch, args.items
    ce_block = args.ce_block or max(1, (24 << 20) // (4 * V))
    model = CarFast(args.d, args.layers, args.heads, L, args.codebook, V, n, args.dropout, args.mode, 1.0, ce_block)
    opt = model.optimizer(lr=1e-3, weight_decay=0.01)
    codes = torch.randint(0, args.codebook, (V, L), generator=gen)
    if args.lengths == "max":
        lens = torch.full((B,), n)
    elif os.path.exists(args.sequences):
        lens = beauty_lengths(args.sequences, n, B, gen).sort(descending=True).values
    else:
        sys.exit(f"bench_torch: {args.sequences} not found (--lengths beauty)")
    items = torch.randint(0, V, (int(lens.sum()),), generator=gen)

    def step():
        opt.zero_grad(set_to_none=True)
        b = model.batch(codes, lens, items)
        model(b)[0].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return b["tokens"]

    step()  # warm-up
    times, cpu = [], []
    for _ in range(args.steps):
        t, c = time.perf_counter(), time.process_time()
        tokens = step()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    med, cpu_med = sorted(times)[len(times) // 2], sorted(cpu)[len(cpu) // 2]
    # cpu_ms: CPU time of this process per step (all threads), the steadier figure on a busy machine
    print(f"torch tokens/s {tokens / med:.0f} step_ms {1e3 * med:.1f} threads {args.threads} | "
          f"cpu_ms {1e3 * cpu_med:.1f} {args.mode} lengths={args.lengths} tokens/step={tokens} "
          f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
