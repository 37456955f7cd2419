/* bench_eval RUN_DIR [--reps R] [--think-weight B] [--batch B] [--ranks-out DIR]
 * Full-ranking evaluation speed of a trained car run (its config.cfg, sids.h5 and best
 * checkpoint; run from the directory its data.path is relative to): eval_split of the valid and
 * the test split, R times each (median), as car_train's eval stage runs them. Prints what ran
 * (ranks, threads, BLAS kernel), users/s (users with a target, both splits, per second of wall
 * time on the slowest rank) and users per CPU second (all ranks' CPU time: on a shared machine the
 * steadier figure; with P > 1 it includes MPI's waiting), the metrics, and with --ranks-out
 * writes ranks_{valid,test}.bin there (eval_split_write_ranks): two builds compare byte for byte. */
#include "bench_util.h"
#include "checkpoint.h"
#include "comm.h"
#include "config.h"
#include "eval.h"
#include "sid.h"
#include "util.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One eval_split: wall seconds of the slowest rank into *wall, CPU seconds of all ranks
 * together into *cpu (the figure that other load on the machine disturbs least). */
static void timed_split(Model *m, const UserSlice *us, Split split, const EvalOptions *o, MetricSums *ms, double *wall,
                        double *cpu) {
    comm_barrier();
    double t[2] = {comm_wtime(), bench_cpu_seconds()};
    eval_split(m, us, split, o, ms);
    t[0] = comm_wtime() - t[0], t[1] = bench_cpu_seconds() - t[1];
    comm_max_double(&t[0], 1);
    comm_sum_double(&t[1], 1);
    *wall += t[0], *cpu += t[1];
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "bench_eval");
    const char *run_dir = NULL, *ranks_out = NULL;
    int reps = 3, batch = 0;
    double beta = -1;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (k[0] != '-') { run_dir = k; continue; }
        if (!v) comm_fail("%s needs a value", k);
        if (!strcmp(k, "--reps")) reps = atoi(v);
        else if (!strcmp(k, "--think-weight")) beta = atof(v);
        else if (!strcmp(k, "--batch")) batch = atoi(v);
        else if (!strcmp(k, "--ranks-out")) ranks_out = v;
        else comm_fail("unknown option %s (see the source header)", k);
        i++;
    }
    if (!run_dir || reps < 1 || reps > 100 || batch < 0)
        comm_fail("usage: bench_eval RUN_DIR [--reps 1..100] [--think-weight B] [--batch B] [--ranks-out DIR]");
    char *cfg_path = xsprintf("%s/config.cfg", run_dir), *best = checkpoint_best(run_dir);
    if (!file_exists(cfg_path) || !best)
        comm_fail("%s: not a trained run directory (config.cfg, checkpoints/)", run_dir);
    CarConfig cfg;
    config_load(&cfg, cfg_path, 0, NULL);
    if (cfg.train.mode != MODE_CAR) comm_fail("%s: an ar run; bench_eval times car full ranking", run_dir);
    Dataset ds;
    dataset_open(&ds, cfg.data.path);
    UserSlice us;
    dataset_read_my_users(&ds, &us);
    int64_t V = ds.n_items;
    int L = cfg.sid.levels;
    int32_t *codes = xmalloc(sizeof(int32_t) * (size_t)(V * (L ? L : 1)));
    if (L) sid_load_codes(run_dir, V, 0, V, L, codes);
    ModelSpec spec;
    model_spec_from_config(&spec, &cfg, V);
    Model m;
    model_create(&m, &spec, codes);
    ParamArena *arenas[2] = {&m.params, &m.uid.arena};
    const char *names[2] = {"params", "uid"};
    CheckpointState st = {0};
    checkpoint_load(best, &st, arenas, names, 2);
    EvalOptions o;
    eval_options_from_config(&o, &cfg);
    if (beta >= 0) o.think_weight = beta;
    if (batch) o.batch_size = batch;
    MetricSums ms[2];
    double *t = xcalloc(2 * (size_t)reps, sizeof(double)), *c = t + reps; /* wall, cpu */
    for (int r = 0; r < reps; r++) {
        timed_split(&m, &us, SPLIT_VALID, &o, &ms[0], &t[r], &c[r]);
        timed_split(&m, &us, SPLIT_TEST, &o, &ms[1], &t[r], &c[r]);
    }
    double tmed = bench_median(t, reps), cmed = bench_median(c, reps);
    if (ranks_out) {
        eval_split_write_ranks(&m, &us, SPLIT_VALID, &o, &ms[0], ranks_out);
        eval_split_write_ranks(&m, &us, SPLIT_TEST, &o, &ms[1], ranks_out);
    }
    double users = (double)(ms[0].n + ms[1].n), rss = comm_peak_rss_mib();
    if (comm_rank() == 0) {
        printf("bench_eval %s (%s, epoch %d): V=%lld d=%d L=%d, %.0f users (valid + test), eval batch %d, think_weight "
               "%g, filter_history %d | ranks=%d threads=%d %s\n",
               run_dir, best, st.best_epoch, (long long)V, spec.d_model, L, users, o.batch_size, o.think_weight,
               o.filter_history, comm_size(), openblas_get_num_threads(), comm_blas_info());
        printf("  valid + test: median %.3f s wall of %d (min %.3f, max %.3f) = %.0f users/s; %.3f CPU s (all ranks) = "
               "%.0f users per CPU second | valid R@10 %.4f N@10 %.4f, test R@10 %.4f N@10 %.4f | peak memory %.0f MiB "
               "per rank (max)\n",
               tmed, reps, t[0], t[reps - 1], users / tmed, cmed, users / cmed, ms[0].recall[1] / (double)ms[0].n,
               ms[0].ndcg[1] / (double)ms[0].n, ms[1].recall[1] / (double)ms[1].n, ms[1].ndcg[1] / (double)ms[1].n,
               rss);
        printf("BENCH eval ranks=%d threads=%d users=%.0f seconds=%.4f users_per_s=%.1f cpu_seconds=%.4f "
               "users_per_cpu_s=%.1f rss_mib=%.0f\n",
               comm_size(), openblas_get_num_threads(), users, tmed, users / tmed, cmed, users / cmed, rss);
    }
    free(st.extra_json); free(best); free(cfg_path); free(codes); free(t);
    model_free(&m);
    user_slice_free(&us);
    dataset_close(&ds);
    config_free(&cfg);
    comm_finalize();
    return 0;
}
