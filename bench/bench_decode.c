/* bench_decode [--name NAME] [--items V] [--levels L] [--codebook K] [--d D] [--layers N] [--heads H]
 *              [--history N] [--batch B] [--latency-users U] [--budget S] [--beams 1,5,10,20,50,100]
 *              [--recompute 0|1]
 * The speed of thinking: recommendation lists of K = 10 from a model of the given size with random
 * weights (speed does not depend on what was learned) for users with histories of N items:
 *   car fast: one pass, the UID logit of every item;  car slow: plus the think heads' re-rank;
 *   ar: constrained beam search over the SID trie at each beam width, KV cache on and off.
 * Per configuration: latency of one user alone (p50, p99 over U users) and throughput at a global
 * batch of B users split over the ranks (users/s over as many batches as fit in S seconds, at
 * least one); then the car/ar throughput ratio per beam. Times are CPU seconds of the slowest
 * rank (the process's own work, robust on a shared machine; with P > 1 they include MPI's busy
 * waiting), with the wall-clock versions beside them (wall_*). The item tables are sharded over the
 * ranks as in car_train. One line per result on rank 0, "key=value" fields. */
#include "beam.h"
#include "comm.h"
#include "rng.h"
#include "util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>

typedef struct {
    const char *name;
    int V, L, K, d, layers, heads, history, batch, lat_users;
    double budget;
    int beams[16], n_beams;
    int recompute; /* also ar without the KV cache (--recompute 0: skip it, it dominates the run time) */
} Opts;

static void parse(int argc, char **argv, Opts *o) {
    *o = (Opts){"toys", 11924, 3, 256, 64, 2, 2, 20, 64, 20, 2.0, {1, 5, 10, 20, 50, 100}, 6, 1};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--name")) o->name = v;
        else if (!strcmp(k, "--items")) o->V = atoi(v);
        else if (!strcmp(k, "--levels")) o->L = atoi(v);
        else if (!strcmp(k, "--codebook")) o->K = atoi(v);
        else if (!strcmp(k, "--d")) o->d = atoi(v);
        else if (!strcmp(k, "--layers")) o->layers = atoi(v);
        else if (!strcmp(k, "--heads")) o->heads = atoi(v);
        else if (!strcmp(k, "--history")) o->history = atoi(v);
        else if (!strcmp(k, "--batch")) o->batch = atoi(v);
        else if (!strcmp(k, "--latency-users")) o->lat_users = atoi(v);
        else if (!strcmp(k, "--budget")) o->budget = atof(v);
        else if (!strcmp(k, "--recompute")) o->recompute = atoi(v);
        else if (!strcmp(k, "--beams")) {
            o->n_beams = 0;
            for (char *s = (char *)v; *s && o->n_beams < 16; s += *s == ',') o->beams[o->n_beams++] = (int)strtol(s, &s, 10);
        } else comm_fail("bench_decode: unknown option %s", k);
    }
    if (o->V < comm_size() || o->L < 0 || o->L > SID_MAX_LEVELS || o->K < 1 || o->history < 1 || o->batch < 1)
        comm_fail("bench_decode: bad sizes");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Global users [first, first + n) split over the ranks: this rank's batch (random histories). */
static ModelBatch users(const Opts *o, int64_t first, int n, int *len, int32_t *items) {
    int64_t lo, hi;
    comm_split_range(n, comm_size(), comm_rank(), &lo, &hi);
    for (int64_t u = lo; u < hi; u++) {
        len[u - lo] = o->history;
        for (int j = 0; j < o->history; j++)
            items[(u - lo) * o->history + j] = (int32_t)rng_below(11, (uint64_t)(first + u), (uint64_t)j, (uint64_t)o->V);
    }
    return (ModelBatch){(int)(hi - lo), len, items, NULL};
}

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Seconds of one recommend_batch over global users [first, first + n), the slowest rank's: wall
 * clock (cpu NULL) or, in *cpu, this process's CPU time (on a machine shared with other jobs the
 * wall clock counts the time the process waited for a core) */
static double timed(Recommender *rc, const Opts *o, int64_t first, int n, RecLists *out, double *cpu) {
    int *len = xmalloc(sizeof(int) * (size_t)n);
    int32_t *items = xmalloc(sizeof(int32_t) * (size_t)n * o->history);
    ModelBatch b = users(o, first, n, len, items);
    comm_barrier();
    double t[2] = {comm_wtime(), cpu_seconds()};
    recommend_batch(rc, &b, NULL, NULL, out);
    t[0] = comm_wtime() - t[0];
    t[1] = cpu_seconds() - t[1];
    comm_max_double(t, 2);
    free(len);
    free(items);
    if (cpu) *cpu = t[1];
    return t[0];
}

/* Runs one configuration; returns its throughput (users/s). */
static double run(Model *m, const Trie *t, const Opts *o, const char *mode, RecOptions ro) {
    Recommender rc;
    recommender_init(&rc, m, t, &ro);
    RecLists out = {0};
    int nl = o->lat_users;
    double *lat = xmalloc(sizeof(double) * (size_t)nl), *lat_cpu = xmalloc(sizeof(double) * (size_t)nl), spent = 0,
           spent_cpu = 0, c;
    timed(&rc, o, 0, 1, &out, NULL); /* warm-up */
    for (int u = 0; u < nl; u++) lat[u] = timed(&rc, o, 1000 + u, 1, &out, &lat_cpu[u]);
    qsort(lat, (size_t)nl, sizeof(double), cmp_double);
    qsort(lat_cpu, (size_t)nl, sizeof(double), cmp_double);
    int64_t done = 0;
    if (ro.use_cache || strcmp(mode, "ar")) /* warm-up: first touch of the batch's buffers (recomputation: negligible) */
        timed(&rc, o, 50000, o->batch, &out, NULL);
    while (done == 0 || spent < o->budget) {
        spent += timed(&rc, o, 100000 + done, o->batch, &out, &c);
        spent_cpu += c;
        done += o->batch;
    }
    double thr = (double)done / spent_cpu;
    int p99 = (int)(0.99 * (nl - 1) + 0.5);
    if (comm_rank() == 0)
        printf("decode dataset=%s V=%d P=%d mode=%s beam=%d cache=%s lat_p50_ms=%.3f lat_p99_ms=%.3f thr_users_s=%.1f "
               "wall_lat_p50_ms=%.3f wall_lat_p99_ms=%.3f wall_thr_users_s=%.1f thr_batch=%d thr_users=%lld\n",
               o->name, o->V, comm_size(), mode, ro.beam, strcmp(mode, "ar") ? "-" : ro.use_cache ? "on" : "off",
               1e3 * lat_cpu[nl / 2], 1e3 * lat_cpu[p99], thr, 1e3 * lat[nl / 2], 1e3 * lat[p99],
               (double)done / spent, o->batch, (long long)done);
    fflush(stdout);
    rec_lists_free(&out);
    recommender_free(&rc);
    free(lat);
    free(lat_cpu);
    return thr;
}

/* A model of the given size with GPT-2 initialisation (seed 1) and random codes. */
static void make_model(const Opts *o, int mode, const int32_t *codes, Model *m) {
    ModelSpec s = {.levels = o->L, .n_items = o->V, .max_chunks = o->history + 1, .d_model = o->d,
                   .n_layers = o->layers, .n_heads = o->heads, .mode = mode, .alpha = 1, .seed = 1};
    for (int l = 0; l < o->L; l++) s.codebook[l] = o->K;
    model_create(m, &s, codes);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "bench_decode");
    Opts o;
    parse(argc, argv, &o);
    if (comm_rank() == 0)
        printf("bench_decode: %s-sized model, V = %d, L = %d, K_l = %d, d = %d, %d layers, %d heads, histories of %d "
               "items, K = 10; %d ranks; %s\n",
               o.name, o.V, o.L, o.K, o.d, o.layers, o.heads, o.history, comm_size(), comm_blas_info());
    int32_t *codes = xmalloc(sizeof(int32_t) * (size_t)o.V * (o.L ? o.L : 1));
    for (int64_t i = 0; i < (int64_t)o.V * o.L; i++) codes[i] = (int32_t)rng_below(3, 0, (uint64_t)i, (uint64_t)o.K);
    Trie t;
    trie_build(&t, codes, o.V, o.L);
    Model car, ar;
    make_model(&o, MODE_CAR, codes, &car);
    make_model(&o, MODE_AR, codes, &ar);
    double fast = run(&car, &t, &o, "car_fast", (RecOptions){.K = 10});
    double slow = run(&car, &t, &o, "car_slow", (RecOptions){.K = 10, .think_weight = 0.5f, .think_levels = o.L});
    for (int i = 0; i < o.n_beams; i++) {
        double on = run(&ar, &t, &o, "ar", (RecOptions){.K = 10, .beam = o.beams[i], .use_cache = 1});
        double off = o.recompute ? run(&ar, &t, &o, "ar", (RecOptions){.K = 10, .beam = o.beams[i], .use_cache = 0}) : NAN;
        if (comm_rank() == 0)
            printf("ratio dataset=%s P=%d beam=%d car_fast_over_ar=%.2f car_slow_over_ar=%.2f car_fast_over_ar_nocache=%.2f "
                   "kv_cache_speedup=%.2f\n",
                   o.name, comm_size(), o.beams[i], fast / on, slow / on, fast / off, on / off);
    }
    model_free(&car);
    model_free(&ar);
    trie_free(&t);
    free(codes);
    comm_finalize();
    return 0;
}
