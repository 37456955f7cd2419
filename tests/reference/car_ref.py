#!/usr/bin/python3
"""Independent PyTorch reference of the CAR chunk Transformer (written for the tests; shares no
code with the C implementation). Run once to (re)generate tests/reference/car_ref.bin:

    /usr/bin/python3 tests/reference/car_ref.py [--out tests/reference/car_ref.bin]

It builds small models, draws weights with its own generator, runs one batch of sequences of
different lengths in float64 (right-padded here, packed in C), and stores the weights, the batch,
the head logits, the losses, every parameter gradient, and the parameters after two AdamW steps
(torch.optim.AdamW with clip_grad_norm_) on that batch. tests/unit/test_model_ref.c compares the
C model against it, so CI needs no torch.

The model (DESIGN.md section 1): item i with SID codes s^1..s^L is the chunk [s^1..s^L, u_i]
(C = L + 1 tokens). Token embeddings E_l (per level) / E_u (UIDs); progressive fusion inside a
chunk (sum: a_k = sum_{m<=k} e_m, mean: that / k, none: e_k); + learned position (+ optional
learned level embedding); dropout; GPT-2 blocks (pre-LN, causal MHA with qkv bias, GELU(tanh)
MLP 4d, residuals); final LN; bias-free heads W_l (K_l x d) and W_u (V x d) (tied: W_u = E_u).
  car: the UID position of chunk j predicts every token of chunk j+1;
       loss = mean over positions of CE_u + alpha * mean_l CE_l.
  ar:  token t predicts token t+1 (its level's head), loss = mean over predicted tokens.
Input of a sequence of n items: car (n-1) chunks, ar the first n*C - 1 tokens.

File format (little-endian): magic b"CARREF01", uint32 count, then per tensor: uint32 name
length, name (utf-8), uint32 ndim, uint32 dims[ndim], float32 data (row-major). Names are
"<record>/<what>": spec.* scalars (levels, codebook (8 slots), n_items, max_chunks, d_model,
n_layers, n_heads, fusion 0 sum / 1 mean / 2 none, level_embedding, tie_uid, mode 0 car / 1 ar,
alpha), codes (V x L), batch.len, batch.items, param/<name>, grad/<name>, loss (mean loss, mean
act CE, mean think CE), logits.<k> (rows that predict level k, k = L the UID, in sequence then
position order), adamw.* (lr, beta1, beta2, eps, weight_decay, grad_clip), grad2/<name> (the
gradient of the second step, at the parameters after the first) and after2/<name>. (The optimizer
check feeds grad/ and grad2/ to the C AdamW: gradients that are zero in exact arithmetic, like
that of the key bias, are float noise in C, and Adam turns any nonzero noise into a step of lr.)
Tensor names and layouts are the C model's: sid_emb.l, pos_emb, level_emb, h.i.ln1.w/b,
h.i.attn.qkv.w/b (3d x d: q | k | v), h.i.attn.proj.w/b, h.i.ln2.w/b, h.i.mlp.fc.w/b,
h.i.mlp.proj.w/b, lnf.w/b, think_head.l, uid_emb, uid_head (absent when tied).
"""
import argparse
import math
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

FUSIONS = {"sum": 0, "mean": 1, "none": 2}
MODES = {"car": 0, "ar": 1}


class Block(nn.Module):
    def __init__(self, d, n_heads, dropout):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.mproj = nn.Linear(4 * d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        B, T, d = x.shape
        hs = d // self.n_heads
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(B, T, self.n_heads, hs).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(hs)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, d)
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.mproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh")))


class CarModel(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.s = s = spec
        L, d = s["levels"], s["d_model"]
        self.C = L + 1
        self.sid_emb = nn.ParameterList([nn.Parameter(torch.zeros(K, d)) for K in s["codebook"]])
        self.uid_emb = nn.Parameter(torch.zeros(s["n_items"], d))
        self.pos_emb = nn.Parameter(torch.zeros(s["max_chunks"] * self.C, d))
        self.level_emb = nn.Parameter(torch.zeros(self.C, d)) if s["level_embedding"] else None
        self.drop = nn.Dropout(s["dropout"])
        self.blocks = nn.ModuleList([Block(d, s["n_heads"], s["dropout"]) for _ in range(s["n_layers"])])
        self.lnf = nn.LayerNorm(d)
        self.think = nn.ModuleList([nn.Linear(d, K, bias=False) for K in s["codebook"]])
        self.uid_out = None if s["tie_uid"] else nn.Linear(d, s["n_items"], bias=False)

    def uid_weight(self):
        return self.uid_emb if self.uid_out is None else self.uid_out.weight

    def named_c_tensors(self):
        """(C name, parameter) pairs, in the C model's names and layouts."""
        out = [(f"sid_emb.{l}", p) for l, p in enumerate(self.sid_emb)] + [("pos_emb", self.pos_emb)]
        if self.level_emb is not None:
            out.append(("level_emb", self.level_emb))
        for i, b in enumerate(self.blocks):
            for name, p in [("ln1.w", b.ln1.weight), ("ln1.b", b.ln1.bias), ("attn.qkv.w", b.qkv.weight),
                            ("attn.qkv.b", b.qkv.bias), ("attn.proj.w", b.proj.weight),
                            ("attn.proj.b", b.proj.bias), ("ln2.w", b.ln2.weight), ("ln2.b", b.ln2.bias),
                            ("mlp.fc.w", b.fc.weight), ("mlp.fc.b", b.fc.bias), ("mlp.proj.w", b.mproj.weight),
                            ("mlp.proj.b", b.mproj.bias)]:
                out.append((f"h.{i}.{name}", p))
        out += [("lnf.w", self.lnf.weight), ("lnf.b", self.lnf.bias)]
        out += [(f"think_head.{l}", h.weight) for l, h in enumerate(self.think)]
        out.append(("uid_emb", self.uid_emb))
        if self.uid_out is not None:
            out.append(("uid_head", self.uid_out.weight))
        return out

    def token(self, codes, item, k):
        return int(codes[item, k]) if k < self.C - 1 else int(item)

    def inputs(self, codes, seqs):
        """Right-padded token ids (B, T), validity mask, and per head k the (b, t, target) list."""
        C, L, car = self.C, self.C - 1, self.s["mode"] == "car"
        lens = [(len(q) - 1) * C if car else len(q) * C - 1 for q in seqs]
        T = max(lens)
        tok = torch.zeros(len(seqs), T, dtype=torch.long)
        valid = torch.zeros(len(seqs), T, dtype=torch.bool)
        targets = [[] for _ in range(C)]
        for b, q in enumerate(seqs):
            for t in range(lens[b]):
                tok[b, t] = self.token(codes, q[t // C], t % C)
                valid[b, t] = True
                if car and t % C == L:
                    for k in range(C):
                        targets[k].append((b, t, self.token(codes, q[t // C + 1], k)))
                elif not car:
                    k = (t + 1) % C
                    targets[k].append((b, t, self.token(codes, q[(t + 1) // C], k)))
        return tok, valid, targets

    def hidden(self, tok, valid):
        B, T = tok.shape
        C, L, d = self.C, self.C - 1, self.s["d_model"]
        level = torch.arange(T) % C
        e = torch.zeros(B, T, d, dtype=self.pos_emb.dtype, device=self.pos_emb.device)
        for k in range(C):
            table = self.sid_emb[k] if k < L else self.uid_emb
            e[:, level == k] = table[tok[:, level == k]]
        e = e * valid.unsqueeze(-1)
        # fusion inside each chunk: pad T to whole chunks, then a running sum over the chunk axis
        n_chunks = -(-T // C)
        ep = F.pad(e, (0, 0, 0, n_chunks * C - T)).view(B, n_chunks, C, d)
        fusion = self.s["fusion"]
        if fusion == "sum":
            ep = ep.cumsum(dim=2)
        elif fusion == "mean":
            ep = ep.cumsum(dim=2) / torch.arange(1, C + 1, dtype=ep.dtype, device=ep.device).view(1, 1, C, 1)
        x = ep.reshape(B, n_chunks * C, d)[:, :T] + self.pos_emb[:T]
        if self.level_emb is not None:
            x = x + self.level_emb[level]
        x = self.drop(x)
        for blk in self.blocks:
            x = blk(x)
        return self.lnf(x)

    def head_logits(self, h, k):
        return h @ (self.think[k].weight if k < self.C - 1 else self.uid_weight()).t()

    def loss(self, codes, seqs):
        """(loss, act, think, logits per head) for a batch of item sequences."""
        tok, valid, targets = self.inputs(codes, seqs)
        h = self.hidden(tok, valid)
        L, car, alpha = self.C - 1, self.s["mode"] == "car", self.s["alpha"]
        logits, ce_sum, counts = [], [], []
        for k in range(L + 1):
            if not targets[k]:
                logits.append(None), ce_sum.append(h.sum() * 0), counts.append(0)
                continue
            bt = torch.tensor([(b, t) for b, t, _ in targets[k]])
            y = torch.tensor([tgt for _, _, tgt in targets[k]])
            z = self.head_logits(h[bt[:, 0], bt[:, 1]], k)
            logits.append(z)
            ce_sum.append(F.cross_entropy(z, y, reduction="sum"))
            counts.append(len(y))
        act = ce_sum[L] / counts[L]
        if car:
            think = sum(ce_sum[:L]) / (L * counts[L]) if L else act * 0
            loss = act + alpha * think
        else:
            n_think = sum(counts[:L])
            think = sum(ce_sum[:L]) / n_think if L else act * 0
            loss = sum(ce_sum) / sum(counts)
        return loss, act, think, logits


def init_weights(model, gen):
    """Weights far from any initialisation, so that every gradient term is sizeable."""
    with torch.no_grad():
        for name, p in model.named_c_tensors():
            if name.endswith("ln1.w") or name.endswith("ln2.w") or name == "lnf.w":
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif name.endswith(".b"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            else:
                std = 0.5 if name.startswith("uid") else 0.3
                p.copy_(std * torch.randn(p.shape, generator=gen, dtype=torch.float64))


def adamw_two_steps(model, codes, seqs, hp):
    decay, rest = [], []
    for name, p in model.named_c_tensors():
        is_matrix = ".w" in name and ("attn" in name or "mlp" in name) or name.startswith("think_head")
        is_matrix = is_matrix or name == "uid_head"
        (decay if is_matrix else rest).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                             {"params": rest, "weight_decay": 0.0}], lr=hp["lr"],
                            betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"])
    second = {}
    for step in range(2):
        opt.zero_grad()
        model.loss(codes, seqs)[0].backward()
        if step == 1:
            second = {n: p.grad.detach().clone() for n, p in model.named_c_tensors()}
        torch.nn.utils.clip_grad_norm_([p for _, p in model.named_c_tensors()], hp["grad_clip"])
        opt.step()
    return second


def make_record(name, spec, seqs, seed):
    gen = torch.Generator().manual_seed(seed)
    L, V = spec["levels"], spec["n_items"]
    codes = torch.stack([torch.randint(0, K, (V,), generator=gen) for K in spec["codebook"]], dim=1) if L else \
        torch.zeros(V, 0, dtype=torch.long)
    model = CarModel(spec).double()
    init_weights(model, gen)
    out = {}
    sp = dict(levels=L, codebook=spec["codebook"] + [0] * (8 - L), n_items=V, max_chunks=spec["max_chunks"],
              d_model=spec["d_model"], n_layers=spec["n_layers"], n_heads=spec["n_heads"],
              fusion=FUSIONS[spec["fusion"]], level_embedding=spec["level_embedding"], tie_uid=spec["tie_uid"],
              mode=MODES[spec["mode"]], alpha=spec["alpha"])
    for k, v in sp.items():
        out[f"spec.{k}"] = torch.tensor(v, dtype=torch.float64).reshape(-1)
    out["codes"] = codes.double()
    out["batch.len"] = torch.tensor([len(q) for q in seqs], dtype=torch.float64)
    out["batch.items"] = torch.tensor([i for q in seqs for i in q], dtype=torch.float64)
    for n, p in model.named_c_tensors():
        out[f"param/{n}"] = p.detach().clone()
    loss, act, think, logits = model.loss(codes, seqs)
    loss.backward()
    out["loss"] = torch.stack([loss, act, think]).detach()
    for k, z in enumerate(logits):
        if z is not None:
            out[f"logits.{k}"] = z.detach()
    gsq = 0.0
    for n, p in model.named_c_tensors():
        out[f"grad/{n}"] = p.grad.detach().clone()
        gsq += float((p.grad ** 2).sum())
    # clipping at 70% of this batch's gradient norm, so that it is active in the first step
    hp = dict(lr=1e-2, beta1=0.9, beta2=0.98, eps=1e-8, weight_decay=0.1, grad_clip=0.7 * math.sqrt(gsq))
    for k, v in hp.items():
        out[f"adamw.{k}"] = torch.tensor([v], dtype=torch.float64)
    for n, g in adamw_two_steps(model, codes, seqs, hp).items():
        out[f"grad2/{n}"] = g
    for n, p in model.named_c_tensors():
        out[f"after2/{n}"] = p.detach().clone()
    print(f"{name}: loss {loss.item():.6f} act {act.item():.6f} think {think.item():.6f}, "
          f"{sum(p.numel() for _, p in model.named_c_tensors())} parameters")
    return {f"{name}/{k}": v for k, v in out.items()}


def write(path, tensors):
    with open(path, "wb") as f:
        f.write(b"CARREF01")
        f.write(struct.pack("<I", len(tensors)))
        for name, t in tensors.items():
            b = name.encode()
            t = t.detach().to(torch.float32).contiguous()
            f.write(struct.pack("<I", len(b)) + b + struct.pack("<I", t.dim()))
            f.write(struct.pack(f"<{t.dim()}I", *t.shape))
            f.write(t.numpy().astype("<f4").tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/reference/car_ref.bin")
    args = ap.parse_args()
    torch.set_default_dtype(torch.float64)
    base = dict(levels=2, codebook=[7, 5], n_items=23, max_chunks=6, d_model=16, n_layers=2, n_heads=2, dropout=0.0)
    seqs = [[3, 17, 4, 22, 9], [11, 0], [5, 5, 19, 8]]  # B = 3 sequences of 5, 2 and 4 items
    tensors = {}
    tensors.update(make_record("car", dict(base, fusion="sum", level_embedding=1, tie_uid=0, mode="car",
                                           alpha=0.6), seqs, 1))
    tensors.update(make_record("ar", dict(base, fusion="mean", level_embedding=0, tie_uid=1, mode="ar",
                                          alpha=1.0), seqs, 2))
    tensors.update(make_record("car_l0", dict(base, levels=0, codebook=[], fusion="none", level_embedding=1,
                                              tie_uid=0, mode="car", alpha=1.0), seqs, 3))
    write(args.out, tensors)
    print(f"wrote {args.out}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
