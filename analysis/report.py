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
import functools
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
# The paper's comparisons (arXiv 2506.23643), each "A beats B" on test NDCG@10, user by user
CLAIMS = [
    ("car", "ar", "CAR beats AR (SIDs generated token by token, beam search)"),
    ("car", "nofusion", "fusion helps: w/o F is worse"),
    ("car", "nothink", "the think loss helps: w/o T is worse"),
    ("car", "uidonly", "SIDs help: CAR beats the UID-only model (depth 0)"),
    ("car", "lsh", "residual k-means SIDs beat LSH codes"),
    ("car", "random", "the SIDs are semantic, not just capacity: CAR beats random codes of the same sizes"),
]
# Recall@5 from SID depth 1 to 4, relative rise the paper reports (Beauty and Toys; none for Sports)
DEPTH_CLAIM = {"beauty": 25.8, "toys": 30.5}
DEPTHS = [("uidonly", 0), ("depth1", 1), ("depth2", 2), ("car", 3), ("depth4", 4)]
ALPHA = 0.05


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


@functools.lru_cache(maxsize=None)
def test_ranks(ranks_path):
    """Per-user 0-based test rank (-1: no test target) from a .ranks.gz file."""
    with gzip.open(ranks_path, "rt") as f:
        rows = [line.split() for line in f if not line.startswith("#")]
    return np.array([int(r[1]) for r in rows], dtype=np.int64)


def test_metric(ranks_path, metric):
    """Per-user test NDCG@10 ("ndcg10") or Recall@5 ("hit5": 1 when the target is in the top 5), NaN for
    users without a test target."""
    test = test_ranks(ranks_path)
    if metric == "hit5":
        out = (test < 5).astype(float)
    else:
        out = np.where(test < 10, 1.0 / np.log2(np.maximum(test, 0) + 2.0), 0.0)
    out[test < 0] = np.nan
    return out


def per_user(cell, metric="ndcg10"):
    """The seed-average of a per-user test metric over the runs that have ranks, or None."""
    arrays = [test_metric(r, metric) for run, r in cell.values() if r]
    if not arrays or any(len(a) != len(arrays[0]) for a in arrays):
        return None
    return np.mean(arrays, axis=0)


def t_test_p(d):
    """Two-sided p of a paired t test on the differences d (normal approximation, n >= 2)."""
    sd = d.std(ddof=1)
    return 1.0 if sd == 0 else math.erfc(abs(d.mean() / (sd / math.sqrt(len(d)))) / math.sqrt(2))


def paired(a, b, n_boot, rng):
    """Paired difference a - b over users: mean, two-sided p (t test, normal approximation), 95% CI."""
    ok = ~(np.isnan(a) | np.isnan(b))
    d = a[ok] - b[ok]
    n = len(d)
    if n < 2:
        return None
    mean, p = d.mean(), t_test_p(d)
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


def set_table(name, cells, n_boot, rng, claims_rng):
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
    lines += claims(name, cells, n_boot, claims_rng)
    lines += commands(cells)
    return lines


def verdict(diff, p):
    """Whether "A beats B" holds from the paired difference A - B and its p (NaN anywhere fails)."""
    if math.isnan(diff) or math.isnan(p):
        return "**fails here**: not computable (NaN)"
    if not p < ALPHA:
        return "**fails here**: no significant difference"
    return "**holds**" if diff > 0 else "**fails here**: significant the other way"


def relative_rise(new, old, n_boot, rng):
    """mean(new) / mean(old) - 1 over users with both, its 95% paired-bootstrap interval, and the p of a
    paired t test on new - old; None when not computable."""
    ok = ~(np.isnan(new) | np.isnan(old))
    a, b = new[ok], old[ok]
    n = len(a)
    if n < 2 or b.mean() == 0:
        return None
    boot = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        boot.append(a[i].mean() / max(b[i].mean(), 1e-300) - 1)
    return a.mean() / b.mean() - 1, np.percentile(boot, 2.5), np.percentile(boot, 97.5), t_test_p(a - b)


def claims(name, cells, n_boot, rng):
    """The paper's claims on this set, each with its paired test and whether it holds here (p < ALPHA)."""
    label = dict((v, l) for v, l, _ in VARIANTS)
    out = [f"The paper's claims on {name.capitalize()} (test, paired over users, seeds averaged per user; "
           f"holds = the claimed direction at p < {ALPHA}):", ""]
    for a, b, text in CLAIMS:
        ua = per_user(cells[a]) if a in cells else None
        ub = per_user(cells[b]) if b in cells else None
        r = paired(ua, ub, n_boot, rng) if ua is not None and ub is not None and len(ua) == len(ub) else None
        if r is None:
            out.append(f"- {text}: {DASH} (not run yet)")
            continue
        out.append(f"- {text}: N@10 {label[a]} − {label[b]} = {r[0]:+.4f} [{r[2]:+.4f}, {r[3]:+.4f}], "
                   f"p {fmt_p(r[1])}: {verdict(r[0], r[1])}")
    curve = []
    for v, depth in DEPTHS:
        stats = summarise(cells[v]) if v in cells else None
        curve.append(f"{depth}: {fmt(stats[0][0]) if stats else DASH}")
    out.append(f"- Recall@5 by SID depth (0 = UID-only, 3 = CAR): " + ", ".join(curve))
    h1 = per_user(cells["depth1"], "hit5") if "depth1" in cells else None
    h4 = per_user(cells["depth4"], "hit5") if "depth4" in cells else None
    rise = relative_rise(h4, h1, n_boot, rng) if h1 is not None and h4 is not None and len(h1) == len(h4) else None
    paper = DEPTH_CLAIM.get(name)
    said = f"the paper reports +{paper}%" if paper is not None else "the paper reports no figure for this set"
    if rise is None:
        out.append(f"- Recall@5 rises from SID depth 1 to 4 ({said}): {DASH} (not run yet)")
    else:
        rel, lo, hi, p = rise
        v = verdict(rel, p)
        if v == "**holds**" and paper is not None and hi * 100 < paper:
            v = f"**holds in direction**, but smaller than reported (the interval excludes +{paper}%)"
        out.append(f"- Recall@5 rises from SID depth 1 to 4 ({said}): {100 * rel:+.1f}% [{100 * lo:+.1f}%, "
                   f"{100 * hi:+.1f}%], p {fmt_p(p)} (paired on per-user hits@5): {v}")
    return out + [""]


def commands(cells):
    out = ["", "<details><summary>Commands</summary>", ""]
    for variant, label, _ in VARIANTS:
        for seed, (run, ranks) in sorted(cells.get(variant, {}).items()):
            note = "" if ranks else "  (no per-user ranks)"
            kernel = re.search(r"kernel (\w+)", run.get("blas", ""))
            note += f" (BLAS kernel {kernel.group(1)})" if kernel else " (BLAS kernel not recorded: a run from before results.json held it)"
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
    claims_rng = np.random.default_rng(1)  # apart, so the tables' intervals do not depend on the claims
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
        lines += set_table(name, cells, a.bootstrap, rng, claims_rng)
    text = "\n".join(lines).rstrip() + "\n"
    tmp = a.out + ".partial"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
