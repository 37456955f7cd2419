/* sid stage: computes sids.h5 and sid_report.json, reuses them while config and embeddings
 * match, recomputes when either changes, skips at sid.levels = 0; the embedding hash does not
 * depend on the number of ranks. (tests/cli/test_sid.sh runs it through car_train.) */
#include "check.h"
#include "config.h"
#include "dataset.h"
#include "h5io.h"
#include "rng.h"
#include "sid.h"
#include "util.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { U = 50, V = 300, D = 16 };

static char *tmp_dir;

/* V items from 8 blobs (data_seed picks the data); 50 users of 4 items */
static void write_dataset(const char *path, uint64_t data_seed) {
    static int64_t offsets[U + 1], user_ids[U];
    static int32_t items[U * 4];
    static float emb[V * D];
    static char *texts[V];
    for (int u = 0; u <= U; u++) offsets[u] = 4 * u;
    for (int u = 0; u < U; u++) {
        user_ids[u] = u + 1;
        for (int k = 0; k < 4; k++) items[u * 4 + k] = (int32_t)((u * 7 + k * 13) % V);
    }
    for (int i = 0; i < V; i++) {
        int blob = (int)rng_below(data_seed, 1, (uint64_t)i, 8);
        for (int d = 0; d < D; d++)
            emb[i * D + d] = (float)(3.0 * rng_normal(data_seed, 2, (uint64_t)(blob * D + d)) +
                                     0.3 * rng_normal(data_seed, 3, (uint64_t)(i * D + d)));
        if (!texts[i]) texts[i] = xsprintf("item %d", i);
    }
    int64_t lo, hi;
    comm_split_range(V, comm_size(), comm_rank(), &lo, &hi);
    DatasetContent c = {.n_users = U, .n_items = V, .offsets = offsets, .user_ids = user_ids, .items = items, .dim = D,
                        .item_lo = lo, .item_hi = hi, .embedding = emb + lo * D, .texts = texts};
    dataset_write(path, &c);
}

static void load_config(CarConfig *cfg, const char *run_dir, int n_ov, char **ov) {
    char *cfg_path = xsprintf("%s/sid_%d.cfg", tmp_dir, comm_rank());
    char *text = xsprintf("data = { path = \"%s/dataset.h5\"; };\n"
                          "sid = { levels = 2; codebook = [8, 4]; iters = 30; tol = 1e-6; seed = 5; };\n"
                          "run = { dir = \"%s\"; };\n", tmp_dir, run_dir);
    FILE *f = fopen(cfg_path, "w");
    fputs(text, f);
    fclose(f);
    char *err = config_parse(cfg, cfg_path, n_ov, ov);
    CHECK_MSG(err == NULL, "%s", err ? err : "");
    free(err);
    unlink(cfg_path);
    free(cfg_path);
    free(text);
}

/* Whole /sid/codes read back, every code in range, and the row split read through sid_load_codes. */
static void check_codes(const char *run_dir, int levels, const int *codebook) {
    char *path = xsprintf("%s/sids.h5", run_dir);
    hid_t f = h5io_open(path, 0);
    int64_t dims[2];
    CHECK(h5io_shape(f, "/sid/codes", dims, 2) == 2 && dims[0] == V && dims[1] == levels);
    int32_t *all = xmalloc(sizeof(int32_t) * V * levels);
    h5io_read_all(f, "/sid/codes", H5T_NATIVE_INT32, all);
    for (int l = 0; l < levels; l++) {
        char name[64];
        snprintf(name, sizeof name, "/sid/centroids/level_%d", l + 1);
        CHECK(h5io_shape(f, name, dims, 2) == 2 && dims[0] == codebook[l] && dims[1] == D);
    }
    int64_t seed = 0;
    CHECK(h5io_attr_read_i64(f, "/", "seed", &seed));
    h5io_close(f);
    int bad = 0;
    for (int i = 0; i < V * levels; i++) bad += all[i] < 0 || all[i] >= codebook[i % levels];
    CHECK_MSG(bad == 0, "%d codes out of range", bad);
    int64_t lo, hi;
    comm_split_range(V, comm_size(), comm_rank(), &lo, &hi);
    int32_t *mine = xmalloc(sizeof(int32_t) * (size_t)((hi - lo) * levels + 1));
    sid_load_codes(run_dir, V, lo, hi, levels, mine);
    CHECK(memcmp(mine, all + lo * levels, sizeof(int32_t) * (size_t)((hi - lo) * levels)) == 0);
    free(mine);
    free(all);
    free(path);
}

static int64_t file_mtime_ns(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    return (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
}

static void test_compute_reuse_recompute(void) {
    char *data = xsprintf("%s/dataset.h5", tmp_dir), *run = xsprintf("%s/run/a", tmp_dir);
    char *sids = xsprintf("%s/sids.h5", run), *report = xsprintf("%s/sid_report.json", run);
    write_dataset(data, 1);
    CarConfig cfg;
    load_config(&cfg, run, 0, NULL);
    int codebook[2] = {8, 4};
    CHECK(sid_stage_run(&cfg) == 1); /* run.dir does not exist yet: made */
    CHECK(file_exists(sids) && file_exists(report));
    check_codes(run, 2, codebook);
    /* the report is JSON with the numbers of each level */
    json_error_t jerr;
    json_t *j = json_load_file(report, 0, &jerr);
    CHECK_MSG(j != NULL, "%s: %s", report, jerr.text);
    if (j) {
        json_t *l1 = json_array_get(json_object_get(j, "level"), 0);
        CHECK(json_integer_value(json_object_get(j, "n_items")) == V);
        CHECK(json_integer_value(json_object_get(l1, "used")) == 8);
        CHECK(json_real_value(json_object_get(l1, "sq_error_after")) < json_real_value(json_object_get(l1, "sq_error_before")));
        CHECK(json_object_get(json_object_get(j, "tuples"), "unique_share") != NULL);
        json_decref(j);
    }
    comm_barrier();
    int64_t t_first = file_mtime_ns(sids);
    CHECK(sid_stage_run(&cfg) == 0); /* same config, same data: reused */
    CHECK(file_mtime_ns(sids) == t_first);
    config_free(&cfg);

    char *seed2[] = {"sid.seed=6"};
    load_config(&cfg, run, 1, seed2);
    CHECK(sid_stage_run(&cfg) == 1); /* another seed: recomputed */
    int64_t seed = 0;
    hid_t f = h5io_open(sids, 0);
    CHECK(h5io_attr_read_i64(f, "/", "seed", &seed) && seed == 6);
    h5io_close(f);
    CHECK(sid_stage_run(&cfg) == 0);
    config_free(&cfg);

    char *cb[] = {"sid.seed=6", "sid.codebook=[8,5]"};
    load_config(&cfg, run, 2, cb);
    CHECK(sid_stage_run(&cfg) == 1); /* another codebook */
    codebook[1] = 5;
    check_codes(run, 2, codebook);
    comm_barrier();
    write_dataset(data, 2); /* other embeddings, same shapes: recomputed */
    CHECK(sid_stage_run(&cfg) == 1);
    CHECK(sid_stage_run(&cfg) == 0);
    comm_barrier();
    if (comm_rank() == 0) { /* a damaged file is recomputed, not an error */
        FILE *f2 = fopen(sids, "w");
        fputs("not hdf5", f2);
        fclose(f2);
    }
    comm_barrier();
    CHECK(sid_stage_run(&cfg) == 1);
    check_codes(run, 2, codebook);
    config_free(&cfg);

    char *none[] = {"sid.levels=0"};
    char *run0 = xsprintf("%s/run/none", tmp_dir), *sids0 = xsprintf("%s/sids.h5", run0);
    load_config(&cfg, run0, 1, none);
    CHECK(sid_stage_run(&cfg) == 0 && !file_exists(sids0)); /* UID-only: nothing to make */
    config_free(&cfg);
    free(data); free(run); free(sids); free(report); free(run0); free(sids0);
}

/* The hash of the embeddings is the same for every split of the rows. */
static void test_hash_split_independent(void) {
    float x[V * D];
    for (int i = 0; i < V * D; i++) x[i] = (float)rng_normal(3, 1, (uint64_t)i);
    uint64_t serial_rows[V];
    for (int i = 0; i < V; i++) serial_rows[i] = fnv1a64(FNV64_INIT, x + i * D, sizeof(float) * D);
    uint64_t want = fnv1a64(FNV64_INIT, serial_rows, sizeof serial_rows);
    int64_t lo, hi;
    comm_split_range(V, comm_size(), comm_rank(), &lo, &hi);
    CHECK(sid_embedding_hash(x + lo * D, hi - lo, D) == want);
    int last = comm_rank() == comm_size() - 1; /* all rows on the last rank */
    CHECK(sid_embedding_hash(x, last ? V : 0, D) == want);
    x[7] += 1.0f;
    CHECK(sid_embedding_hash(x + lo * D, hi - lo, D) != want);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_sid");
    char buf[256] = "";
    if (comm_rank() == 0) {
        snprintf(buf, sizeof buf, "/tmp/car_test_sid_XXXXXX");
        if (!mkdtemp(buf)) buf[0] = 0;
    }
    comm_bcast(buf, sizeof buf, 0);
    tmp_dir = buf;
    RUN_TEST(test_compute_reuse_recompute);
    RUN_TEST(test_hash_split_independent);
    comm_barrier();
    if (comm_rank() == 0) {
        char *cmd = xsprintf("rm -rf '%s'", tmp_dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
        free(cmd);
    }
    return check_finish();
}
