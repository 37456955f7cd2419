#!/usr/bin/python3
"""Plot a run's training curves from RUN_DIR/metrics.jsonl: loss (act and think) per step and
the validation metrics per epoch.

usage: analysis/plot_training.py RUN_DIR [RUN_DIR ...] [--out FILE.png]
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(run_dir):
    rows = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if l.strip()]
    return [r for r in rows if r["kind"] == "train"], [r for r in rows if r["kind"] == "valid"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default="training.png")
    a = ap.parse_args()
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
