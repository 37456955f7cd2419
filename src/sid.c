/* The semantic-ID stage: read this rank's embedding rows, reuse or recompute sids.h5, report.
 * sid.method picks how codes are made (the two controls answer "semantic or just capacity?"):
 *   rkmeans: residual k-means (DESIGN.md section 1);
 *   random:  code l of item i uniform in [0, K_l), a pure function of (sid.seed, l, i): the same
 *            level sizes and capacity with no semantics;
 *   lsh:     random hyperplanes as in TIGER's LSH ablation: level l's code is the sign bits of
 *            log2 K_l Gaussian projections of the centred embedding (not of the residual), a fresh
 *            set of hyperplanes per level; so the L levels are L independent SimHashes and two
 *            items agree on a level with a probability that falls with their angle. K_l must be
 *            a power of two.
 * For random and lsh the centroids in sids.h5 are the means of the residual chain over the
 * items of each code (r^1 = x, r^{l+1} = r^l - c^l[code]), summed in fixed point so that they,
 * like the codes, are identical for every rank count; sid.iters, sid.tol and
 * sid.normalize_residuals do not apply to them. */
#include "sid.h"
#include "comm.h"
#include "dataset.h"
#include "h5io.h"
#include "log.h"
#include "rkmeans.h"
#include "rng.h"
#include "util.h"
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SID_FORMAT "car-sids-1"
static const char *const method_words[] = {"rkmeans", "random", "lsh"}; /* by SID_RKMEANS.. */

/* What a sids.h5 must have been made from to be reused. */
typedef struct {
    int levels, iters, normalize_residuals, method;
    int codebook[SID_MAX_LEVELS];
    double tol;
    int64_t seed, n_items;
    int dim;
    char codebook_text[128], hash_text[17];
} SidMeta;

uint64_t sid_embedding_hash(const float *x, int64_t n_local, int dim) {
    int64_t n = n_local;
    comm_sum_i64(&n, 1);
    uint64_t *mine = xmalloc(sizeof(uint64_t) * (size_t)(n_local ? n_local : 1));
    uint64_t *all = xmalloc(sizeof(uint64_t) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n_local; i++)
        mine[i] = fnv1a64(FNV64_INIT, x + (size_t)i * dim, sizeof(float) * (size_t)dim);
    comm_allgatherv_bytes(mine, n_local, all, sizeof(uint64_t));
    uint64_t h = fnv1a64(FNV64_INIT, all, sizeof(uint64_t) * (size_t)n);
    free(mine);
    free(all);
    return h;
}

static char *sids_path(const char *run_dir) { return xsprintf("%s/sids.h5", run_dir); }

/* Why an integer attribute differs from value (allocated), or NULL. */
static char *differs_i64(hid_t f, const char *attr, int64_t value, const char *what) {
    int64_t v;
    if (!h5io_attr_read_i64(f, "/", attr, &v)) return xsprintf("it has no %s", what);
    return v == value ? NULL : xsprintf("it has %s = %lld, now %lld", what, (long long)v, (long long)value);
}

static char *differs_str(hid_t f, const char *attr, const char *value, const char *what) {
    char *v = h5io_attr_read_str(f, "/", attr);
    char *why = !v ? xsprintf("it has no %s", what)
                : strcmp(v, value) != 0 ? xsprintf("it has %s = %s, now %s", what, v, value) : NULL;
    free(v);
    return why;
}

/* files from before sid.method have no such attribute: they are residual k-means */
static char *differs_method(hid_t f, int method) {
    char *v = h5io_attr_read_str(f, "/", "method");
    const char *was = v ? v : method_words[SID_RKMEANS];
    char *why = strcmp(was, method_words[method]) ? xsprintf("it has sid.method = %s, now %s", was, method_words[method]) : NULL;
    free(v);
    return why;
}

/* NULL if the file at path was made from want, else why not (allocated, one line). */
static char *mismatch(const char *path, const SidMeta *want) {
    hid_t f = h5io_open(path, 0);
    double tol = 0;
    char *why = differs_str(f, "format", SID_FORMAT, "format");
    if (!why) why = differs_i64(f, "levels", want->levels, "sid.levels");
    if (!why) why = differs_str(f, "codebook", want->codebook_text, "sid.codebook");
    if (!why) why = differs_i64(f, "iters", want->iters, "sid.iters");
    if (!why && (!h5io_attr_read_f64(f, "/", "tol", &tol) || tol != want->tol))
        why = xsprintf("it has sid.tol = %g, now %g", tol, want->tol);
    if (!why) why = differs_i64(f, "seed", want->seed, "sid.seed");
    if (!why) why = differs_i64(f, "normalize_residuals", want->normalize_residuals, "sid.normalize_residuals");
    if (!why) why = differs_method(f, want->method);
    if (!why) why = differs_i64(f, "n_items", want->n_items, "n_items");
    if (!why) why = differs_i64(f, "dim", want->dim, "embedding width");
    char *hash = why ? NULL : h5io_attr_read_str(f, "/", "embedding_hash");
    if (!why && (!hash || strcmp(hash, want->hash_text) != 0))
        why = xsprintf("the embeddings changed (hash %s, now %s)", hash ? hash : "none", want->hash_text);
    free(hash);
    int64_t dims[2] = {0, 0};
    if (!why && (!h5io_has(f, "/sid/codes") || h5io_shape(f, "/sid/codes", dims, 2) != 2 || dims[0] != want->n_items ||
                 dims[1] != want->levels))
        why = xsprintf("/sid/codes is missing or not %lld x %d", (long long)want->n_items, want->levels);
    for (int l = 0; l < want->levels && !why; l++) {
        char name[64];
        snprintf(name, sizeof name, "/sid/centroids/level_%d", l + 1);
        if (!h5io_has(f, name)) why = xsprintf("%s is missing", name);
    }
    h5io_close(f);
    return why;
}

static void write_sids(const char *path, const SidMeta *m, const char *dataset_path, int64_t lo, int64_t n_local,
                       const int32_t *codes, float *const *centroids) {
    char *partial = h5io_partial_name(path);
    comm_cleanup_add(partial);
    hid_t f = h5io_create(partial);
    int64_t dims[2] = {m->n_items, m->levels};
    h5io_write_rows(f, "/sid/codes", H5T_NATIVE_INT32, 2, dims, lo, n_local, codes);
    for (int l = 0; l < m->levels; l++) {
        char name[64];
        snprintf(name, sizeof name, "/sid/centroids/level_%d", l + 1);
        int64_t cd[2] = {m->codebook[l], m->dim};
        /* replicated: rank 0 writes all rows */
        h5io_write_rows(f, name, H5T_NATIVE_FLOAT, 2, cd, 0, comm_rank() == 0 ? cd[0] : 0, centroids[l]);
    }
    h5io_attr_write_str(f, "/", "format", SID_FORMAT);
    h5io_attr_write_i64(f, "/", "levels", m->levels);
    h5io_attr_write_str(f, "/", "codebook", m->codebook_text);
    h5io_attr_write_i64(f, "/", "iters", m->iters);
    h5io_attr_write_f64(f, "/", "tol", m->tol);
    h5io_attr_write_i64(f, "/", "seed", m->seed);
    h5io_attr_write_i64(f, "/", "normalize_residuals", m->normalize_residuals);
    h5io_attr_write_str(f, "/", "method", method_words[m->method]);
    h5io_attr_write_i64(f, "/", "n_items", m->n_items);
    h5io_attr_write_i64(f, "/", "dim", m->dim);
    h5io_attr_write_str(f, "/", "embedding_hash", m->hash_text);
    h5io_attr_write_str(f, "/", "dataset", dataset_path);
    h5io_close(f);
    h5io_commit_partial(partial, path);
    free(partial);
}

static double per_iteration(const RkmeansLevelReport *lr) { return lr->lloyd_seconds / (lr->iters_run > 0 ? lr->iters_run : 1); }

static void log_report(const RkmeansReport *rep, const SidMeta *m) {
    double blas = 0;
    for (int l = 0; l < rep->levels; l++) {
        const RkmeansLevelReport *lr = &rep->level[l];
        blas += lr->sgemm_seconds;
        char *how = m->method != SID_RKMEANS ? xsprintf("%s codes", method_words[m->method])
                    : xsprintf("%d Lloyd iterations, %.3f s (k-means++ %.3f s, %.4f s per iteration), sgemm %.0f%%%s",
                               lr->iters_run, lr->seconds, lr->init_seconds, per_iteration(lr),
                               100.0 * lr->sgemm_seconds / (lr->seconds > 0 ? lr->seconds : 1),
                               lr->used < m->codebook[l] ? " (unused codes: fewer distinct residuals than codes)" : "");
        log_info("sid: level %d: %d/%d codes used, largest cluster %lld items, entropy %.3f bits (%.3f of log2 %d); "
                 "error %.5g -> %.5g; %s",
                 l + 1, lr->used, m->codebook[l], (long long)lr->largest, lr->entropy_bits, lr->entropy_ratio,
                 m->codebook[l], lr->sq_error_before, lr->sq_error_after, how);
        free(how);
    }
    log_info("sid: collisions: %lld distinct tuples for %lld items, largest group %lld, %.2f%% of items have a unique "
             "tuple", (long long)rep->n_tuples, (long long)rep->n_items, (long long)rep->largest_group,
             100.0 * rep->unique_share);
    log_info("sid: %.2f s for %d levels, sgemm %.0f%% of it%s (%s)", rep->seconds, rep->levels,
             100.0 * blas / (rep->seconds > 0 ? rep->seconds : 1),
             rep->init_replicated ? ", k-means++ replicated on every rank (ranks outnumber cores)" : "", comm_blas_info());
}

static json_t *report_json(const RkmeansReport *rep, const SidMeta *m, const char *dataset_path) {
    json_t *root = json_object(), *levels = json_array(), *cb = json_array();
    double blas = 0;
    for (int l = 0; l < rep->levels; l++) {
        const RkmeansLevelReport *lr = &rep->level[l];
        blas += lr->sgemm_seconds;
        json_array_append_new(cb, json_integer(m->codebook[l]));
        json_t *o = json_object();
        json_object_set_new(o, "level", json_integer(l + 1));
        json_object_set_new(o, "codebook", json_integer(m->codebook[l]));
        json_object_set_new(o, "used", json_integer(lr->used));
        json_object_set_new(o, "largest", json_integer(lr->largest));
        json_object_set_new(o, "entropy_bits", json_real(lr->entropy_bits));
        json_object_set_new(o, "entropy_ratio", json_real(lr->entropy_ratio));
        json_object_set_new(o, "sq_error_before", json_real(lr->sq_error_before));
        json_object_set_new(o, "sq_error_after", json_real(lr->sq_error_after));
        json_object_set_new(o, "iters", json_integer(lr->iters_run));
        json_object_set_new(o, "reseeded", json_integer(lr->reseeded));
        json_object_set_new(o, "seconds", json_real(lr->seconds));
        json_object_set_new(o, "init_seconds", json_real(lr->init_seconds));
        json_object_set_new(o, "lloyd_seconds", json_real(lr->lloyd_seconds));
        json_object_set_new(o, "seconds_per_iter", json_real(per_iteration(lr)));
        json_object_set_new(o, "sgemm_seconds", json_real(lr->sgemm_seconds));
        json_object_set_new(o, "rechecked_pct", json_integer(lr->candidates_rechecked_pct));
        json_array_append_new(levels, o);
    }
    json_t *tuples = json_object();
    json_object_set_new(tuples, "distinct", json_integer(rep->n_tuples));
    json_object_set_new(tuples, "largest_group", json_integer(rep->largest_group));
    json_object_set_new(tuples, "unique_share", json_real(rep->unique_share));
    json_object_set_new(root, "dataset", json_string(dataset_path));
    json_object_set_new(root, "n_items", json_integer(m->n_items));
    json_object_set_new(root, "dim", json_integer(m->dim));
    json_object_set_new(root, "ranks", json_integer(comm_size()));
    json_object_set_new(root, "blas", json_string(comm_blas_info()));
    json_object_set_new(root, "method", json_string(method_words[m->method]));
    json_object_set_new(root, "levels", json_integer(m->levels));
    json_object_set_new(root, "codebook", cb);
    json_object_set_new(root, "iters", json_integer(m->iters));
    json_object_set_new(root, "tol", json_real(m->tol));
    json_object_set_new(root, "seed", json_integer(m->seed));
    json_object_set_new(root, "normalize_residuals", json_boolean(m->normalize_residuals));
    json_object_set_new(root, "embedding_hash", json_string(m->hash_text));
    json_object_set_new(root, "sq_error_before", json_real(rep->sq_error_before));
    json_object_set_new(root, "level", levels);
    json_object_set_new(root, "tuples", tuples);
    json_object_set_new(root, "seconds", json_real(rep->seconds));
    json_object_set_new(root, "sgemm_seconds", json_real(blas));
    json_object_set_new(root, "sgemm_share", json_real(rep->seconds > 0 ? blas / rep->seconds : 0));
    return root;
}

static void write_report(const char *run_dir, const RkmeansReport *rep, const SidMeta *m, const char *dataset_path) {
    char *err = NULL;
    if (comm_rank() == 0) {
        json_t *j = report_json(rep, m, dataset_path);
        char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        char *path = xsprintf("%s/sid_report.json", run_dir);
        char *with_newline = xsprintf("%s\n", text);
        if (write_file_atomic(path, with_newline) != 0) err = xsprintf("%s: cannot write: %s", path, strerror(errno));
        free(with_newline);
        free(path);
        free(text);
        json_decref(j);
    }
    comm_fail_if_any(err);
}

/* ---------------------------------------------------------------- random and LSH codes */

void sid_random_codes(int64_t lo, int64_t n_local, int levels, const int *codebook, uint64_t seed, int32_t *codes) {
    for (int64_t i = 0; i < n_local; i++)
        for (int l = 0; l < levels; l++)
            codes[i * levels + l] = (int32_t)rng_below(seed, 0x51d0000ULL + (uint64_t)l, (uint64_t)(lo + i), (uint64_t)codebook[l]);
}

#define FIXED_SCALE 4294967296.0 /* 2^32: sums of |x| <= 1 over 2^31 rows fit an int64 exactly */

/* Collective. sums[k * dim + c] = sum over the items with group[i] == k of x[i][c], in fixed
 * point summed over ranks: the same bits for every rank count. count[k] = items in group k. */
static void fixed_group_sums(const float *x, int64_t n_local, int dim, const int32_t *group, int stride, int K,
                             double *sums, int64_t *count) {
    int64_t *acc = xcalloc((size_t)K * (dim + 1), sizeof(int64_t));
    for (int64_t i = 0; i < n_local; i++) {
        int64_t *row = acc + (size_t)group[i * stride] * (dim + 1);
        for (int c = 0; c < dim; c++) row[c] += llround((double)x[(size_t)i * dim + c] * FIXED_SCALE);
        row[dim]++;
    }
    for (int64_t off = 0, n = (int64_t)K * (dim + 1); off < n; off += 1 << 28)
        comm_sum_i64(acc + off, (int)(n - off < (1 << 28) ? n - off : 1 << 28));
    for (int k = 0; k < K; k++) {
        for (int c = 0; c < dim; c++) sums[(size_t)k * dim + c] = (double)acc[(size_t)k * (dim + 1) + c] / FIXED_SCALE;
        count[k] = acc[(size_t)k * (dim + 1) + dim];
    }
    free(acc);
}

void sid_lsh_codes(const float *x, int64_t n_local, int dim, int levels, const int *codebook, uint64_t seed,
                   int32_t *codes) {
    double *mean = xmalloc(sizeof(double) * (size_t)dim);
    int64_t n;
    int32_t zero = 0;
    fixed_group_sums(x, n_local, dim, &zero, 0, 1, mean, &n);
    for (int c = 0; c < dim; c++) mean[c] /= (double)(n ? n : 1);
    int bits_total = 0;
    for (int l = 0; l < levels; l++) bits_total += (int)lround(log2((double)codebook[l]));
    double *w = xmalloc(sizeof(double) * (size_t)bits_total * dim); /* hyperplane normals, level after level */
    for (int64_t j = 0; j < (int64_t)bits_total * dim; j++) w[j] = rng_normal(seed, 0x15b0000ULL, (uint64_t)j);
    for (int64_t i = 0; i < n_local; i++) {
        const float *xi = x + (size_t)i * dim;
        const double *wb = w;
        for (int l = 0; l < levels; l++) {
            int bits = (int)lround(log2((double)codebook[l])), code = 0;
            for (int b = 0; b < bits; b++, wb += dim) {
                double p = 0; /* a plain loop: the same bits whatever the rank holds */
                for (int c = 0; c < dim; c++) p += wb[c] * ((double)xi[c] - mean[c]);
                code |= (p > 0) << b;
            }
            codes[i * levels + l] = code;
        }
    }
    free(w);
    free(mean);
}

void sid_residual_centroids(const float *x, int64_t n_local, int dim, int levels, const int *codebook,
                            const int32_t *codes, float **centroids, double *sq_error) {
    float *r = xmalloc(sizeof(float) * (size_t)(n_local * dim + 1));
    memcpy(r, x, sizeof(float) * (size_t)(n_local * dim));
    int64_t n = n_local;
    comm_sum_i64(&n, 1);
    for (int l = 0; l <= levels; l++) {
        double sq = 0;
        for (int64_t j = 0; j < n_local * dim; j++) sq += (double)r[j] * r[j];
        comm_sum_double(&sq, 1);
        sq_error[l] = sq / (double)(n ? n : 1);
        if (l == levels) break;
        int K = codebook[l];
        double *sums = xmalloc(sizeof(double) * (size_t)K * dim);
        int64_t *count = xmalloc(sizeof(int64_t) * (size_t)K);
        fixed_group_sums(r, n_local, dim, codes + l, levels, K, sums, count);
        centroids[l] = xmalloc(sizeof(float) * (size_t)K * dim);
        for (int64_t j = 0; j < (int64_t)K * dim; j++) centroids[l][j] = count[j / dim] ? (float)(sums[j] / count[j / dim]) : 0.0f;
        for (int64_t i = 0; i < n_local; i++)
            for (int c = 0; c < dim; c++) r[(size_t)i * dim + c] -= centroids[l][(size_t)codes[i * levels + l] * dim + c];
        free(sums);
        free(count);
    }
    free(r);
}

/* Collective. Codes and centroids of this rank's rows x by m->method, and the report. */
static void make_codes(const float *x, int64_t lo, int64_t n_local, const SidMeta *m, int32_t *codes, float **centroids,
                       RkmeansReport *rep) {
    if (m->method == SID_RKMEANS) {
        RkmeansOptions o = {.levels = m->levels, .iters = m->iters, .tol = m->tol, .seed = (uint64_t)m->seed,
                            .normalize_residuals = m->normalize_residuals, .init_replicated = -1};
        memcpy(o.codebook, m->codebook, sizeof o.codebook);
        rkmeans_fit(x, n_local, m->n_items, m->dim, &o, codes, centroids, rep);
        return;
    }
    double t0 = comm_wtime(), sq[SID_MAX_LEVELS + 1];
    if (m->method == SID_RANDOM) sid_random_codes(lo, n_local, m->levels, m->codebook, (uint64_t)m->seed, codes);
    else sid_lsh_codes(x, n_local, m->dim, m->levels, m->codebook, (uint64_t)m->seed, codes);
    sid_residual_centroids(x, n_local, m->dim, m->levels, m->codebook, codes, centroids, sq);
    memset(rep, 0, sizeof *rep);
    rkmeans_code_stats(codes, n_local, m->levels, m->codebook, rep);
    rep->sq_error_before = sq[0];
    for (int l = 0; l < m->levels; l++) rep->level[l].sq_error_before = sq[l], rep->level[l].sq_error_after = sq[l + 1];
    rep->seconds = comm_wtime() - t0;
}

int sid_stage_run(const CarConfig *cfg) {
    if (cfg->sid.levels == 0) {
        log_info("sid: sid.levels = 0: no semantic IDs (UID-only baseline), stage skipped");
        return 0;
    }
    double t0 = comm_wtime();
    Dataset ds;
    dataset_open(&ds, cfg->data.path);
    SidMeta m;
    memset(&m, 0, sizeof m);
    m.levels = cfg->sid.levels;
    m.iters = cfg->sid.iters;
    m.tol = cfg->sid.tol;
    m.seed = cfg->sid.seed;
    m.normalize_residuals = cfg->sid.normalize_residuals;
    m.method = cfg->sid.method;
    m.n_items = ds.n_items;
    m.dim = ds.dim;
    for (int l = 0; l < m.levels; l++) {
        m.codebook[l] = config_codebook(cfg, l);
        if (m.codebook[l] > ds.n_items)
            comm_fail("key 'sid.codebook' = %d at level %d exceeds the %lld items of %s", m.codebook[l], l + 1,
                      (long long)ds.n_items, cfg->data.path);
        if (m.method == SID_LSH && (m.codebook[l] & (m.codebook[l] - 1)) != 0)
            comm_fail("key 'sid.codebook' = %d at level %d: sid.method = lsh needs a power of two (log2 K sign bits)",
                      m.codebook[l], l + 1);
        size_t used = strlen(m.codebook_text);
        snprintf(m.codebook_text + used, sizeof m.codebook_text - used, "%s%d", l ? "," : "", m.codebook[l]);
    }
    int64_t lo, hi;
    comm_split_range(ds.n_items, comm_size(), comm_rank(), &lo, &hi);
    float *x = xmalloc(sizeof(float) * (size_t)((hi - lo) * ds.dim + 1));
    dataset_read_embeddings(&ds, lo, hi, x);
    snprintf(m.hash_text, sizeof m.hash_text, "%016llx", (unsigned long long)sid_embedding_hash(x, hi - lo, ds.dim));

    char *err = NULL;
    if (comm_rank() == 0 && make_dirs(cfg->run.dir) != 0)
        err = xsprintf("key 'run.dir' = %s: cannot create the directory: %s", cfg->run.dir, strerror(errno));
    comm_fail_if_any(err);
    char *path = sids_path(cfg->run.dir);
    /* 0: none, 1: an HDF5 file, 2: something else (an interrupted copy?): recomputed */
    int exists = comm_rank() == 0 && file_exists(path) ? (H5Fis_hdf5(path) > 0 ? 1 : 2) : 0;
    comm_bcast(&exists, sizeof exists, 0);
    char *why = exists == 1 ? mismatch(path, &m) : exists == 2 ? xsprintf("it is not a readable HDF5 file") : NULL;
    if (exists && !why) {
        log_info("sid: reusing %s (same SID config and embeddings)", path);
        free(path); free(x);
        dataset_close(&ds);
        return 0;
    }
    if (why) log_info("sid: recomputing %s: %s", path, why);
    log_info("sid: %s codes of %lld items x %d dims, %d levels, codebook %s, seed %lld, %d ranks", method_words[m.method],
             (long long)m.n_items, m.dim, m.levels, m.codebook_text, (long long)m.seed, comm_size());
    int32_t *codes = xmalloc(sizeof(int32_t) * (size_t)((hi - lo) * m.levels + 1));
    float *centroids[RKMEANS_MAX_LEVELS] = {0};
    RkmeansReport rep;
    make_codes(x, lo, hi - lo, &m, codes, centroids, &rep);
    write_sids(path, &m, cfg->data.path, lo, hi - lo, codes, centroids);
    log_report(&rep, &m);
    write_report(cfg->run.dir, &rep, &m, cfg->data.path);
    log_info("sid: wrote %s in %.2f s", path, comm_wtime() - t0);
    for (int l = 0; l < m.levels; l++) free(centroids[l]);
    free(codes); free(x); free(why); free(path);
    dataset_close(&ds);
    return 1;
}

void sid_load_codes(const char *run_dir, int64_t n_items, int64_t lo, int64_t hi, int levels, int32_t *codes) {
    char *path = sids_path(run_dir);
    int exists = comm_rank() == 0 ? file_exists(path) : 0;
    comm_bcast(&exists, sizeof exists, 0);
    if (!exists) comm_fail("%s: no such file (run the sid stage first)", path);
    hid_t f = h5io_open(path, 0);
    int64_t dims[2] = {0, 0};
    if (!h5io_has(f, "/sid/codes") || h5io_shape(f, "/sid/codes", dims, 2) != 2 || dims[1] != levels)
        comm_fail("%s: /sid/codes is missing or has %lld levels, expected %d (sid.levels)", path, (long long)dims[1], levels);
    if (dims[0] != n_items)
        comm_fail("%s: /sid/codes has %lld items, the dataset %lld: these SIDs were made for another dataset (run the "
                  "sid stage again)",
                  path, (long long)dims[0], (long long)n_items);
    char *err = lo < 0 || hi > dims[0] || lo > hi ? xsprintf("%s: rows %lld..%lld asked of /sid/codes with %lld rows",
                                                            path, (long long)lo, (long long)hi, (long long)dims[0])
                                                  : NULL;
    comm_fail_if_any(err); /* the ranks ask for different rows */
    int64_t codebook[SID_MAX_LEVELS];
    for (int l = 0; l < levels; l++) {
        char name[64];
        int64_t cd[2];
        snprintf(name, sizeof name, "/sid/centroids/level_%d", l + 1);
        h5io_shape(f, name, cd, 2);
        codebook[l] = cd[0];
    }
    h5io_read_rows(f, "/sid/codes", H5T_NATIVE_INT32, lo, hi - lo, codes);
    h5io_close(f);
    for (int64_t i = 0; i < (hi - lo) * levels && !err; i++)
        if (codes[i] < 0 || codes[i] >= codebook[i % levels])
            err = xsprintf("%s: /sid/codes[%lld][%lld] = %d is outside codebook 0..%lld", path, (long long)(lo + i / levels),
                           (long long)(i % levels), codes[i], (long long)codebook[i % levels] - 1);
    comm_fail_if_any(err);
    free(err);
    free(path);
}
