#!/usr/bin/env bash
# car_synth: the files, their formats, determinism, the planted structure, and bad input.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3

# check_data NAME DIR USERS ITEMS MIN_LEN MAX_LEN: formats, counts, ranges and the planted structure.
check_data() {
    local name=$1 dir=$2
    local out
    if out=$("$PY" - "$dir" "$3" "$4" "$5" "$6" <<'PYEOF' 2>&1
import json, sys
import numpy as np
d, U, V, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
errors = []
def expect(cond, msg):
    if not cond: errors.append(msg)
t = json.load(open(d + "/truth.json"))
p = t["params"]
expect(p["users"] == U and p["items"] == V, "truth params %s" % p)
# items.jsonl: every id 1..V exactly once, with the fields and a non-empty text
items = {}
for n, line in enumerate(open(d + "/items.jsonl"), 1):
    o = json.loads(line)
    expect(o["item_id"] not in items, "item %s twice" % o["item_id"])
    items[o["item_id"]] = o
    expect(isinstance(o["title"], str) and o["title"] and isinstance(o["brand"], str) and o["brand"], "item %d title/brand" % n)
    expect(isinstance(o["price"], float) and o["price"] > 0, "item %d price" % n)
    c = o["categories"]
    expect(isinstance(c, list) and len(c) == 3 and c[0] == "Synth" and all(isinstance(s, str) and s for s in c),
           "item %d categories %s" % (n, c))
    head = "Title: %s; Brand: %s; Categories: %s; Price: " % (o["title"], o["brand"], ", ".join(c))
    expect(o["text"].startswith(head), "item %d text %r" % (n, o["text"]))
expect(sorted(items) == list(range(1, V + 1)), "item ids are not exactly 1..%d" % V)
if errors:
    sys.exit("\n".join(errors[:10]))
# the hierarchy in truth.json is the one in the records
S, B = p["subcategories"], p["brands"]
cat, sub, brand = np.array(t["item_category"]), np.array(t["item_subcategory"]), np.array(t["item_brand"])
for i in range(1, V + 1):
    o = items[i]
    expect(o["categories"][1] == t["category_names"][cat[i - 1]] and o["categories"][2] == t["subcategory_names"][sub[i - 1]]
           and o["brand"] == t["brand_names"][brand[i - 1]] and sub[i - 1] // S == cat[i - 1] and brand[i - 1] // B == sub[i - 1],
           "item %d disagrees with truth.json" % i)
expect(len(set(brand.tolist())) == p["categories"] * S * B, "some brand has no item")
# sequences.txt: users 1..U in order, ids in range, lengths in [lo, hi], no immediate repeat
seqs = []
for n, line in enumerate(open(d + "/sequences.txt"), 1):
    f = list(map(int, line.split()))
    expect(f[0] == n, "line %d has user %d" % (n, f[0]))
    s = f[1:]
    expect(lo <= len(s) <= hi, "user %d has %d items" % (n, len(s)))
    expect(all(1 <= x <= V for x in s), "user %d has an item out of range" % n)
    expect(all(a != b for a, b in zip(s, s[1:])), "user %d repeats an item" % n)
    seqs.append(s)
expect(len(seqs) == U, "%d users, expected %d" % (len(seqs), U))
expect(sum(map(len, seqs)) == t["stats"]["interactions"], "interaction count differs from truth.json")
# planted structure: consecutive pairs in one subcategory / on a planted link, far above chance
links = [set(l) for l in t["item_links"]]
expect(all(1 <= len(l) <= p["max_links"] and all(1 <= x <= V and x != i + 1 for x in l) for i, l in enumerate(links)), "bad links")
pairs = [(a, b) for s in seqs for a, b in zip(s, s[1:])]
flat = np.array([x for s in seqs for x in s]) - 1
def chance(labels, n):  # two draws from the interaction distribution share a label
    share = np.bincount(labels[flat], minlength=n) / len(flat)
    return (share ** 2).sum()
chance_sub, chance_cat = chance(sub, len(t["subcategory_names"])), chance(cat, len(t["category_names"]))
chance_link = np.mean([len(l) for l in links]) / V
same_sub = np.mean([sub[a - 1] == sub[b - 1] for a, b in pairs])
same_cat = np.mean([cat[a - 1] == cat[b - 1] for a, b in pairs])
linked = np.mean([b in links[a - 1] for a, b in pairs])
# observed ~ chance + planted * (1 - chance): ask for 70% of the planted part
w = p["weights"]
planted_sub = w["drift"] * (1 - p["drift_category"] if S > 1 else 1)
expect(same_sub > chance_sub + 0.7 * planted_sub * (1 - chance_sub),
       "same-subcategory share %.3f, chance %.3f, planted %.3f" % (same_sub, chance_sub, planted_sub))
expect(same_cat > chance_cat + 0.7 * w["drift"] * (1 - chance_cat), "same-category share %.3f, chance %.3f" % (same_cat, chance_cat))
expect(linked > chance_link + 0.7 * w["link"], "planted-link share %.3f, chance %.4f" % (linked, chance_link))
# a TF-IDF encoder recovers the hierarchy: an item's nearest text is in its subcategory
texts = [set(items[i]["text"].replace(";", " ").replace(",", " ").replace(":", " ").lower().split()) for i in range(1, V + 1)]
vocab = {w: k for k, w in enumerate(sorted(set().union(*texts)))}
X = np.zeros((V, len(vocab)))
for i, ws in enumerate(texts):
    X[i, [vocab[w] for w in ws]] = 1
X *= np.log(V / X.sum(0))
X /= np.linalg.norm(X, axis=1, keepdims=True)
sim = X @ X.T
np.fill_diagonal(sim, -1)
nn_same = (sub[sim.argmax(1)] == sub).mean()
expect(nn_same > 0.9, "nearest TF-IDF neighbour in the same subcategory for only %.3f of items" % nn_same)
print("same subcategory %.3f (chance %.3f), same category %.3f (chance %.3f), planted link %.3f (chance %.4f), "
      "TF-IDF neighbour same subcategory %.3f" % (same_sub, chance_sub, same_cat, chance_cat, linked, chance_link, nn_same))
if errors:
    print("\n".join(errors[:10]))
    sys.exit(1)
PYEOF
); then pass "$name: $out"; else fail "$name" "$out"; fi
}

D="$TMP/default"
expect_ok "default run" -- "$BIN/car_synth" --out "$D/sub/dir"
D="$D/sub/dir"
if [ -s "$D/sequences.txt" ] && [ -s "$D/items.jsonl" ] && [ -s "$D/truth.json" ] && ! ls "$D"/*.partial >/dev/null 2>&1; then
    pass "files written, no partial left"
else fail "files written, no partial left" "$(ls -la "$D" 2>&1)"; fi
if grep -q "2000 users, 1000 items" "$TMP/out.txt" && grep -q "mean length" "$TMP/out.txt"; then pass "summary printed"
else fail "summary printed" "$(cat "$TMP/out.txt")"; fi
check_data "default data" "$D" 2000 1000 5 20

expect_ok "same seed again" -- "$BIN/car_synth" --out "$TMP/again"
if cmp -s "$D/sequences.txt" "$TMP/again/sequences.txt" && cmp -s "$D/items.jsonl" "$TMP/again/items.jsonl" &&
   cmp -s "$D/truth.json" "$TMP/again/truth.json"; then pass "same seed, byte-identical files"
else fail "same seed, byte-identical files"; fi
expect_ok "2 ranks" -- mpirun -n 2 "$BIN/car_synth" --out "$TMP/ranks2"
if cmp -s "$D/sequences.txt" "$TMP/ranks2/sequences.txt" && cmp -s "$D/items.jsonl" "$TMP/ranks2/items.jsonl"; then
    pass "2 ranks write the same files"
else fail "2 ranks write the same files"; fi
expect_ok "other seed" -- "$BIN/car_synth" --out "$TMP/seed2" --seed 2
if ! cmp -s "$D/sequences.txt" "$TMP/seed2/sequences.txt" && ! cmp -s "$D/items.jsonl" "$TMP/seed2/items.jsonl"; then
    pass "other seed, other files"
else fail "other seed, other files"; fi

# every flag is honoured
S="$TMP/small"
expect_ok "small run with flags" -- "$BIN/car_synth" --out "$S" --users 300 --items 240 --categories 5 --subcategories 3 \
    --brands 2 --min-len 6 --max-len 9 --drift 2 --link 2 --popularity 1 --drift-category 0.3 --links 2 --zipf 0.8 --noise 5 --seed 7
check_data "small data" "$S" 300 240 6 9
if "$PY" -c "
import json, sys
t = json.load(open('$S/truth.json')); p = t['params']
assert (p['categories'], p['subcategories'], p['brands'], p['max_links'], p['noise_words'], p['seed']) == (5, 3, 2, 2, 5, 7), p
assert abs(p['weights']['drift'] - 0.4) < 1e-9 and abs(p['zipf'] - 0.8) < 1e-9 and p['drift_category'] == 0.3, p
assert len(t['category_names']) == 5 and len(t['subcategory_names']) == 15 and len(t['brand_names']) == 30
titles = [json.loads(l)['title'] for l in open('$S/items.jsonl')]
assert all(len(x.split()) == 1 + 4 + 5 for x in titles), titles[0]   # brand, 2+2 level words, 5 noise words
"; then pass "flags reach truth.json and titles"; else fail "flags reach truth.json and titles"; fi

# an output that cannot be written: nothing under a final name, no partial left
P="$TMP/blocked"
mkdir -p "$P/items.jsonl.partial"
"$BIN/car_synth" --out "$P" >"$TMP/out.txt" 2>"$TMP/err.txt"
if [ $? -ne 0 ] && grep -q "^car_synth: error: cannot create $P/items.jsonl.partial" "$TMP/err.txt" &&
   [ ! -e "$P/sequences.txt" ] && [ ! -e "$P/sequences.txt.partial" ] && [ ! -e "$P/items.jsonl" ] && [ ! -e "$P/truth.json" ]; then
    pass "write failure leaves no file"
else fail "write failure leaves no file" "$(cat "$TMP/err.txt")" "$(ls "$P")"; fi

B="$TMP/bad"
E='^car_synth: error: '
expect_error "users not a number" "$E--users expects an integer" "$B" -- "$BIN/car_synth" --out "$B" --users abc
expect_error "users zero" "$E--users expects an integer in \[1, " "$B" -- "$BIN/car_synth" --out "$B" --users 0
expect_error "unknown flag" "${E}unknown option --colour" "$B" -- "$BIN/car_synth" --out "$B" --colour red
expect_error "missing --out" "$E--out DIR is required" - -- "$BIN/car_synth" --users 10
expect_error "missing value" "${E}option --seed needs a value" "$B" -- "$BIN/car_synth" --out "$B" --seed
expect_error "weights zero" "$E--drift \+ --link \+ --popularity must be positive" "$B" -- \
    "$BIN/car_synth" --out "$B" --drift 0 --link 0 --popularity 0
expect_error "negative weight" "$E--link expects a number" "$B" -- "$BIN/car_synth" --out "$B" --link -1
expect_error "min-len below 5" "$E--min-len expects an integer in \[5, " "$B" -- "$BIN/car_synth" --out "$B" --min-len 4
expect_error "max-len below min-len" "$E--max-len must be in" "$B" -- "$BIN/car_synth" --out "$B" --min-len 9 --max-len 8
expect_error "too few items for the brands" "${E}categories x subcategories x brands = 8 x 4 x 3 = 96 exceeds --items 50" "$B" -- \
    "$BIN/car_synth" --out "$B" --items 50
expect_error "drift-category above 1" "$E--drift-category expects a number in \[0, 1\]" "$B" -- \
    "$BIN/car_synth" --out "$B" --drift-category 1.5
expect_error "stray argument" "${E}unexpected argument 'extra'" "$B" -- "$BIN/car_synth" --out "$B" extra
expect_error "out is a file" "${E}cannot create directory .*: Not a directory" - -- "$BIN/car_synth" --out "$D/items.jsonl"
expect_error "out under a file" "${E}cannot create directory" - -- "$BIN/car_synth" --out "$D/items.jsonl/x"
if "$BIN/car_synth" --help >"$TMP/out.txt" 2>&1 && grep -q -- "--drift-category" "$TMP/out.txt" &&
   grep -q "^usage: car_synth --out DIR" "$TMP/out.txt"; then
    pass "--help"
else fail "--help" "$(head -3 "$TMP/out.txt")"; fi
finish
