#!/usr/bin/python3
"""The speed of thinking: plots bench_decode's results (CAR one pass vs AR beam search).

usage: analysis/plot_decode_speed.py [RESULTS.txt] [OUT.png]
  RESULTS.txt  bench_decode output (default: the newest analysis/results/decode_speed_*.txt)
  OUT.png      default analysis/figures/decode_speed.png
Top row: throughput (users per CPU second) against the beam width, per data set and rank count;
CAR fast and slow are one pass (flat lines). Bottom row: latency of one user alone, p50 with the
p99 as the bar's top."""
import glob
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
src = sys.argv[1] if len(sys.argv) > 1 else max(glob.glob(os.path.join(here, "results", "decode_speed_*.txt")))
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "figures", "decode_speed.png")

rows = []
for line in open(src):
    parts = line.split()
    if parts and parts[0] == "decode":
        rows.append(dict(p.split("=", 1) for p in parts[1:]))
if not rows:
    sys.exit(f"{src}: no 'decode' lines")
panels = sorted({(r["dataset"], int(r["P"])) for r in rows}, key=lambda x: (x[0] != "toys", x))
fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7.5), squeeze=False)
for col, (ds, P) in enumerate(panels):
    sel = [r for r in rows if r["dataset"] == ds and int(r["P"]) == P]
    thr, lat = axes[0][col], axes[1][col]
    for cache, style in (("on", "o-"), ("off", "s--")):
        ar = sorted((int(r["beam"]), r) for r in sel if r["mode"] == "ar" and r["cache"] == cache)
        if not ar:
            continue
        beams = [b for b, _ in ar]
        label = f"AR beam search, KV cache {cache}"
        thr.plot(beams, [float(r["thr_users_s"]) for _, r in ar], style, label=label)
        p50 = [float(r["lat_p50_ms"]) for _, r in ar]
        p99 = [float(r["lat_p99_ms"]) for _, r in ar]
        lat.errorbar(beams, p50, yerr=[[0] * len(p50), [b - a for a, b in zip(p50, p99)]], fmt=style, capsize=3, label=label)
    beams = sorted({int(r["beam"]) for r in sel if r["mode"] == "ar"}) or [1, 100]
    for mode, color in (("car_fast", "tab:green"), ("car_slow", "tab:olive")):
        r = next((r for r in sel if r["mode"] == mode), None)
        if r:
            name = "CAR one pass" + (" + think re-rank" if mode == "car_slow" else "")
            thr.plot([beams[0], beams[-1]], [float(r["thr_users_s"])] * 2, color=color, label=name)
            lat.plot([beams[0], beams[-1]], [float(r["lat_p50_ms"])] * 2, color=color, label=name)
    for ax in (thr, lat):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(beams)
        ax.set_xticklabels([str(b) for b in beams])
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlabel("beam width W (AR)")
    V = sel[0]["V"]
    thr.set_title(f"{ds} (V = {V}), {P} rank{'s' if P > 1 else ''}")
    thr.set_ylabel("users / CPU second (batch of %s)" % sel[0]["thr_batch"])
    lat.set_ylabel("one user alone: ms (p50, bar to p99)")
axes[0][0].legend(fontsize=8)
fig.suptitle("Speed of thinking: K = 10 lists, d = 64, 2 layers, L = 3,\nhistories of 20 items (random weights)", fontsize=10)
fig.tight_layout()
os.makedirs(os.path.dirname(out), exist_ok=True)
fig.savefig(out, dpi=110)
print(f"wrote {out} from {src}")
