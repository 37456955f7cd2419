#!/usr/bin/python3
"""The cost curve of a growing catalogue: plots scripts/bench_scaling.sh's results (bench_scale).

usage: analysis/plot_scaling.py [RESULTS.txt] [OUT.png]
  RESULTS.txt  bench_scaling.sh output (default: the newest analysis/results/scaling_*.txt)
  OUT.png      default analysis/figures/scaling.png
(a) memory per rank against the ranks P, per item count V: the sharded UID tables (parameters,
gradients, both AdamW moments) and the peak RSS, with the ideal 1/P from P = 1; (b) where a
rank's memory goes at the largest V: UID tables, the UID head's logits workspace, evaluation's
score block and the rest (the replicated model, data, MPI); (c) CPU time against V on one rank:
the training step, the UID head alone and full-ranking evaluation per user, with a guide ~ V;
(d) the UID head's CPU time per supervised row (slowest rank) against P, per V, with 1/P guides.
Times are CPU seconds: the machine is shared and P > cores is oversubscribed."""
import glob
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
src = sys.argv[1] if len(sys.argv) > 1 else max(glob.glob(os.path.join(here, "results", "scaling_*.txt")))
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "figures", "scaling.png")

rows = []
for line in open(src):
    parts = line.split()
    if parts[:2] == ["BENCH", "scale"]:
        r = dict(p.split("=", 1) for p in parts[2:])
        rows.append({k: float(v) for k, v in r.items()})
if not rows:
    sys.exit(f"{src}: no 'BENCH scale' lines")
Vs = sorted({r["items"] for r in rows})
Ps = sorted({r["ranks"] for r in rows})


def sel(V=None, P=None):
    return sorted((r for r in rows if (V is None or r["items"] == V) and (P is None or r["ranks"] == P)),
                  key=lambda r: (r["items"], r["ranks"]))


def vname(V):
    return f"{V / 1e6:.3g}M" if V >= 1e6 else f"{V / 1e3:.3g}k"


def log_axes(a, xbase, ticks, ticklabels, xlabel, ylabel, title, legend_size):
    """The log-log panels' common frame: ticks at the measured points, labels, grid, legend."""
    a.set_xscale("log", base=xbase)
    a.set_yscale("log")
    a.set_xticks(ticks)
    a.set_xticklabels(ticklabels)
    a.set_xlabel(xlabel)
    a.set_ylabel(ylabel)
    a.set_title(title)
    a.grid(True, which="both", alpha=0.3)
    a.legend(fontsize=legend_size)


colors = dict(zip(Vs, ["tab:blue", "tab:orange", "tab:red", "tab:green", "tab:purple"]))
fig, ax = plt.subplots(2, 2, figsize=(12, 9.5))

a = ax[0][0]
for V in Vs:
    rs = sel(V=V)
    P = [r["ranks"] for r in rs]
    a.plot(P, [r["uid_mib"] for r in rs], "o-", color=colors[V], label=f"V = {vname(V)}: UID tables")
    a.plot(P, [r["rss_mib"] for r in rs], "s--", color=colors[V], alpha=0.7, label=f"V = {vname(V)}: peak RSS")
    if rs and rs[0]["ranks"] == 1:
        a.plot(P, [rs[0]["uid_mib"] / p for p in P], ":", color="gray")
log_axes(a, 2, Ps, [f"{p:g}" for p in Ps], "ranks P", "MiB per rank (max over ranks)",
         "(a) memory per rank: the UID tables fall as 1/P (dotted)", 7)

b = ax[0][1]
Vmax = Vs[-1]
rs = sel(V=Vmax)
x = range(len(rs))
parts = [("uid_mib", "UID tables (params, grads, m, v)"), ("work_mib", "UID logits workspace"),
         ("score_mib", "eval score block")]
bottom = [0.0] * len(rs)
for key, label in parts:
    vals = [r[key] for r in rs]
    b.bar(x, vals, bottom=bottom, label=label)
    bottom = [u + v for u, v in zip(bottom, vals)]
rest = [max(r["rss_mib"] - s, 0) for r, s in zip(rs, bottom)]
b.bar(x, rest, bottom=bottom, label="rest of peak RSS (model, data, MPI)", color="lightgray")
for i, r in enumerate(rs):
    b.text(i, r["rss_mib"], f"{r['rss_mib']:.0f}", ha="center", va="bottom", fontsize=8)
b.set_xticks(list(x))
b.set_xticklabels([f"P = {r['ranks']:g}" for r in rs])
b.set_ylabel("MiB per rank (max over ranks)")
b.set_title(f"(b) where a rank's memory goes, V = {vname(Vmax)}")
b.legend(fontsize=8)
b.grid(True, axis="y", alpha=0.3)

c = ax[1][0]
rs = sel(P=1)
V = [r["items"] for r in rs]
c.plot(V, [r["step_cpu_ms"] for r in rs], "o-", label=f"training step ({rs[0]['batch']:g} users, {rs[0]['uid_rows']:g} UID rows)")
c.plot(V, [r["uid_cpu_ms"] for r in rs], "s-", label="UID head alone (forward + backward)")
c.plot(V, [1e3 * r["eval_cpu_s"] / r["eval_users"] for r in rs], "^-", label="full-ranking evaluation, per user")
if rs:
    c.plot(V, [rs[-1]["uid_cpu_ms"] * v / V[-1] for v in V], ":", color="gray", label="~ V")
log_axes(c, 10, V, [vname(v) for v in V], "items V", "CPU ms (one rank)", "(c) time against V, one rank", 8)

d = ax[1][1]
for V in Vs:
    rs = sel(V=V)
    P = [r["ranks"] for r in rs]
    d.plot(P, [r["uid_cpu_us_per_row"] for r in rs], "o-", color=colors[V], label=f"V = {vname(V)}")
    if rs and rs[0]["ranks"] == 1:
        d.plot(P, [rs[0]["uid_cpu_us_per_row"] / p for p in P], ":", color=colors[V], alpha=0.6)
log_axes(d, 2, Ps, [f"{p:g}" for p in Ps], "ranks P (P > 2 oversubscribed on this machine)",
         "CPU us per UID row (slowest rank)", "(d) UID head per supervised row; dotted: 1/P", 8)

fig.suptitle(f"CAR at many items: {os.path.basename(src)}", fontsize=11)
fig.tight_layout()
os.makedirs(os.path.dirname(out), exist_ok=True)
fig.savefig(out, dpi=110)
print(f"wrote {out}")
