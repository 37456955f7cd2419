#!/usr/bin/env bash
# car_prep and car_train on bad inputs: each a one-line error, non-zero exit, nothing left behind.
source "$(dirname "$0")/lib.sh"
MPI="mpirun -n 2"

# a small valid input
cat >"$TMP/items.jsonl" <<'J'
{"item_id": 1, "text": "Title: red nail polish; Brand: OPI; Categories: Beauty, Nails"}
{"item_id": 2, "text": "Title: pink nail polish; Brand: OPI; Categories: Beauty, Nails"}
{"item_id": 3, "text": "Title: face cream; Brand: Nivea; Categories: Beauty, Skin"}
{"item_id": 4, "text": "Title: night face cream; Brand: Nivea; Categories: Beauty, Skin"}
{"item_id": 5, "text": "Title: shampoo for dry hair; Brand: Dove; Categories: Beauty, Hair"}
{"item_id": 6, "text": "Title: hair conditioner; Brand: Dove; Categories: Beauty, Hair"}
J
printf '1 1 2 3 4\n2 3 4 5 6\n3 5 6 1 2 3\n4 2 1 6\n' >"$TMP/seq.txt"

expect_ok "car_prep --help" -- "$BIN/car_prep" --help
expect_ok "car_prep small input, 2 ranks" -- $MPI "$BIN/car_prep" --sequences "$TMP/seq.txt" --items "$TMP/items.jsonl" --out "$TMP/ok.h5" --dim 4
if /usr/bin/python3 - "$TMP/ok.h5" <<'P'
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
off, items, emb = f["/users/offsets"][:], f["/users/items"][:], f["/items/embedding"][:]
assert list(off) == [0, 4, 8, 13, 16], off
assert list(items[:4]) == [0, 1, 2, 3] and list(items[13:]) == [1, 0, 5], items
assert emb.shape == (6, 4) and emb.dtype == np.float32
assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
assert list(f["/users/ids"][:]) == [1, 2, 3, 4]
t = f["/items/text"][:]
assert (t[0].decode() if isinstance(t[0], bytes) else t[0]).startswith("Title: red nail")
assert int(f.attrs["n_interactions"]) == 16
P
then pass "dataset file content (h5py)"; else fail "dataset file content (h5py)"; fi

# text + collaborative embedding: [sqrt(1-w) text, sqrt(w) collab], unit rows; w = 1: collab only
expect_ok "car_prep --collab-dim 3 --collab-weight 0.25" -- $MPI "$BIN/car_prep" --sequences "$TMP/seq.txt" \
    --items "$TMP/items.jsonl" --out "$TMP/col.h5" --dim 4 --collab-dim 3 --collab-weight 0.25 --collab-window 2
expect_ok "car_prep --collab-weight 1" -- $MPI "$BIN/car_prep" --sequences "$TMP/seq.txt" \
    --items "$TMP/items.jsonl" --out "$TMP/col1.h5" --dim 4 --collab-dim 3 --collab-weight 1
out=$(/usr/bin/python3 - "$TMP" <<'P' 2>&1
import sys, h5py, numpy as np
t = sys.argv[1]
def check(name, cond, detail=""): print(("ok   " if cond else "FAIL ") + name + (": " + detail if detail else ""))
text = h5py.File(t + "/ok.h5", "r")["/items/embedding"][:]
f = h5py.File(t + "/col.h5", "r"); both = f["/items/embedding"][:]
only = h5py.File(t + "/col1.h5", "r")["/items/embedding"][:]
check("collab: width text + collab", both.shape == (6, 7) and only.shape == (6, 3), f"{both.shape} {only.shape}")
check("collab: text part is sqrt(0.75) of the text embedding", np.allclose(both[:, :4], np.sqrt(0.75) * text, atol=1e-6))
check("collab: collab part is sqrt(0.25) of the collab-only embedding", np.allclose(both[:, 4:], 0.5 * only, atol=1e-6))
check("collab: unit rows", np.allclose(np.linalg.norm(both, axis=1), 1, atol=1e-5))
enc = f.attrs["encoder"]; enc = enc.decode() if isinstance(enc, bytes) else enc
check("collab: recorded in the encoder attribute", "collab weight 0.25" in enc and "window 2" in enc, enc)
P
)
count_checks "$out"

# --fields: the field "text" alone at weight 1 is the default encoder, bit for bit
expect_ok "car_prep --fields text" -- $MPI "$BIN/car_prep" --sequences "$TMP/seq.txt" --items "$TMP/items.jsonl" \
    --out "$TMP/fields.h5" --dim 4 --fields text
out=$(/usr/bin/python3 - "$TMP" <<'P' 2>&1
import sys, h5py, numpy as np
t = sys.argv[1]
a = h5py.File(t + "/ok.h5", "r")["/items/embedding"][:]
b = h5py.File(t + "/fields.h5", "r")["/items/embedding"][:]
print(("ok   " if np.array_equal(a, b) else "FAIL ") + "--fields text equals the default embedding bit for bit")
P
)
count_checks "$out"

run_prep() { $MPI "$BIN/car_prep" --sequences "$1" --items "$2" --out "$TMP/bad.h5" "${@:3}"; }
expect_error "bad --fields weight" "car_prep: error: --fields title:x: weight 'x' of field 'title' is not a number" \
    "$TMP/bad.h5" -- run_prep "$TMP/seq.txt" "$TMP/items.jsonl" --fields title:x
expect_error "bad --fields name" "car_prep: error: --fields Title: 'Title' is not a field name" "$TMP/bad.h5" -- \
    run_prep "$TMP/seq.txt" "$TMP/items.jsonl" --fields Title
expect_error "repeated --fields name" "car_prep: error: --fields title,title: field 'title' given twice" "$TMP/bad.h5" -- \
    run_prep "$TMP/seq.txt" "$TMP/items.jsonl" --fields title,title
expect_error "bad --collab-weight" "car_prep: error: --collab-weight 1.5: expected a number in \[0, 1\]" "$TMP/bad.h5" -- \
    run_prep "$TMP/seq.txt" "$TMP/items.jsonl" --collab-dim 3 --collab-weight 1.5
expect_error "missing sequences file" "car_prep: error: .*nope.txt: cannot open sequences file" "$TMP/bad.h5" -- run_prep "$TMP/nope.txt" "$TMP/items.jsonl"
expect_error "missing items file" "car_prep: error: .*nope.jsonl: cannot open items file" "$TMP/bad.h5" -- run_prep "$TMP/seq.txt" "$TMP/nope.jsonl"
printf '1 1 2 3\n2 3 x 5\n' >"$TMP/nonnum.txt"
expect_error "sequence line with a non-number" "car_prep: error: .*nonnum.txt:2: 'x' is not a number" "$TMP/bad.h5" -- run_prep "$TMP/nonnum.txt" "$TMP/items.jsonl"
printf '1 1 2 3\n2 3 7 5\n' >"$TMP/range.txt"
expect_error "item id out of range" "car_prep: error: .*range.txt:2: item id 7 out of range 1..6" "$TMP/bad.h5" -- run_prep "$TMP/range.txt" "$TMP/items.jsonl"
printf '1 1 2 3\n2\n' >"$TMP/empty.txt"
expect_error "user without items" "car_prep: error: .*empty.txt:2: user 2 has no items" "$TMP/bad.h5" -- run_prep "$TMP/empty.txt" "$TMP/items.jsonl"
sed '3s/"text": "[^"]*"/"title": "x"/' "$TMP/items.jsonl" >"$TMP/notext.jsonl"
expect_error "item without text" "car_prep: error: .*notext.jsonl:3: item 3 has no text" "$TMP/bad.h5" -- run_prep "$TMP/seq.txt" "$TMP/notext.jsonl"
expect_error "missing --out" "car_prep: error: --sequences, --items and --out are required" - -- "$BIN/car_prep" --sequences "$TMP/seq.txt"
expect_error "unknown option" "car_prep: error: unknown or incomplete option '--dimm'" - -- "$BIN/car_prep" --dimm 3
expect_error "bad --dim" "car_prep: error: --dim 0: expected an integer in" - -- "$BIN/car_prep" --sequences a --items b --out c --dim 0
expect_error "output directory missing" "car_prep: error: .*cannot create HDF5 file" "$TMP/nodir/x.h5" -- \
    $MPI "$BIN/car_prep" --sequences "$TMP/seq.txt" --items "$TMP/items.jsonl" --out "$TMP/nodir/x.h5"

# a failed run never damages an existing output
cp "$TMP/ok.h5" "$TMP/keep.h5"
$MPI "$BIN/car_prep" --sequences "$TMP/range.txt" --items "$TMP/items.jsonl" --out "$TMP/keep.h5" >/dev/null 2>&1
if cmp -s "$TMP/ok.h5" "$TMP/keep.h5" && [ ! -e "$TMP/keep.h5.partial" ]; then pass "failed run leaves existing output intact"; else fail "failed run leaves existing output intact"; fi

# truncated HDF5 files: as a dataset and as imported embeddings
head -c 3000 "$TMP/ok.h5" >"$TMP/trunc.h5"
expect_error "truncated HDF5 embeddings" "car_prep: error: .*trunc.h5.*(truncated|cannot open)" "$TMP/bad.h5" -- \
    run_prep "$TMP/seq.txt" "$TMP/items.jsonl" --embeddings "$TMP/trunc.h5"
cat >"$TMP/run.cfg" <<C
data = { path = "$TMP/trunc.h5"; };
run = { dir = "$TMP/run"; stages = "sid"; };
C
expect_error "truncated HDF5 dataset" "car_train: error: .*trunc.h5: cannot open as HDF5 \(truncated" "$TMP/run/sids.h5" -- $MPI "$BIN/car_train" "$TMP/run.cfg"

# config errors name file, line and key; nothing is written
printf 'data = { path = "%s"; };\nrun = { dir = "%s"; };\nsid = {\n  levles = 3;\n};\n' "$TMP/ok.h5" "$TMP/cfgrun" >"$TMP/k.cfg"
expect_error "unknown config key" "car_train: error: .*k.cfg:4: unknown key 'sid.levles'" "$TMP/cfgrun" -- $MPI "$BIN/car_train" "$TMP/k.cfg"
printf 'data = { path = "%s"; };\nrun = { dir = "%s"; };\ntrain = { lr = "fast"; };\n' "$TMP/ok.h5" "$TMP/cfgrun" >"$TMP/t.cfg"
expect_error "wrong config type" "car_train: error: .*t.cfg:3: key 'train.lr' must be a number" "$TMP/cfgrun" -- $MPI "$BIN/car_train" "$TMP/t.cfg"
printf 'data = { path = "%s"; };\nrun = { dir = "%s"; };\nmodel = { dropout = 1.5; };\n' "$TMP/ok.h5" "$TMP/cfgrun" >"$TMP/r.cfg"
expect_error "config value out of range" "car_train: error: .*r.cfg:3: key 'model.dropout' = 1.5 is out of range \[0, 0.95\]" "$TMP/cfgrun" -- $MPI "$BIN/car_train" "$TMP/r.cfg"
printf 'data = { path = "%s"; };\nrun = { dir = "%s"; };\n' "$TMP/ok.h5" "$TMP/cfgrun" >"$TMP/good.cfg"
expect_error "bad override" "car_train: error: -o sid.levels=99: key 'sid.levels' = 99 is out of range" "$TMP/cfgrun" -- $MPI "$BIN/car_train" "$TMP/good.cfg" -o sid.levels=99
expect_error "unknown override key" "car_train: error: -o model.width=3: unknown key 'model.width'" "$TMP/cfgrun" -- $MPI "$BIN/car_train" "$TMP/good.cfg" -o model.width=3
expect_error "missing config file" "car_train: error: .*none.cfg: no such config file" - -- $MPI "$BIN/car_train" "$TMP/none.cfg"

# make data (scripts/prepare_amazon.sh): configs/<set>.prep chooses the flags; the dataset records
# its command; unchanged flags skip the set, changed flags make it again
REPO=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$TMP/amazon/tiny" "$TMP/cfgs" && cp "$TMP/seq.txt" "$TMP/amazon/tiny/sequences.txt" && cp "$TMP/items.jsonl" "$TMP/amazon/tiny/items.jsonl"
printf '# chosen on validation\n--dim 3   # narrow\n--collab-dim 2\n' >"$TMP/cfgs/tiny.prep"
prep() { BUILD="$(dirname "$BIN")" AMAZON_DIR="$TMP/amazon" SETS=tiny CAR_CONFIGS="$TMP/cfgs" CAR_DATA="$TMP/data" RANKS=2 \
    "$REPO/scripts/prepare_amazon.sh" 2>&1; }
out=$(prep)
dim() { /usr/bin/python3 -c "import h5py,sys; f=h5py.File(sys.argv[1],'r'); print(f['/items/embedding'].shape[1], f.attrs['command'].decode() if isinstance(f.attrs['command'], bytes) else f.attrs['command'])" "$TMP/data/tiny/dataset.h5" 2>&1; }
d=$(dim)
[[ $d == "5 car_prep --sequences "*"--dim 3 --collab-dim 2" ]] && pass "make data: configs/tiny.prep flags used and recorded" ||
    fail "make data: configs/tiny.prep flags used and recorded" "$d" "$out"
out=$(prep)
grep -q "up to date (car_prep flags: --dim 3 --collab-dim 2)" <<<"$out" && pass "make data: same flags, not made again" ||
    fail "make data: same flags, not made again" "$out"
touch -d '+1 minute' "$TMP/amazon/tiny/sequences.txt" "$TMP/amazon/tiny/items.jsonl"
out=$(prep)
grep -q "up to date" <<<"$out" && pass "make data: inputs copied afresh (newer mtime, same content), not made again" ||
    fail "make data: inputs copied afresh (newer mtime, same content), not made again" "$out"
echo "5 1 2 3" >>"$TMP/amazon/tiny/sequences.txt"
out=$(prep)
grep -q "^wrote .*5 users" <<<"$out" && pass "make data: changed inputs, made again" || fail "make data: changed inputs, made again" "$out"
echo "--dim 4" >"$TMP/cfgs/tiny.prep"
out=$(prep)
d=$(dim)
[[ $d == "4 "*"--dim 4" ]] && pass "make data: changed flags, made again" || fail "make data: changed flags, made again" "$d" "$out"
finish
