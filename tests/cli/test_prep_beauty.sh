#!/usr/bin/env bash
# car_prep on the real Amazon Beauty set at 1, 2 and 4 ranks: exact counts, sound embeddings
# that agree across rank counts, and text embeddings that carry meaning (nearest neighbours
# share category path elements far more often than random items).
source "$(dirname "$0")/lib.sh"
B=$SHARED_DATA/beauty
if [ ! -f "$B/sequences.txt" ]; then skip "Beauty checks" "$B absent"; finish; exit; fi
for n in 1 2 4; do
    expect_ok "car_prep Beauty -n $n" -- mpirun -n $n "$BIN/car_prep" --sequences "$B/sequences.txt" --items "$B/items.jsonl" --out "$TMP/beauty$n.h5"
done
out=$(/usr/bin/python3 - "$TMP" "$B/items.jsonl" <<'P' 2>&1
import sys, json, h5py, numpy as np
tmp, items_path = sys.argv[1], sys.argv[2]
ok = True
def check(name, cond, detail=""):
    global ok
    print(("ok   " if cond else "FAIL ") + name + (": " + detail if detail else ""))
    ok &= bool(cond)
embs = {}
for n in (1, 2, 4):
    f = h5py.File(f"{tmp}/beauty{n}.h5", "r")
    off, items, emb = f["/users/offsets"][:], f["/users/items"][:], f["/items/embedding"][:]
    check(f"-n {n}: 22,363 users, 12,101 items, 198,502 interactions",
          len(off) - 1 == 22363 and emb.shape[0] == 12101 and len(items) == 198502 and off[-1] == 198502,
          f"{len(off) - 1} / {emb.shape[0]} / {len(items)}")
    check(f"-n {n}: embeddings finite with unit norm", np.isfinite(emb).all() and np.abs(np.linalg.norm(emb, axis=1) - 1).max() < 1e-5)
    check(f"-n {n}: item ids in range", items.min() >= 0 and items.max() < 12101)
    embs[n] = emb
for n in (2, 4):
    d = np.abs(embs[n] - embs[1]).max()
    check(f"embeddings -n {n} equal -n 1 within 1e-4", d < 1e-4, f"max |diff| = {d:.2e}")
# meaning: category path elements below the root ("Beauty")
cats = []
for line in open(items_path):
    r = json.loads(line)
    paths = r.get("category_paths") or [r.get("categories") or []]
    cats.append({c for p in paths for c in p[1:]})
emb = embs[1].astype(np.float32)
nn = np.empty(len(emb), dtype=np.int64)
for s in range(0, len(emb), 2048):
    sim = emb[s:s + 2048] @ emb.T
    sim[np.arange(sim.shape[0]), np.arange(s, s + sim.shape[0])] = -np.inf
    nn[s:s + 2048] = sim.argmax(1)
rng = np.random.default_rng(1)
rnd = rng.integers(0, len(emb) - 1, len(emb))
rnd[rnd >= np.arange(len(emb))] += 1
share = lambda other: np.mean([bool(cats[i] & cats[j]) for i, j in enumerate(other)])
nn_rate, rnd_rate = share(nn), share(rnd)
print(f"nearest neighbour shares a category path element: {nn_rate:.3f}; random item: {rnd_rate:.3f}")
check("nearest neighbours share categories far more often than random items", nn_rate > 0.85 and nn_rate > rnd_rate + 0.3,
      f"{nn_rate:.3f} vs {rnd_rate:.3f}")
sys.exit(0 if ok else 1)
P
)
echo "$out"
count_checks "$out"
finish
