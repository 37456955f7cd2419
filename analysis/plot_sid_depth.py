#!/usr/bin/python3
"""SID-depth scaling: test Recall@5 and NDCG@10 against the number of semantic-ID levels.

    analysis/plot_sid_depth.py [--results analysis/results] [--out analysis/figures/sid_depth.png]
                               [--sets beauty,sports,toys]

Depth 0 is the UID-only model (uidonly), 1, 2 and 4 the depth cells, 3 CAR itself (the committed
configs have 3 levels; the depth of every run is read from its effective configuration). One line per
data set: the mean over seeds with error bars of one sample standard deviation; the random-code and
LSH controls (at their own depth) are separate markers of the same colour. A third panel puts the sets
on one scale: Recall@5 relative to SID depth 1, in percent, with the rise from depth 1 to 4 that the
paper reports (Beauty +25.8%, Toys +30.5%) as a star at depth 4. Reads what
scripts/experiments.sh copied to analysis/results/ (analysis/report.py reads the same files).
"""
import argparse
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import DEPTH_CLAIM, DEPTHS, load_set  # noqa: E402

PANELS = [("recall@5", "Recall@5"), ("ndcg@10", "NDCG@10")]
DEPTH_VARIANTS = [v for v, _ in DEPTHS]  # report.py's (variant, depth) list, in depth order
CONTROLS = [("random", "x", "random codes"), ("lsh", "^", "LSH codes")]


def depth_of(run):
    m = re.search(r"^sid = \{.*?^\s*levels = (\d+);", run.get("effective_config", ""), re.S | re.M)
    return int(m.group(1)) if m else None


def points(cells, variants, key):
    """{depth: [value per seed]} over the given variants' runs that have the metric."""
    out = {}
    for v in variants:
        for run, _ in cells.get(v, {}).values():
            d = depth_of(run)
            if d is not None and key in run.get("test", {}):
                out.setdefault(d, []).append(run["test"][key])
    return out


def mean_std(vals):
    v = np.array(vals)
    return v.mean(), (v.std(ddof=1) if len(v) > 1 else 0.0)


def relative_to(line, base):
    """depths, mean and std (over seeds) of the metric in percent above its mean at depth `base`"""
    if base not in line:
        return None
    b = np.mean(line[base])
    xs = sorted(line)
    return xs, [100 * (np.mean(line[x]) / b - 1) for x in xs], [100 * mean_std(line[x])[1] / b for x in xs]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--results", default=os.path.join(here, "results"))
    ap.add_argument("--out", default=os.path.join(here, "figures", "sid_depth.png"))
    ap.add_argument("--sets", default="beauty,sports,toys")
    a = ap.parse_args()
    sets = a.sets.split(",")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, len(PANELS) + 1, figsize=(16, 4.6))
    rel_ax = axes[-1]
    plotted = 0
    for i, name in enumerate(sets):
        folder = os.path.join(a.results, name)
        cells = load_set(folder) if os.path.isdir(folder) else {}
        c = colours[i % len(colours)]
        for ax, (key, label) in zip(axes, PANELS):
            line = points(cells, DEPTH_VARIANTS, key)
            if line:
                xs = sorted(line)
                ms = [mean_std(line[x]) for x in xs]
                seeds = max(len(line[x]) for x in xs)
                ax.errorbar(xs, [m for m, _ in ms], yerr=[s for _, s in ms], color=c, marker="o", capsize=3,
                            label=f"{name} (up to {seeds} seeds)")
                plotted += 1
                if key == "recall@5" and (rel := relative_to(line, 1)):
                    rel_ax.errorbar(rel[0], rel[1], yerr=rel[2], color=c, marker="o", capsize=3)
                    if name in DEPTH_CLAIM:
                        rel_ax.plot(4, DEPTH_CLAIM[name], color=c, marker="*", markersize=13, linestyle="none")
            for k, (variant, marker, what) in enumerate(CONTROLS):
                ctl = points(cells, [variant], key)
                for x, vals in ctl.items():  # beside the depth they share with CAR, not on top of it
                    m, s = mean_std(vals)
                    ax.errorbar(x + 0.12 * (k + 1), m, yerr=s, color=c, marker=marker, linestyle="none", capsize=3,
                                markerfacecolor="none", markersize=8)
    for ax, (key, label) in zip(axes, PANELS):
        ax.set_ylabel(f"test {label}")
        ax.set_title(f"{label} vs SID depth")
    rel_ax.axhline(0, color="grey", linewidth=0.8)
    rel_ax.set_ylabel("test Recall@5 above SID depth 1 (%)")
    rel_ax.set_title("Recall@5 relative to depth 1, vs the paper")
    for ax in axes:
        ax.set_xlabel("SID depth (levels per item; 0 = UID only)")
        ax.set_xticks(range(0, 5))
        ax.set_xlim(-0.4, 4.6)
        ax.grid(alpha=0.3)
    # one legend: the data sets' lines, then the control markers in neutral grey
    handles, labels = axes[0].get_legend_handles_labels()
    for variant, marker, what in CONTROLS:
        handles.append(plt.Line2D([], [], color="grey", marker=marker, linestyle="none", markerfacecolor="none",
                                  markersize=8))
        labels.append(f"{what} (same depth, shifted right)")
    handles.append(plt.Line2D([], [], color="grey", marker="*", linestyle="none", markersize=12))
    labels.append("the paper's reported rise, depth 1 to 4 (Beauty, Toys)")
    if not plotted:
        for ax in axes:
            ax.text(0.5, 0.5, "no depth results yet", transform=ax.transAxes, ha="center", color="grey")
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.suptitle("Semantic-ID depth scaling (full ranking, test; mean ± std over seeds)")
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    fig.savefig(a.out, dpi=130)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
