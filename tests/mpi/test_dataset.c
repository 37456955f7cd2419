/* dataset: a file written by P ranks reads back exactly on P ranks, each rank its own users
 * and items; leave-one-out split; a failed write leaves no file. */
#include "check.h"
#include "dataset.h"
#include "h5io.h"
#include "rng.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { U = 37, V = 23, D = 5 };

typedef struct { int64_t offsets[U + 1], user_ids[U]; int32_t items[U * 12]; float emb[V * D]; char *texts[V]; } Fixture;

static void make_fixture(Fixture *fx) {
    fx->offsets[0] = 0;
    for (int u = 0; u < U; u++) {
        int len = 1 + (int)rng_below(7, 1, (uint64_t)u, 11);
        fx->user_ids[u] = 1000 + u;
        for (int k = 0; k < len; k++) fx->items[fx->offsets[u] + k] = (int32_t)rng_below(7, 2, (uint64_t)(u * 100 + k), V);
        fx->offsets[u + 1] = fx->offsets[u] + len;
    }
    for (int i = 0; i < V * D; i++) fx->emb[i] = (float)rng_normal(7, 3, (uint64_t)i);
    for (int i = 0; i < V; i++) fx->texts[i] = xsprintf("item %d \xc3\xa9", i);
}

static char *shared_tmp_path(const char *stem) {
    /* rank 0 picks the name, everyone uses it */
    char buf[256] = "";
    if (comm_rank() == 0) snprintf(buf, sizeof buf, "/tmp/car_test_%s_%d.h5", stem, (int)getpid());
    comm_bcast(buf, sizeof buf, 0);
    return xstrdup(buf);
}

static void write_fixture(const Fixture *fx, const char *path) {
    int64_t lo, hi;
    comm_split_range(V, comm_size(), comm_rank(), &lo, &hi);
    const char *k[] = {"created_by"}, *v[] = {"test"};
    DatasetContent c = {.n_users = U, .n_items = V, .offsets = fx->offsets, .user_ids = fx->user_ids, .items = fx->items,
                        .dim = D, .item_lo = lo, .item_hi = hi, .embedding = fx->emb + lo * D, .texts = fx->texts,
                        .n_attrs = 1, .attr_keys = k, .attr_values = v};
    dataset_write(path, &c);
}

static void test_roundtrip(void) {
    Fixture fx;
    make_fixture(&fx);
    char *path = shared_tmp_path("dataset");
    write_fixture(&fx, path);
    char *partial = h5io_partial_name(path);
    CHECK_MSG(!file_exists(partial), "partial file %s left behind", partial);
    Dataset ds;
    dataset_open(&ds, path);
    CHECK(ds.n_users == U && ds.n_items == V && ds.dim == D && ds.n_interactions == fx.offsets[U]);
    UserSlice s;
    dataset_read_my_users(&ds, &s);
    int64_t lo, hi;
    comm_split_range(U, comm_size(), comm_rank(), &lo, &hi);
    CHECK(s.lo == lo && s.hi == hi);
    for (int64_t u = lo; u < hi; u++) {
        int64_t n = fx.offsets[u + 1] - fx.offsets[u];
        CHECK(s.offsets[u - lo + 1] - s.offsets[u - lo] == n);
        CHECK(memcmp(s.items + s.offsets[u - lo], fx.items + fx.offsets[u], sizeof(int32_t) * (size_t)n) == 0);
    }
    /* any range, not only one's own */
    UserSlice all;
    dataset_read_users(&ds, 0, U, &all);
    CHECK(memcmp(all.items, fx.items, sizeof(int32_t) * (size_t)fx.offsets[U]) == 0);
    float emb[V * D];
    dataset_read_embeddings(&ds, 3, 10, emb);
    CHECK(memcmp(emb, fx.emb + 3 * D, sizeof(float) * 7 * D) == 0);
    char *created = h5io_attr_read_str(ds.file, "/", "created_by");
    CHECK(created && strcmp(created, "test") == 0);
    free(created);
    dataset_close(&ds);
    if (comm_rank() == 0) {
        int64_t n;
        char **texts = h5io_read_strings_serial(path, "/items/text", &n);
        CHECK(n == V && strcmp(texts[5], fx.texts[5]) == 0);
        for (int64_t i = 0; i < n; i++) free(texts[i]);
        free(texts);
    }
    user_slice_free(&s);
    user_slice_free(&all);
    comm_barrier();
    if (comm_rank() == 0) unlink(path);
    for (int i = 0; i < V; i++) free(fx.texts[i]);
    free(partial);
    free(path);
}

static void test_split(void) {
    int32_t seq[] = {10, 11, 12, 13, 14, 15};
    const int32_t *h;
    int64_t n;
    int32_t t;
    CHECK(dataset_split(seq, 6, SPLIT_TEST, 20, &h, &n, &t) && t == 15 && n == 5 && h == seq);
    CHECK(dataset_split(seq, 6, SPLIT_VALID, 20, &h, &n, &t) && t == 14 && n == 4 && h == seq);
    CHECK(dataset_split(seq, 6, SPLIT_TRAIN, 20, &h, &n, &t) && n == 4 && h == seq && t == -1);
    CHECK(dataset_split(seq, 6, SPLIT_TEST, 2, &h, &n, &t) && t == 15 && n == 2 && h == seq + 3);
    CHECK(dataset_split(seq, 6, SPLIT_VALID, 2, &h, &n, &t) && t == 14 && n == 2 && h == seq + 2);
    CHECK(dataset_split(seq, 6, SPLIT_TRAIN, 2, &h, &n, &t) && n == 3 && h == seq + 1); /* 2 inputs + their next */
    CHECK(!dataset_split(seq, 3, SPLIT_TRAIN, 20, &h, &n, &t));                        /* one train item: no pair */
    CHECK(dataset_split(seq, 3, SPLIT_VALID, 20, &h, &n, &t) && n == 1 && t == 11);
    CHECK(!dataset_split(seq, 2, SPLIT_VALID, 20, &h, &n, &t));
    CHECK(dataset_split(seq, 2, SPLIT_TEST, 20, &h, &n, &t) && n == 1 && t == 11);
    CHECK(!dataset_split(seq, 1, SPLIT_TEST, 20, &h, &n, &t));
}

static void test_range_owner(void) {
    for (int P = 1; P <= 9; P++)
        for (int64_t n = 0; n < 40; n++)
            for (int64_t i = 0; i < n; i++) {
                int64_t lo, hi;
                int r = comm_range_owner(n, P, i);
                comm_split_range(n, P, r, &lo, &hi);
                CHECK_MSG(lo <= i && i < hi, "owner of %lld in %lld over %d parts: %d [%lld, %lld)", (long long)i,
                          (long long)n, P, r, (long long)lo, (long long)hi);
            }
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_dataset");
    RUN_TEST(test_roundtrip);
    RUN_TEST(test_split);
    RUN_TEST(test_range_owner);
    return check_finish();
}
