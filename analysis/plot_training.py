#!/usr/bin/python3
"""Plot a run's training curves from RUN_DIR/metrics.jsonl: loss (act and think) per step and
the validation metrics per epoch.

usage: analysis/plot_training.py RUN_DIR [RUN_DIR ...] [--out FILE.png]
       analysis/plot_training.py --sets beauty,sports,toys [--results analysis/results] [--out-dir analysis/figures]
The second form draws one figure per data set, training_<set>.png, from the committed logs that
scripts/experiments.sh copies (analysis/results/<set>/<variant>_s<seed>.metrics.jsonl): the act loss
and validation NDCG@10 of every cell, one colour per variant, seeds as thin lines of that colour.
"""
import argparse
import glob
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(run_dir):
    path = run_dir if run_dir.endswith(".jsonl") else os.path.join(run_dir, "metrics.jsonl")
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return [r for r in rows if r["kind"] == "train"], [r for r in rows if r["kind"] == "valid"]


def plot_set(folder, name, out):
    """training_<set>.png: act loss per step and validation NDCG@10 per epoch of every cell."""
    logs = sorted(glob.glob(os.path.join(folder, "*_s*.metrics.jsonl")))
    if not logs:
        print(f"{folder}: no *.metrics.jsonl (run scripts/experiments.sh); {name} skipped")
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    variants = sorted({re.sub(r"_s\d+\.metrics\.jsonl$", "", os.path.basename(p)) for p in logs})
    for path in logs:
        variant = re.sub(r"_s\d+\.metrics\.jsonl$", "", os.path.basename(path))
        c = colours[variants.index(variant) % len(colours)]
        first = path == next(p for p in logs if os.path.basename(p).startswith(variant + "_s"))
        train, valid = load(path)
        ax1.plot([r["step"] for r in train], [r["act_loss"] for r in train], color=c, lw=1, alpha=0.8,
                 label=variant if first else None)
        valid = [r for r in valid if "ndcg@10" in r]
        ax2.plot([r["epoch"] for r in valid], [r["ndcg@10"] for r in valid], color=c, lw=1, alpha=0.8, marker=".",
                 label=variant if first else None)
    ax1.set_xlabel("step"); ax1.set_ylabel("training act loss (UID cross-entropy)"); ax1.set_title("training loss")
    ax2.set_xlabel("epoch"); ax2.set_ylabel("validation NDCG@10"); ax2.set_title("validation (model selection)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{name}: training curves of every cell (seeds as separate lines)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="*")
    ap.add_argument("--out", default="training.png")
    ap.add_argument("--sets", help="comma-separated data sets: one figure each from --results")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--results", default=os.path.join(here, "results"))
    ap.add_argument("--out-dir", default=os.path.join(here, "figures"))
    a = ap.parse_args()
    if a.sets:
        os.makedirs(a.out_dir, exist_ok=True)
        for name in a.sets.split(","):
            plot_set(os.path.join(a.results, name), name, os.path.join(a.out_dir, f"training_{name}.png"))
        return
    if not a.runs:
        ap.error("give RUN_DIR ... or --sets")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for run in a.runs:
        train, valid = load(run)
        name = os.path.basename(os.path.normpath(run))
        ax1.plot([r["step"] for r in train], [r["act_loss"] for r in train], label=f"{name} act")
        if any(r["think_loss"] for r in train):
            ax1.plot([r["step"] for r in train], [r["think_loss"] for r in train], "--", label=f"{name} think")
        if valid and "ndcg@10" in valid[0]:
            ax2.plot([r["epoch"] for r in valid], [r["recall@10"] for r in valid], label=f"{name} R@10")
            ax2.plot([r["epoch"] for r in valid], [r["ndcg@10"] for r in valid], "--", label=f"{name} N@10")
        elif valid:
            ax2.plot([r["epoch"] for r in valid], [r["loss"] for r in valid], label=f"{name} valid loss")
    ax1.set_xlabel("step"); ax1.set_ylabel("training loss"); ax1.legend(fontsize=7)
    ax2.set_xlabel("epoch"); ax2.set_ylabel("validation"); ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
