#!/usr/bin/python3
"""The results table of issue 11: analysis/results/<set>/*.json (+ .ranks.gz) -> analysis/RESULTS.md.

    analysis/report.py [--results analysis/results] [--out analysis/RESULTS.md] [--sets beauty,sports,toys]
                       [--bootstrap 2000]

One table per data set: test Recall/NDCG@5/10, mean ± std over seeds (sample std), the best value of
each column in bold; published rows with their source; the popularity baseline (from results.json);
for each ablation and control, a paired test over users against CAR on test NDCG@10 from the per-user
ranks (runs of the same variant are averaged per user over their seeds first; p of a two-sided paired
t test, normal approximation, and a 95% paired-bootstrap interval of the difference); the exact
command of every cell. Missing cells show "—"; runs without per-user ranks say so.
Files: <variant>_s<seed>.json (scripts/experiments.sh); the seed is read from the run's effective
configuration. Subfolders (previous_config_*: cells of an earlier configuration) are not read.
"""
import argparse
import glob
import gzip
import json
import math
import os
import re
import sys

import numpy as np

METRICS = [("recall@5", "R@5"), ("ndcg@5", "N@5"), ("recall@10", "R@10"), ("ndcg@10", "N@10")]
# variant, label, what it is
VARIANTS = [
    ("car", "CAR", "3 SID levels (depth 3), fusion sum, alpha 1"),
    ("nofusion", "w/o F", "model.fusion = none"),
    ("nothink", "w/o T", "train.alpha = 0"),
    ("ar", "AR", "train.mode = ar, beam search"),
    ("uidonly", "UID-only", "sid.levels = 0 (depth 0)"),
    ("depth1", "SID depth 1", "sid.levels = 1"),
    ("depth2", "SID depth 2", "sid.levels = 2"),
    ("depth4", "SID depth 4", "sid.levels = 4"),
    ("random", "random codes", "sid.method = random (same level sizes)"),
    ("lsh", "LSH codes", "sid.method = lsh (random hyperplanes)"),
]
TIGER = "TIGER paper (Rajput et al., NeurIPS 2023, arXiv 2305.05065), Table 1"
# R@5, N@5, R@10, N@10
PUBLISHED = {
    "beauty": [("TIGER", TIGER, (.0454, .0321, .0648, .0384)),
               ("SASRec (in TIGER)", TIGER, (.0387, .0249, .0605, .0318))],
    "sports": [("TIGER", TIGER, (.0264, .0181, .0400, .0225)),
               ("SASRec (in TIGER)", TIGER, (.0233, .0154, .0350, .0192))],
    "toys": [("TIGER", TIGER, (.0521, .0371, .0712, .0432)),
             ("SASRec (in TIGER)", TIGER, (.0463, .0306, .0675, .0374))],
}
DASH = "—"


def seed_of(run, name):
    m = re.search(r"^train = \{.*?^\s*seed = (\d+);", run.get("effective_config", ""), re.S | re.M)
    if m:
        return int(m.group(1))
    m = re.search(r"_s(?:eed)?(\d+)$", name)
    return int(m.group(1)) if m else 1


def load_set(folder):
    """{variant: {seed: (run dict, ranks path or None)}}"""
    cells = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        name = os.path.basename(path)[:-5]
        m = re.match(r"^(\w+?)_s(\d+)$", name)
        if not (m and m.group(1) in dict((v[0], 1) for v in VARIANTS)):
            continue
        variant = m.group(1)
        try:
            run = json.load(open(path))
        except (OSError, ValueError) as e:
            print(f"report.py: {path}: not readable JSON ({e}); left out", file=sys.stderr)
            continue
        if "test" not in run:
            continue
        seed = seed_of(run, name)
        ranks = path[:-5] + ".ranks.gz"
        cells.setdefault(variant, {})[seed] = (run, ranks if os.path.exists(ranks) else None)
    return cells


def test_ndcg10(ranks_path):
    """Per-user test NDCG@10 (NaN for users without a test target) from a .ranks.gz file."""
    with gzip.open(ranks_path, "rt") as f:
        rows = [line.split() for line in f if not line.startswith("#")]
    test = np.array([int(r[1]) for r in rows], dtype=np.int64)
    out = np.where(test < 10, 1.0 / np.log2(np.maximum(test, 0) + 2.0), 0.0)
    out[test < 0] = np.nan
    return out


def per_user(cell):
    """The seed-average of per-user test NDCG@10 over the runs that have ranks, or None."""
    arrays = [test_ndcg10(r) for run, r in cell.values() if r]
    if not arrays or any(len(a) != len(arrays[0]) for a in arrays):
        return None
    return np.mean(arrays, axis=0)


def paired(a, b, n_boot, rng):
    """Paired difference a - b over users: mean, two-sided p (t test, normal approximation), 95% CI."""
    ok = ~(np.isnan(a) | np.isnan(b))
    d = a[ok] - b[ok]
    n = len(d)
    if n < 2:
        return None
    mean, sd = d.mean(), d.std(ddof=1)
    p = 1.0 if sd == 0 else math.erfc(abs(mean / (sd / math.sqrt(n))) / math.sqrt(2))
    boot = np.array([d[rng.integers(0, n, n)].mean() for _ in range(n_boot)])
    return mean, p, np.percentile(boot, 2.5), np.percentile(boot, 97.5), n


def fmt(x):
    return f"{x:.4f}".replace("0.", ".", 1) if x is not None and not math.isnan(x) else DASH


def fmt_p(p):
    return DASH if p is None else ("< 1e-4" if p < 1e-4 else f"{p:.4f}")


def summarise(cell):
    """[(mean, std or None)] per metric over the seeds that have ranking metrics."""
    runs = [run for run, _ in cell.values() if all(k in run["test"] for k, _ in METRICS)]
    if not runs:
        return None
    out = []
    for key, _ in METRICS:
        v = np.array([run["test"][key] for run in runs])
        out.append((v.mean(), v.std(ddof=1) if len(v) > 1 else None))
    return out


def set_table(name, cells, n_boot, rng):
    lines = [f"## {name.capitalize()}", ""]
    rows = []  # (label, seeds, [(mean, std)], extra columns)
    for label, source, vals in PUBLISHED.get(name, []):
        rows.append((label, "published", [(v, None) for v in vals], DASH, DASH, f"{source}"))
    pop = next((run.get("popularity_test") for c in cells.values() for run, _ in c.values() if run.get("popularity_test")), None)
    if pop:
        rows.append(("popularity", "—", [(pop[k], None) for k, _ in METRICS], DASH, DASH, "most frequent training items (results.json)"))
    car = per_user(cells["car"]) if "car" in cells else None
    notes = []
    for variant, label, what in VARIANTS:
        cell = cells.get(variant, {})
        stats = summarise(cell) if cell else None
        seeds = ",".join(str(s) for s in sorted(cell)) if cell else DASH
        delta = pcol = DASH
        if variant != "car" and cell:
            mine = per_user(cell)
            if mine is None or car is None:
                pcol = "no per-user ranks"
            elif len(mine) != len(car):
                pcol = "ranks of another user count"
            else:
                r = paired(mine, car, n_boot, rng)
                if r:
                    delta = f"{r[0]:+.4f} [{r[2]:+.4f}, {r[3]:+.4f}]"
                    pcol = fmt_p(r[1])
        elif variant == "car" and cell:
            pcol = "no per-user ranks" if car is None else "(reference)"
        if cell and stats is None:
            notes.append(f"{label}: its results hold no ranking metrics (e.g. a loss-only AR run before beam search).")
        rows.append((label, seeds, stats, delta, pcol, what))
    # the best mean of each column, over every row with a value
    best = []
    for j in range(len(METRICS)):
        vals = [r[2][j][0] for r in rows if r[2]]
        best.append(max(vals) if vals else None)
    head = "| | seeds | " + " | ".join(h for _, h in METRICS) + " | Δ N@10 vs CAR [95% CI] | p (paired, N@10) | what |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for label, seeds, stats, delta, pcol, what in rows:
        cols = []
        for j in range(len(METRICS)):
            if not stats:
                cols.append(DASH)
                continue
            m, s = stats[j]
            text = fmt(m) + (f" ± {fmt(s)}" if s is not None else "")
            cols.append(f"**{text}**" if best[j] is not None and m == best[j] else text)
        lines.append(f"| {label} | {seeds} | " + " | ".join(cols) + f" | {delta} | {pcol} | {what} |")
    lines.append("")
    lines += [f"- {n}" for n in notes]
    lines += commands(cells)
    return lines


def commands(cells):
    out = ["", "<details><summary>Commands</summary>", ""]
    for variant, label, _ in VARIANTS:
        for seed, (run, ranks) in sorted(cells.get(variant, {}).items()):
            note = "" if ranks else "  (no per-user ranks)"
            out.append(f"- {label}, seed {seed}: `mpirun -n {run.get('ranks', '?')} {run.get('command', '?')}`{note}")
    return out + ["", "</details>", ""]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--results", default=os.path.join(here, "results"))
    ap.add_argument("--out", default=os.path.join(here, "RESULTS.md"))
    ap.add_argument("--sets", default="beauty,sports,toys")
    ap.add_argument("--bootstrap", type=int, default=2000)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    lines = ["# Results", "",
             "Test metrics at the best validation epoch, full ranking over all items, leave-one-out, no history "
             "filtering (DESIGN.md section 2); mean ± sample std over training seeds. Bold: best of the column. "
             "The paired test compares each variant with CAR user by user on test NDCG@10 (each side averaged "
             "over its seeds first): Δ is the mean difference with a 95% paired-bootstrap interval over users, "
             "p a two-sided paired t test; users are the unit, seed-to-seed spread is the ± column. "
             f"Regenerate: `analysis/report.py` (from analysis/results/). {DASH}: not run yet.", ""]
    for name in a.sets.split(","):
        folder = os.path.join(a.results, name)
        cells = load_set(folder) if os.path.isdir(folder) else {}
        lines += set_table(name, cells, a.bootstrap, rng)
    text = "\n".join(lines).rstrip() + "\n"
    tmp = a.out + ".partial"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
