#include "dataset.h"
#include "comm.h"
#include "h5io.h"
#include "util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dataset_open(Dataset *ds, const char *path) {
    memset(ds, 0, sizeof *ds);
    ds->path = xstrdup(path);
    ds->file = h5io_open(path, 0);
    const char *need[] = {"/users/offsets", "/users/items", "/items/embedding"};
    for (int i = 0; i < 3; i++)
        if (!h5io_has(ds->file, need[i])) comm_fail("%s: not a CAR dataset: missing %s (make it with car_prep)", path, need[i]);
    int64_t d[2];
    h5io_shape(ds->file, "/users/offsets", d, 1);
    ds->n_users = d[0] - 1;
    h5io_shape(ds->file, "/users/items", d, 1);
    ds->n_interactions = d[0];
    if (h5io_shape(ds->file, "/items/embedding", d, 2) != 2) comm_fail("%s: /items/embedding must be 2-D", path);
    ds->n_items = d[0];
    ds->dim = (int)d[1];
    if (ds->n_users < 1 || ds->n_items < 1 || ds->dim < 1)
        comm_fail("%s: empty dataset (%lld users, %lld items, dim %d)", path, (long long)ds->n_users,
                  (long long)ds->n_items, ds->dim);
    int64_t ends[2];
    h5io_read_rows(ds->file, "/users/offsets", H5T_NATIVE_INT64, 0, 1, &ends[0]);
    h5io_read_rows(ds->file, "/users/offsets", H5T_NATIVE_INT64, ds->n_users, 1, &ends[1]);
    if (ends[0] != 0 || ends[1] != ds->n_interactions)
        comm_fail("%s: /users/offsets runs %lld..%lld but /users/items has %lld entries", path, (long long)ends[0],
                  (long long)ends[1], (long long)ds->n_interactions);
}

void dataset_close(Dataset *ds) {
    if (ds->file > 0) h5io_close(ds->file);
    free(ds->path);
    memset(ds, 0, sizeof *ds);
}

void dataset_read_users(const Dataset *ds, int64_t lo, int64_t hi, UserSlice *out) {
    int64_t n = hi - lo;
    out->lo = lo;
    out->hi = hi;
    out->offsets = xmalloc(sizeof(int64_t) * (size_t)(n + 1));
    h5io_read_rows(ds->file, "/users/offsets", H5T_NATIVE_INT64, lo, n + 1, out->offsets);
    int64_t base = out->offsets[0], count = out->offsets[n] - base;
    char *err = NULL;
    for (int64_t u = 0; u < n && !err; u++)
        if (out->offsets[u + 1] < out->offsets[u])
            err = xsprintf("%s: /users/offsets decreases at user %lld", ds->path, (long long)(lo + u));
    if (!err && (count < 0 || out->offsets[n] > ds->n_interactions))
        err = xsprintf("%s: /users/offsets out of range for users %lld..%lld", ds->path, (long long)lo, (long long)hi);
    comm_fail_if_any(err);
    for (int64_t u = 0; u <= n; u++) out->offsets[u] -= base;
    out->items = xmalloc(sizeof(int32_t) * (size_t)(count ? count : 1));
    /* rows [base, base+count) of the flat item list */
    h5io_read_rows(ds->file, "/users/items", H5T_NATIVE_INT32, base, count, out->items);
    for (int64_t i = 0; i < count && !err; i++)
        if (out->items[i] < 0 || out->items[i] >= ds->n_items)
            err = xsprintf("%s: /users/items[%lld] = %d is not an item id (0..%lld)", ds->path, (long long)(base + i),
                           out->items[i], (long long)ds->n_items - 1);
    comm_fail_if_any(err);
    free(err);
}

void dataset_read_my_users(const Dataset *ds, UserSlice *out) {
    int64_t lo, hi;
    comm_split_range(ds->n_users, comm_size(), comm_rank(), &lo, &hi);
    dataset_read_users(ds, lo, hi, out);
}

void dataset_read_embeddings(const Dataset *ds, int64_t lo, int64_t hi, float *out) {
    h5io_read_rows(ds->file, "/items/embedding", H5T_NATIVE_FLOAT, lo, hi - lo, out);
}

void user_slice_free(UserSlice *s) {
    free(s->offsets);
    free(s->items);
    memset(s, 0, sizeof *s);
}

/* index of the target (TEST, VALID) or one past the training part (TRAIN) */
static int64_t split_end(int64_t n, Split split) { return split == SPLIT_TEST ? n - 1 : n - 2; }

int dataset_split_exists(int64_t n, Split split) {
    /* TRAIN needs an input and a next item; VALID and TEST at least one history item */
    return split_end(n, split) >= (split == SPLIT_TRAIN ? 2 : 1);
}

int64_t dataset_split_len(int64_t n, Split split, int max_history) {
    if (!dataset_split_exists(n, split)) return 0;
    int64_t end = split_end(n, split), cap = split == SPLIT_TRAIN ? (int64_t)max_history + 1 : max_history;
    return end < cap ? end : cap;
}

int dataset_split(const int32_t *seq, int64_t n, Split split, int max_history, const int32_t **hist, int64_t *hist_len,
                  int32_t *target) {
    if (!dataset_split_exists(n, split)) return 0;
    int64_t end = split_end(n, split), keep = dataset_split_len(n, split, max_history);
    *hist = seq + end - keep;
    *hist_len = keep;
    *target = split == SPLIT_TRAIN ? -1 : seq[end];
    return 1;
}

void dataset_write(const char *path, const DatasetContent *c) {
    char *partial = h5io_partial_name(path);
    comm_cleanup_add(partial);
    hid_t f = h5io_create(partial);
    int P = comm_size(), r = comm_rank();
    int64_t ulo, uhi;
    comm_split_range(c->n_users, P, r, &ulo, &uhi);
    /* offsets: rank r writes rows [ulo, uhi) and the last rank the closing entry */
    int64_t dims[2] = {c->n_users + 1, 0};
    int64_t off_count = uhi - ulo + (r == P - 1 ? 1 : 0);
    h5io_write_rows(f, "/users/offsets", H5T_NATIVE_INT64, 1, dims, ulo, off_count, c->offsets + ulo);
    dims[0] = c->n_users;
    h5io_write_rows(f, "/users/ids", H5T_NATIVE_INT64, 1, dims, ulo, uhi - ulo, c->user_ids + ulo);
    dims[0] = c->offsets[c->n_users];
    h5io_write_rows(f, "/users/items", H5T_NATIVE_INT32, 1, dims, c->offsets[ulo], c->offsets[uhi] - c->offsets[ulo],
                    c->items + c->offsets[ulo]);
    dims[0] = c->n_items;
    dims[1] = c->dim;
    h5io_write_rows(f, "/items/embedding", H5T_NATIVE_FLOAT, 2, dims, c->item_lo, c->item_hi - c->item_lo, c->embedding);
    h5io_attr_write_str(f, "/", "format", "car-dataset-1");
    h5io_attr_write_i64(f, "/", "n_users", c->n_users);
    h5io_attr_write_i64(f, "/", "n_items", c->n_items);
    h5io_attr_write_i64(f, "/", "n_interactions", c->offsets[c->n_users]);
    for (int i = 0; i < c->n_attrs; i++) h5io_attr_write_str(f, "/", c->attr_keys[i], c->attr_values[i]);
    h5io_close(f);
    comm_barrier();
    if (r == 0) h5io_write_strings_serial(partial, "/items/text", c->texts, c->n_items);
    h5io_commit_partial(partial, path);
    free(partial);
}
