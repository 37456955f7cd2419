#!/usr/bin/python3
"""Are semantic IDs semantic? For the codes in SIDS.h5 and the items of ITEMS.jsonl (item_id k is
dataset item k-1), the share of items whose code prefix (level 1, levels 1-2, ...) is shared with
another item of the same leaf category (the last element of "categories"), against the same share
for random codes of the same cluster sizes (the codes permuted over items, mean of --perms); and
of the item pairs that share a prefix, the share in the same leaf category (and for random codes).

usage: analysis/sid_category_share.py SIDS.h5 ITEMS.jsonl [--perms N] [--seed S] [--json]
"""
import argparse
import json
import sys

import h5py
import numpy as np


def shared_share(groups, codes):
    """Share of items with another item of the same (group, code)."""
    keys = groups.astype(np.int64) * (int(codes.max()) + 1) + codes
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).mean())


def pair_precision(groups, codes):
    """Of the item pairs with the same code, the share that also has the same group."""
    def pairs(keys):
        _, counts = np.unique(keys, return_counts=True)
        return float((counts * (counts - 1) // 2).sum())
    both = groups.astype(np.int64) * (int(codes.max()) + 1) + codes
    total = pairs(codes)
    return pairs(both) / total if total else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sids")
    ap.add_argument("items")
    ap.add_argument("--perms", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    codes = h5py.File(a.sids, "r")["/sid/codes"][()].astype(np.int64)
    n, levels = codes.shape
    leaf = [None] * n
    with open(a.items) as f:
        for line in f:
            r = json.loads(line)
            i = int(r["item_id"]) - 1
            if 0 <= i < n:
                cats = r.get("categories") or []
                leaf[i] = cats[-1] if cats else ""
    if any(c is None for c in leaf):
        sys.exit(f"{a.items}: {sum(c is None for c in leaf)} of {n} items have no record")
    names, groups = np.unique(np.array(leaf, dtype=object).astype(str), return_inverse=True)
    rng = np.random.default_rng(a.seed)
    out = {"items": n, "leaf_categories": len(names),
           "items_in_shared_leaf": float((np.bincount(groups)[groups] > 1).mean()), "prefix": []}
    for depth in range(1, levels + 1):
        # a prefix of depth d as one integer (mixed radix)
        prefix = np.zeros(n, dtype=np.int64)
        for l in range(depth):
            prefix = prefix * (int(codes[:, l].max()) + 1) + codes[:, l]
        real = shared_share(groups, prefix)
        rand = float(np.mean([shared_share(groups, rng.permutation(prefix)) for _ in range(a.perms)]))
        perm = [rng.permutation(prefix) for _ in range(a.perms)]
        out["prefix"].append({"levels": depth, "sid_share": real, "random_share": rand, "ratio": real / rand if rand else None,
                              "pair_precision": pair_precision(groups, prefix),
                              "random_pair_precision": float(np.mean([pair_precision(groups, q) for q in perm]))})
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{n} items, {len(names)} leaf categories; {100 * out['items_in_shared_leaf']:.1f}% of items share their leaf with another item")
    for p in out["prefix"]:
        print(f"levels 1..{p['levels']}: {100 * p['sid_share']:.1f}% of items share the code prefix with an item of the same leaf "
              f"category; random codes of the same sizes: {100 * p['random_share']:.1f}% (x{p['ratio']:.2f}); "
              f"pairs sharing the prefix in the same leaf: {100 * p['pair_precision']:.1f}% "
              f"(random: {100 * p['random_pair_precision']:.1f}%)")


if __name__ == "__main__":
    main()
