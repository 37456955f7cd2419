#!/usr/bin/python3
"""Table of results.json files grouped by variant: mean and spread (sample std) over seeds of
the test (and validation) Recall/NDCG at 5 and 10.

usage: analysis/compare_results.py VARIANT=RESULTS.json[,RESULTS.json...] ... [--json OUT]
"""
import argparse
import json
import statistics

KEYS = ["recall@5", "ndcg@5", "recall@10", "ndcg@10"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("groups", nargs="+", help="NAME=a.json,b.json,...")
    ap.add_argument("--json", help="write the table as JSON here")
    a = ap.parse_args()
    table = {}
    print(f"{'variant':<18} {'n':>2}  " + "  ".join(f"{'test ' + k:>19}" for k in KEYS) + "   best epochs")
    for g in a.groups:
        name, files = g.split("=", 1)
        res = [json.load(open(f)) for f in files.split(",")]
        row = {"runs": len(res), "best_epochs": [r["best_epoch"] for r in res]}
        cells = []
        for split in ("test", "valid"):
            for k in KEYS:
                v = [r[split][k] for r in res]
                mean, sd = statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0
                row[f"{split} {k}"] = {"mean": mean, "std": sd, "values": v}
                if split == "test":
                    cells.append(f"{mean:.4f} ± {sd:.4f}")
        table[name] = row
        print(f"{name:<18} {len(res):>2}  " + "  ".join(f"{c:>19}" for c in cells) + f"   {row['best_epochs']}")
    if a.json:
        json.dump(table, open(a.json, "w"), indent=2)


if __name__ == "__main__":
    main()
