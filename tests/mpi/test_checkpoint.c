/* checkpoint: a replicated and a row-sharded arena round-trip exactly; a file loads into other
 * row layouts (what another rank count gives); latest, keep and leftover partial files; bad
 * files are errors naming the file and the tensor. */
#include "check.h"
#include "checkpoint.h"
#include "h5io.h"
#include "rng.h"
#include "util.h"
#include <ftw.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { D = 7, V = 29, POS = 11 };
enum { LAYOUT_EVEN, LAYOUT_ALL, LAYOUT_SKEWED, LAYOUT_OVERLAP, N_LAYOUTS, LAYOUT_GAP };
static const char *const layout_names[N_LAYOUTS] = {"even", "all", "skewed", "overlap"};
static const char *const NAMES[2] = {"params", "uid"};
static const char *const CONFIG = "model.d_model = 7;\ntrain.lr = 0.001;\n";

/* This rank's rows [lo, hi) of n under a layout: an even split (comm_split_range), every row
 * everywhere, a skewed split (rank 0 gets none when P > 1), even blocks grown to overlap, or
 * (a broken layout) even blocks less their last row. */
static void layout_rows(int layout, int64_t n, int64_t *lo, int64_t *hi) {
    int P = comm_size(), r = comm_rank();
    switch (layout) {
    case LAYOUT_ALL: *lo = 0, *hi = n; break;
    case LAYOUT_SKEWED: *lo = n * r * r / (P * P), *hi = n * (r + 1) * (r + 1) / (P * P); break;
    case LAYOUT_OVERLAP:
        comm_split_range(n, P, r, lo, hi);
        *hi = *hi + 3 < n ? *hi + 3 : n;
        break;
    case LAYOUT_GAP:
        comm_split_range(n, P, r, lo, hi);
        *hi = *hi > *lo ? *hi - 1 : *hi;
        break;
    default: comm_split_range(n, P, r, lo, hi);
    }
}

/* What the model's arenas look like: "params" replicated (w, b, pos), "uid" sharded by rows
 * (emb, head). Variants change the shape: w_cols, without b, with an extra tensor c. */
typedef struct { ParamArena params, uid; ParamArena *arenas[2]; } Fake;
typedef struct { int w_cols, no_b, with_c; } Variant;

static void fake_make(Fake *f, int layout, Variant var) {
    memset(f, 0, sizeof *f);
    arena_add(&f->params, "w", 5, var.w_cols ? var.w_cols : D, PARAM_MATRIX);
    if (!var.no_b) arena_add(&f->params, "b", 1, D, PARAM_BIAS);
    arena_add(&f->params, "pos", POS, D, PARAM_EMBEDDING);
    if (var.with_c) arena_add(&f->params, "c", 2, 2, PARAM_MATRIX);
    int64_t lo, hi;
    layout_rows(layout, V, &lo, &hi);
    arena_add_rows(&f->uid, "uid_emb", hi - lo, D, PARAM_EMBEDDING, lo, V);
    arena_add_rows(&f->uid, "uid_head", hi - lo, D, PARAM_MATRIX, lo, V);
    arena_alloc(&f->params);
    arena_alloc(&f->uid);
    f->arenas[0] = &f->params, f->arenas[1] = &f->uid;
}

static void fake_free(Fake *f) { arena_free(&f->params); arena_free(&f->uid); }

static float *buf(const ParamArena *a, int b) { return b == 0 ? a->params : b == 1 ? a->m : a->v; }

/* The value of (tensor, buffer, global row, col): the same whichever rank holds it. */
static float expected(const char *tensor, int b, int64_t grow, int64_t col, int64_t cols) {
    uint64_t stream = fnv1a64(FNV64_INIT, tensor, strlen(tensor)) ^ (uint64_t)b;
    return (float)rng_normal(42, stream, (uint64_t)(grow * cols + col));
}

static void fill(Fake *f) {
    for (int a = 0; a < 2; a++)
        for (int i = 0; i < f->arenas[a]->n; i++) {
            const ParamTensor *t = &f->arenas[a]->t[i];
            for (int b = 0; b < 3; b++)
                for (int64_t r = 0; r < t->rows; r++)
                    for (int64_t c = 0; c < t->cols; c++)
                        buf(f->arenas[a], b)[t->offset + r * t->cols + c] = expected(t->name, b, t->row0 + r, c, t->cols);
        }
}

static void zero(Fake *f, float m_value) {
    for (int a = 0; a < 2; a++) {
        ParamArena *ar = f->arenas[a];
        memset(ar->params, 0, sizeof(float) * ar->total);
        for (size_t k = 0; k < ar->total; k++) ar->m[k] = ar->v[k] = m_value;
    }
}

/* Elements that differ from expected (buffers 0..nb-1). */
static int64_t mismatches(const Fake *f, int nb) {
    int64_t bad = 0;
    for (int a = 0; a < 2; a++)
        for (int i = 0; i < f->arenas[a]->n; i++) {
            const ParamTensor *t = &f->arenas[a]->t[i];
            for (int b = 0; b < nb; b++)
                for (int64_t r = 0; r < t->rows; r++)
                    for (int64_t c = 0; c < t->cols; c++) {
                        float want = expected(t->name, b, t->row0 + r, c, t->cols);
                        bad += memcmp(&buf(f->arenas[a], b)[t->offset + r * t->cols + c], &want, sizeof want) != 0;
                    }
        }
    return bad;
}

static char *shared_tmp_dir(void) {
    char buf[256] = "";
    if (comm_rank() == 0) {
        snprintf(buf, sizeof buf, "/tmp/car_test_ckpt_%d_XXXXXX", (int)getpid());
        if (!mkdtemp(buf)) abort();
    }
    comm_bcast(buf, sizeof buf, 0);
    return xstrdup(buf);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static void remove_tree(char *dir) {
    comm_barrier();
    if (comm_rank() == 0) nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

static CheckpointState make_state(int64_t step) {
    CheckpointState st = {.step = step, .epoch = 3, .step_in_epoch = 17, .seed = 0xfedcba9876543210ULL,
                          .best_score = 0.123456789012345, .best_epoch = 2, .best_step = -1, .bad_evals = 1,
                          .config = CONFIG, .extra_json = "{\"valid\":[0.1,0.2]}"};
    return st;
}

static int contains(const char *s, const char *part) { return s && strstr(s, part); }

static void test_roundtrip(void) {
    char *dir = shared_tmp_dir();
    Fake f;
    fake_make(&f, LAYOUT_EVEN, (Variant){0});
    fill(&f);
    CheckpointState st = make_state(1234);
    checkpoint_save(dir, &st, f.arenas, NAMES, 2, 3);
    char *path = checkpoint_path(dir, 1234), *latest = checkpoint_latest(dir);
    CHECK_MSG(latest && strcmp(latest, path) == 0, "latest %s, expected %s", latest ? latest : "(null)", path);
    zero(&f, 0);
    CheckpointState got = {.config = CONFIG};
    checkpoint_load(path, &got, f.arenas, NAMES, 2);
    CHECK_MSG(mismatches(&f, 3) == 0, "%lld elements differ after the round trip", (long long)mismatches(&f, 3));
    CHECK(got.step == 1234 && got.epoch == 3 && got.step_in_epoch == 17 && got.seed == st.seed);
    CHECK(got.best_score == st.best_score && got.best_epoch == 2 && got.best_step == -1 && got.bad_evals == 1);
    CHECK(got.ranks == comm_size() && strlen(got.config_hash) == 16);
    CHECK(got.extra_json && strcmp(got.extra_json, st.extra_json) == 0);
    /* the file holds global shapes in global row order, whoever wrote which rows */
    hid_t h = h5io_open(path, 0);
    int64_t dims[2];
    CHECK(h5io_shape(h, "/uid/uid_emb/value", dims, 2) == 2 && dims[0] == V && dims[1] == D);
    float all[V * D];
    h5io_read_all(h, "/uid/uid_head/v", H5T_NATIVE_FLOAT, all);
    int bad = 0;
    for (int r = 0; r < V; r++)
        for (int c = 0; c < D; c++) bad += all[r * D + c] != expected("uid_head", 2, r, c, D);
    CHECK_MSG(bad == 0, "%d elements of /uid/uid_head/v are not where they belong", bad);
    char *fmt = h5io_attr_read_str(h, "/", "format");
    CHECK(fmt && strcmp(fmt, "car-checkpoint") == 0);
    h5io_close(h);
    /* -infinity (no best yet) and a state without extra JSON */
    st.best_score = -INFINITY, st.extra_json = NULL, st.step = 1300;
    checkpoint_save(dir, &st, f.arenas, NAMES, 2, 3);
    free(got.extra_json);
    char *p2 = checkpoint_path(dir, 1300);
    checkpoint_load(p2, &got, f.arenas, NAMES, 2);
    CHECK(isinf(got.best_score) && got.best_score < 0 && got.extra_json == NULL && got.step == 1300);
    free(p2); free(fmt); free(path); free(latest);
    fake_free(&f);
    remove_tree(dir);
}

/* A file saved under each row layout loads exactly under two others (every layout is saved
 * once and loaded twice; the round trip covers even to even). */
static void test_cross_layout(void) {
    char *dir = shared_tmp_dir();
    for (int w = 0; w < N_LAYOUTS; w++) {
        Fake f;
        fake_make(&f, w, (Variant){0});
        fill(&f);
        CheckpointState st = make_state(w);
        char *path = xsprintf("%s/saved_%s.h5", dir, layout_names[w]);
        checkpoint_write(path, &st, f.arenas, NAMES, 2, 1);
        fake_free(&f);
        for (int k = 1; k < N_LAYOUTS; k += 2) {
            int r = (w + k) % N_LAYOUTS;
            Fake g;
            fake_make(&g, r, (Variant){0});
            zero(&g, 0);
            CheckpointState got = {.config = CONFIG};
            char *err = checkpoint_try_load(path, &got, g.arenas, NAMES, 2);
            CHECK_MSG(!err, "saved %s, loaded %s: %s", layout_names[w], layout_names[r], err);
            int64_t bad = mismatches(&g, 3);
            CHECK_MSG(bad == 0, "saved %s, loaded %s: %lld elements differ", layout_names[w], layout_names[r], (long long)bad);
            free(err); free(got.extra_json);
            fake_free(&g);
        }
        free(path);
    }
    /* a values-only file loads the values and leaves the moments alone */
    Fake f;
    fake_make(&f, LAYOUT_EVEN, (Variant){0});
    fill(&f);
    CheckpointState st = make_state(9);
    char *path = xsprintf("%s/values.h5", dir);
    checkpoint_write(path, &st, f.arenas, NAMES, 2, 0);
    fake_free(&f);
    fake_make(&f, LAYOUT_SKEWED, (Variant){0});
    zero(&f, 7.0f);
    hid_t h = h5io_open(path, 0);
    CHECK(h5io_has(h, "/params/w/value") && !h5io_has(h, "/params/w/m"));
    h5io_close(h);
    CheckpointState got = {.config = CONFIG};
    char *err = checkpoint_try_load(path, &got, f.arenas, NAMES, 2);
    CHECK_MSG(!err, "%s", err);
    CHECK(mismatches(&f, 1) == 0 && f.uid.total > 0);
    int moved = 0;
    for (size_t k = 0; k < f.uid.total; k++) moved += f.uid.m[k] != 7.0f || f.uid.v[k] != 7.0f;
    CHECK(moved == 0);
    free(err); free(path); free(got.extra_json);
    fake_free(&f);
    remove_tree(dir);
}

static char *read_latest_file(const char *dir) {
    char *p = xsprintf("%s/checkpoints/latest", dir), line[256] = "";
    FILE *f = fopen(p, "r");
    if (f) {
        if (!fgets(line, sizeof line, f)) line[0] = 0;
        fclose(f);
    }
    free(p);
    return xstrdup(line);
}

static int step_exists(const char *dir, int64_t step) {
    char *p = checkpoint_path(dir, step);
    int e = file_exists(p);
    free(p);
    return e;
}

static void test_latest_keep(void) {
    char *dir = shared_tmp_dir();
    char *none = checkpoint_latest(dir);
    CHECK(none == NULL);
    Fake f;
    fake_make(&f, LAYOUT_EVEN, (Variant){0});
    fill(&f);
    CheckpointState st = make_state(0);
    st.best_step = 10; /* kept beyond keep */
    for (int64_t s = 10; s <= 40; s += 10) {
        st.step = s;
        checkpoint_save(dir, &st, f.arenas, NAMES, 2, 2);
    }
    comm_barrier(); /* rank 0 prunes after the others have returned */
    if (comm_rank() == 0) {
        CHECK(step_exists(dir, 10) && !step_exists(dir, 20) && step_exists(dir, 30) && step_exists(dir, 40));
        char *line = read_latest_file(dir);
        CHECK_MSG(strcmp(line, "step_00000040.h5\n") == 0, "latest holds '%s'", line);
        free(line);
        /* a kill mid-write leaves a partial file of a later step, and a partial latest */
        char *partial = xsprintf("%s/checkpoints/step_00000050.h5.partial", dir);
        FILE *p = fopen(partial, "w");
        fputs("half a checkpoint", p);
        fclose(p);
        free(partial);
        partial = xsprintf("%s/checkpoints/latest.partial", dir);
        p = fopen(partial, "w");
        fputs("step_00000050.h5\n", p);
        fclose(p);
        free(partial);
    }
    comm_barrier();
    char *latest = checkpoint_latest(dir), *want = checkpoint_path(dir, 40), *best = checkpoint_best(dir),
         *want_best = checkpoint_path(dir, 10);
    CHECK_MSG(latest && strcmp(latest, want) == 0, "latest %s", latest ? latest : "(null)");
    CHECK_MSG(best && strcmp(best, want_best) == 0, "best %s", best ? best : "(null)");
    free(latest); free(want); free(best); free(want_best);
    /* resumed from an earlier step: the later steps belong to an abandoned timeline */
    st.step = 25;
    checkpoint_save(dir, &st, f.arenas, NAMES, 2, 2);
    comm_barrier();
    if (comm_rank() == 0) {
        CHECK(step_exists(dir, 10) && step_exists(dir, 25) && !step_exists(dir, 30) && !step_exists(dir, 40));
        char *partial = xsprintf("%s/checkpoints/step_00000050.h5.partial", dir), *lp = xsprintf("%s/checkpoints/latest.partial", dir);
        CHECK_MSG(!file_exists(partial) && !file_exists(lp), "leftover partial files not removed");
        free(partial); free(lp);
        /* latest lost: the newest complete file is found */
        char *lpath = xsprintf("%s/checkpoints/latest", dir);
        unlink(lpath);
        free(lpath);
    }
    comm_barrier();
    want = checkpoint_path(dir, 25);
    latest = checkpoint_latest(dir);
    CHECK_MSG(latest && strcmp(latest, want) == 0, "without latest: %s", latest ? latest : "(null)");
    free(latest);
    /* latest naming a file that is gone */
    if (comm_rank() == 0) {
        char *lpath = xsprintf("%s/checkpoints/latest", dir);
        CHECK(write_file_atomic(lpath, "step_00000099.h5\n") == 0);
        free(lpath);
    }
    comm_barrier();
    latest = checkpoint_latest(dir);
    CHECK_MSG(latest && strcmp(latest, want) == 0, "stale latest: %s", latest ? latest : "(null)");
    free(latest); free(want);
    fake_free(&f);
    remove_tree(dir);
}

/* rank 0 copies src to dst keeping the first `keep` bytes (all when keep < 0) */
static void copy_file(const char *src, const char *dst, long keep) {
    if (comm_rank() == 0) {
        FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
        if (!in || !out) abort();
        char b[4096];
        size_t n;
        long done = 0;
        while ((n = fread(b, 1, sizeof b, in)) > 0 && (keep < 0 || done < keep)) {
            if (keep >= 0 && done + (long)n > keep) n = (size_t)(keep - done);
            fwrite(b, 1, n, out);
            done += (long)n;
        }
        fclose(in);
        fclose(out);
    }
    comm_barrier();
}

static long file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

/* checkpoint_check / try_load on a variant of the model: the error, or NULL */
static char *check_variant(const char *path, const char *config, Variant var) {
    Fake g;
    fake_make(&g, LAYOUT_EVEN, var);
    char *err = checkpoint_check(path, config, g.arenas, NAMES, 2);
    fake_free(&g);
    return err;
}

static void test_bad_inputs(void) {
    char *dir = shared_tmp_dir();
    Fake f;
    fake_make(&f, LAYOUT_EVEN, (Variant){0});
    fill(&f);
    CheckpointState st = make_state(5);
    char *path = xsprintf("%s/good.h5", dir);
    checkpoint_write(path, &st, f.arenas, NAMES, 2, 1);
    char *err = check_variant(path, CONFIG, (Variant){0});
    CHECK_MSG(!err, "good file: %s", err);
    free(err);

    err = check_variant(path, CONFIG, (Variant){.w_cols = 8});
    CHECK_MSG(contains(err, path) && contains(err, "tensor params/w is 5 x 7, this model has 5 x 8"), "other shape: %s", err);
    free(err);
    err = check_variant(path, CONFIG, (Variant){.with_c = 1});
    CHECK_MSG(contains(err, path) && contains(err, "tensor params/c is missing"), "missing tensor: %s", err);
    free(err);
    err = check_variant(path, CONFIG, (Variant){.no_b = 1});
    CHECK_MSG(contains(err, path) && contains(err, "tensor params/b is not in this model"), "extra tensor: %s", err);
    free(err);
    err = check_variant(path, "model.d_model = 7;\ntrain.lr = 0.002;\n", (Variant){0});
    CHECK_MSG(contains(err, path) && contains(err, "'train.lr = 0.002;' here") && contains(err, "'train.lr = 0.001;' there"),
              "other config: %s", err);
    free(err);
    err = check_variant(path, NULL, (Variant){0}); /* no config given: not compared */
    CHECK_MSG(!err, "%s", err);
    free(err);

    /* truncated copies: half, and all but the last bytes */
    long size = file_size(path);
    long keeps[2] = {size / 2, size - 16};
    for (int k = 0; k < 2; k++) {
        char *cut = xsprintf("%s/truncated_%d.h5", dir, k);
        copy_file(path, cut, keeps[k]);
        err = check_variant(cut, CONFIG, (Variant){0});
        char *want = xsprintf("truncated file (%ld of %ld bytes)", keeps[k], size);
        CHECK_MSG(contains(err, cut) && contains(err, want), "truncated to %ld of %ld: %s", keeps[k], size, err);
        free(want);
        free(err);
        free(cut);
    }

    /* corrupt data in one tensor's moment: its checksum names it */
    char *bad = xsprintf("%s/corrupt.h5", dir);
    copy_file(path, bad, -1);
    if (comm_rank() == 0) {
        hid_t h = H5Fopen(bad, H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t ds = H5Dopen2(h, "/uid/uid_emb/m", H5P_DEFAULT);
        haddr_t off = H5Dget_offset(ds);
        H5Dclose(ds);
        H5Fclose(h);
        FILE *fp = fopen(bad, "r+b");
        fseek(fp, (long)off + 40, SEEK_SET);
        fputc(0x5a, fp);
        fclose(fp);
    }
    comm_barrier();
    CheckpointState got = {.config = CONFIG};
    err = checkpoint_try_load(bad, &got, f.arenas, NAMES, 2);
    CHECK_MSG(contains(err, bad) && contains(err, "tensor uid/uid_emb (m) does not match its checksum"), "corrupt: %s", err);
    free(err); free(got.extra_json);

    /* not a checkpoint, and no file at all */
    char *other = xsprintf("%s/other.h5", dir);
    hid_t h = h5io_create(other);
    int64_t n = 3;
    int32_t x[3] = {1, 2, 3};
    h5io_write_rows(h, "/x", H5T_NATIVE_INT32, 1, &n, 0, comm_rank() == 0 ? 3 : 0, x);
    h5io_close(h);
    err = check_variant(other, CONFIG, (Variant){0});
    CHECK_MSG(contains(err, other) && contains(err, "not a CAR checkpoint"), "other file: %s", err);
    free(err);
    char *missing = xsprintf("%s/nothing.h5", dir);
    err = check_variant(missing, CONFIG, (Variant){0});
    CHECK_MSG(contains(err, missing) && contains(err, "no such file"), "missing file: %s", err);
    free(err);

    /* the layout must cover every row */
    Fake g;
    fake_make(&g, LAYOUT_GAP, (Variant){0});
    err = checkpoint_try_load(path, &got, g.arenas, NAMES, 2); /* found before any read */
    CHECK_MSG(contains(err, path) && contains(err, "tensor uid/uid_emb: the ranks hold"), "gap: %s", err);
    free(err);
    fake_free(&g);

    free(bad); free(other); free(missing); free(path);
    fake_free(&f);
    remove_tree(dir);
}

static void test_config_text(void) {
    CarConfig cfg;
    char *p = check_tmp_file(""); /* every key at its default */
    char *err = config_parse(&cfg, p, 0, NULL);
    unlink(p);
    free(p);
    CHECK_MSG(!err, "%s", err);
    if (err) { free(err); return; }
    char *a = checkpoint_config_text(&cfg);
    CHECK(contains(a, "\ntrain.lr = ") && contains(a, "model.d_model = ") && !contains(a, "run.") && !contains(a, "log_every"));
    cfg.run.checkpoint_every = 12345; /* not part of the trajectory */
    cfg.train.log_every = 77;
    char *b = checkpoint_config_text(&cfg);
    CHECK(strcmp(a, b) == 0);
    cfg.train.lr *= 2;
    char *c = checkpoint_config_text(&cfg);
    CHECK(strcmp(a, c) != 0);
    free(a); free(b); free(c);
    config_free(&cfg);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_checkpoint");
    RUN_TEST(test_roundtrip);
    RUN_TEST(test_cross_layout);
    RUN_TEST(test_latest_keep);
    RUN_TEST(test_bad_inputs);
    RUN_TEST(test_config_text);
    return check_finish();
}
