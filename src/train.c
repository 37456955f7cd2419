#include "train.h"
#include "batch.h"
#include "bf16gemm.h"
#include "comm.h"
#include "dataset.h"
#include "eval.h"
#include "eval_ar.h"
#include "gradsync.h"
#include "h5io.h"
#include "log.h"
#include "model.h"
#include "sid.h"
#include "checkpoint.h"
#include <signal.h>
#include "util.h"
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static json_t *metrics_json(const MetricSums *s) {
    double r[METRICS_NK], n[METRICS_NK];
    metrics_mean(s, r, n);
    json_t *o = json_object();
    for (int k = 0; k < METRICS_NK; k++) {
        char key[32];
        snprintf(key, sizeof key, "recall@%d", metrics_k[k]);
        json_object_set_new(o, key, json_real(r[k]));
        snprintf(key, sizeof key, "ndcg@%d", metrics_k[k]);
        json_object_set_new(o, key, json_real(n[k]));
    }
    json_object_set_new(o, "users", json_integer(s->n));
    return o;
}

static double ndcg10(const MetricSums *s) {
    double r[METRICS_NK], n[METRICS_NK];
    metrics_mean(s, r, n);
    return n[METRICS_NK - 1];
}

static void log_metrics(const char *what, const MetricSums *s) {
    double r[METRICS_NK], n[METRICS_NK];
    metrics_mean(s, r, n);
    log_info("%s: R@5 %.4f  N@5 %.4f  R@10 %.4f  N@10 %.4f  (%lld users)", what, r[0], n[0], r[1], n[1], (long long)s->n);
}

/* rank 0 appends one JSON object a line */
static void emit(FILE *f, json_t *o) {
    if (f) {
        char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
        fprintf(f, "%s\n", s);
        fflush(f);
        free(s);
    }
    json_decref(o);
}

/* Slow thinking chosen on validation only: the weights beta are compared by validation NDCG@10
 * (with the configured weight, whose validation metrics are `configured`), and the test split
 * is read at the chosen weight alone. Reporting test at every weight would invite choosing on it. */
static json_t *slow_thinking_sweep(Model *m, const UserSlice *users, const EvalOptions *eo, const MetricSums *configured) {
    static const double betas[] = {0.25, 0.5, 1.0};
    json_t *sweep = json_array();
    double best_beta = eo->think_weight, best = ndcg10(configured);
    json_array_append_new(sweep, json_pack("{s:f,s:o}", "think_weight", eo->think_weight, "valid", metrics_json(configured)));
    for (size_t i = 0; i < sizeof betas / sizeof betas[0]; i++) {
        if (betas[i] == eo->think_weight) continue;
        EvalOptions o = *eo;
        o.think_weight = betas[i];
        MetricSums vs;
        eval_split(m, users, SPLIT_VALID, &o, &vs);
        char what[64];
        snprintf(what, sizeof what, "slow thinking beta %.2f valid", betas[i]);
        log_metrics(what, &vs);
        json_array_append_new(sweep, json_pack("{s:f,s:o}", "think_weight", betas[i], "valid", metrics_json(&vs)));
        if (ndcg10(&vs) > best) best = ndcg10(&vs), best_beta = betas[i];
    }
    EvalOptions o = *eo;
    o.think_weight = best_beta;
    MetricSums ts;
    eval_split(m, users, SPLIT_TEST, &o, &ts);
    char what[96];
    snprintf(what, sizeof what, "slow thinking: validation picks beta %.2f; test at it", best_beta);
    log_metrics(what, &ts);
    return json_pack("{s:o,s:f,s:s,s:o}", "valid_sweep", sweep, "chosen_think_weight", best_beta, "chosen_on",
                     "valid ndcg@10", "test_at_chosen", metrics_json(&ts));
}

/* Collective: 1 when every parameter on every rank is finite. */
static int params_finite(ParamArena *const *arenas, int n) {
    double bad = 0;
    for (int a = 0; a < n; a++)
        for (size_t i = 0; i < arenas[a]->total; i++)
            if (!isfinite(arenas[a]->params[i])) {
                bad = 1;
                break;
            }
    comm_max_double(&bad, 1);
    return bad == 0;
}

static void start_ready_grads(void *gs, size_t from) { gradsync_ready(gs, from); }

ModelLoss train_step(Model *m, GradSync *gs, const ModelBatch *b, const OptimConfig *oc, int64_t step,
                     double *grad_norm) {
    double targets = (double)model_count_targets(m, b);
    comm_sum_double(&targets, 1);
    if (targets == 0) comm_fatal("train_step: the global batch of step %lld has no target", (long long)step);
    model_zero_grad(m);
    ModelLoss l = model_forward(m, b, 1, step, (float)(1.0 / targets));
    m->grads_ready = gs ? start_ready_grads : NULL;
    m->grads_ready_ctx = gs;
    model_backward(m);
    m->grads_ready = NULL;
    /* the UID tables' gradients stay with their owners */
    double t0 = comm_wtime();
    if (gs) gradsync_finish(gs);
    else comm_sum_float(m->params.grads, (int)m->params.total);
    double t1 = comm_wtime();
    *grad_norm = model_optimizer_step(m, oc, step);
    if (m->prof) {
        m->prof->seconds[1][PART_GRADSYNC] += t1 - t0;
        m->prof->seconds[1][PART_OPTIM] += comm_wtime() - t1;
    }
    return l;
}

static void optim_from_config(OptimConfig *oc, const CarConfig *cfg, int64_t total_steps) {
    optim_defaults(oc);
    oc->lr = cfg->train.lr;
    oc->beta2 = cfg->train.beta2;
    oc->lr_floor = cfg->train.lr_floor;
    oc->weight_decay = cfg->train.weight_decay;
    oc->grad_clip = cfg->train.grad_clip;
    oc->warmup_steps = cfg->train.warmup_steps;
    oc->schedule = cfg->train.schedule;
    oc->total_steps = total_steps;
}

static void write_results(const CarConfig *cfg, const char *command, json_t *valid, json_t *test, int best_epoch,
                          json_t *extra) {
    json_t *r = json_object();
    json_object_set_new(r, "valid", valid);
    json_object_set_new(r, "test", test);
    json_object_set_new(r, "best_epoch", json_integer(best_epoch));
    json_object_set_new(r, "ranks", json_integer(comm_size()));
    json_object_set_new(r, "config", json_string(cfg->source));
    json_object_set_new(r, "command", json_string(command));
    char *text = config_to_string(cfg);
    json_object_set_new(r, "effective_config", json_string(text));
    free(text);
    json_object_update(r, extra);
    char *err = NULL;
    if (comm_rank() == 0) {
        char *path = xsprintf("%s/results.json", cfg->run.dir);
        char *s = json_dumps(r, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        char *body = xsprintf("%s\n", s);
        if (write_file_atomic(path, body) != 0) err = xsprintf("%s: cannot write: %s", path, strerror(errno));
        else log_info("wrote %s", path);
        free(s); free(body); free(path);
    }
    json_decref(r);
    comm_fail_if_any(err);
    free(err);
}

/* Everything a stage needs: the data this rank holds and the model. */
typedef struct {
    const CarConfig *cfg;
    Dataset ds;
    int64_t U, V;
    int64_t *offsets; /* all users' (U+1): the epoch order is global */
    UserSlice users;  /* this rank's users */
    int32_t *codes;
    Model m;
    EvalOptions eo;
    GradSync sync;
    ParamArena *arenas[2];
    const char *names[2];
    char *cfg_text;
} Run;

/* Collective: a hash of every user's item sequence, the same for any rank count. */
static uint64_t users_fingerprint(const UserSlice *us) {
    uint64_t h = 0;
    for (int64_t u = us->lo; u < us->hi; u++) {
        uint64_t x = fnv1a64(FNV64_INIT, &u, sizeof u);
        int64_t a = us->offsets[u - us->lo], b = us->offsets[u - us->lo + 1];
        h ^= fnv1a64(x, us->items + a, sizeof(int32_t) * (size_t)(b - a));
    }
    comm_xor_u64(&h, 1);
    return h;
}

static void run_open(Run *r, const CarConfig *cfg) {
    memset(r, 0, sizeof *r);
    r->cfg = cfg;
    dataset_open(&r->ds, cfg->data.path);
    r->U = r->ds.n_users;
    r->V = r->ds.n_items;
    r->offsets = xmalloc(sizeof(int64_t) * (size_t)(r->U + 1));
    h5io_read_all(r->ds.file, "/users/offsets", H5T_NATIVE_INT64, r->offsets);
    if (r->V < comm_size())
        comm_fail("%s has %lld items, fewer than the %d ranks (every rank owns a range of the items): run with at most "
                  "%lld ranks",
                  cfg->data.path, (long long)r->V, comm_size(), (long long)r->V);
    dataset_read_my_users(&r->ds, &r->users);
    int L = cfg->sid.levels;
    if (L > 0) {
        r->codes = xmalloc(sizeof(int32_t) * (size_t)(r->V * L));
        sid_load_codes(cfg->run.dir, r->V, 0, r->V, L, r->codes);
    }
    ModelSpec spec;
    model_spec_from_config(&spec, cfg, r->V);
    model_create(&r->m, &spec, r->codes);
    gradsync_init(&r->sync, &r->m.params, (size_t)cfg->train.grad_bucket_kib * 1024 / sizeof(float));
    eval_options_from_config(&r->eo, cfg);
    r->arenas[0] = &r->m.params;
    r->arenas[1] = &r->m.uid.arena;
    r->names[0] = "params";
    r->names[1] = "uid";
    /* the data is part of the trajectory: a checkpoint of another dataset at the same path must not load */
    char *text = checkpoint_config_text(cfg);
    r->cfg_text = xsprintf("%sdata.users = %lld;\ndata.items = %lld;\ndata.fingerprint = \"%016llx\";\n", text,
                           (long long)r->U, (long long)r->V, (unsigned long long)users_fingerprint(&r->users));
    free(text);
}

static void run_close(Run *r) {
    free(r->cfg_text);
    free(r->codes);
    free(r->offsets);
    gradsync_free(&r->sync);
    model_free(&r->m);
    user_slice_free(&r->users);
    dataset_close(&r->ds);
}

/* ---------------------------------------------------------------- stop signals */

static volatile sig_atomic_t stop_signal;
static void on_stop_signal(int sig) { stop_signal = sig; }

/* SA_RESTART: a write interrupted by the signal (NFS, Lustre) continues instead of failing */
void train_stop_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

int train_stop_requested(void) {
    double any = stop_signal != 0;
    comm_max_double(&any, 1);
    return any > 0;
}

/* Fault-injection hooks for tests, read once from the environment (N is a 1-based step):
 *   CAR_TEST_SIGNAL_AT_STEP=N  rank 0 sends itself SIGUSR1 during step N, so a test can stop a run
 *                              at an exact step (e.g. the last of an epoch) through the real handler;
 *   CAR_TEST_POISON_AT_STEP=N  every rank sets one replicated parameter to NaN before step N: a
 *                              diverged model, which must stop training without being saved;
 *   CAR_TEST_STEP_SLEEP_MS=T   every step sleeps T ms first, so a job-script test can outlast a
 *                              scheduler's signal on an idle machine without more computation. */
static long long env_step(const char *name) {
    const char *e = getenv(name);
    return e ? atoll(e) : -1;
}

static void test_hooks(Model *m, int64_t step) {
    static long long signal_at = -2, poison_at = -2, sleep_ms = -2;
    if (signal_at == -2) {
        signal_at = env_step("CAR_TEST_SIGNAL_AT_STEP");
        poison_at = env_step("CAR_TEST_POISON_AT_STEP");
        sleep_ms = env_step("CAR_TEST_STEP_SLEEP_MS");
    }
    if (sleep_ms > 0) {
        struct timespec ts = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    }
    if (signal_at == step + 1 && comm_rank() == 0) raise(SIGUSR1);
    if (poison_at == step + 1) m->params.params[0] = NAN;
}

/* ---------------------------------------------------------------- step statistics */

/* One step's sums over the global batch; reduced in one all-reduce, so the stop flag travels
 * with the losses and every rank decides to stop at the same step. */
typedef struct {
    double loss, act, think, n_loss, n_act, n_think, tokens, stop;
} StepStats;
#define STEP_STATS_N ((int)(sizeof(StepStats) / sizeof(double)))

static void step_stats_reduce(StepStats *s) { comm_sum_double((double *)s, STEP_STATS_N); }

static void step_stats_add(StepStats *acc, const StepStats *s) {
    double *a = (double *)acc;
    const double *b = (const double *)s;
    for (int k = 0; k < STEP_STATS_N; k++) a[k] += b[k];
}

static StepStats step_stats_of(const ModelLoss *l, double tokens) {
    return (StepStats){l->loss_sum, l->act_sum, l->think_sum, (double)l->n_loss, (double)l->n_act,
                       (double)l->n_think, tokens, (double)(stop_signal != 0)};
}

/* ---------------------------------------------------------------- the training loop */

/* The state of the loop that is not in the checkpoint (logging and throughput). */
typedef struct {
    FILE *mlog;
    StepStats acc;       /* since the last log line */
    double t_start, t_log, train_seconds, tokens_total;
    int64_t first_step, total_steps, steps_per_epoch, n_train;
    int64_t *order;      /* (U) this epoch's global user order */
    Batcher bt;          /* this rank's part of each global batch */
    OptimConfig oc;
} Loop;

/* This rank's part of global step s of the epoch (positions [sB, (s+1)B)), balanced by tokens. */
static ModelBatch fill_batch(const Run *r, Loop *lp, int64_t s) {
    int B = r->cfg->train.batch_size;
    int64_t n = lp->n_train - s * B < B ? lp->n_train - s * B : B;
    return batcher_form(&lp->bt, lp->order + s * B, (int)n, r->offsets, r->U, &r->users);
}

static void log_progress(Loop *lp, int epoch, int64_t step, double gnorm) {
    double now = comm_wtime(), dt = now - lp->t_log;
    lp->train_seconds += dt;
    double per_step = lp->train_seconds / (double)(step + 1 - lp->first_step);
    double left = per_step * (double)(lp->total_steps - step - 1), lr = optim_lr(&lp->oc, step);
    const StepStats *a = &lp->acc;
    double loss = a->loss / fmax(a->n_loss, 1), act = a->act / fmax(a->n_act, 1), think = a->think / fmax(a->n_think, 1);
    log_info("epoch %d step %lld/%lld: loss %.4f (act %.4f, think %.4f), |g| %.3f, lr %.2e, %.0f tokens/s, left ~%.0fs",
             epoch, (long long)step + 1, (long long)lp->total_steps, loss, act, think, gnorm, lr, a->tokens / dt, left);
    emit(lp->mlog, json_pack("{s:s,s:i,s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "kind", "train", "epoch", epoch, "step",
                             (json_int_t)(step + 1), "loss", loss, "act_loss", act, "think_loss", think, "grad_norm",
                             gnorm, "lr", lr, "tokens_per_second", a->tokens / dt, "elapsed_seconds",
                             now - lp->t_start));
    memset(&lp->acc, 0, sizeof lp->acc);
    lp->t_log = comm_wtime();
}

/* Collective (every rank calls it at the same step): a diverged run ends here; the parameters
 * it produced are never saved, so the last checkpoint stays the latest. */
__attribute__((noreturn)) static void fail_diverged(const Run *r, int64_t step, const char *what) {
    char *last = checkpoint_latest(r->cfg->run.dir);
    comm_fail("step %lld: %s: training stopped; the last good checkpoint (%s) is kept; resume from it with a lower "
              "train.lr or a stronger train.grad_clip",
              (long long)step + 1, what, last ? last : "none yet");
}

/* Every rank sees the same reduced sums and global norm, so all stop together. */
static void stop_if_not_finite(const Run *r, const StepStats *s, double gnorm, int64_t step) {
    const char *what = !isfinite(s->act) ? "the UID (act) loss is not finite"
                       : !isfinite(s->think) ? "the think loss is not finite"
                       : !isfinite(s->loss) ? "the loss is not finite"
                       : !isfinite(gnorm) ? "the gradient norm is not finite"
                                          : NULL;
    if (what) fail_diverged(r, step, what);
}

enum { SAVE_PERIODIC, SAVE_SIGNAL, SAVE_EPOCH_END };

/* The checkpoint policy. After step `step` (0-based), the s-th of `epoch`: periodic and signal
 * saves record the position of the next step (epoch, s + 1), even when s + 1 is the epoch's
 * end (a resumed run then evaluates that epoch first); the epoch-end save follows the epoch's
 * evaluation and records (epoch + 1, 0). */
static void save_checkpoint(Run *r, CheckpointState *st, int reason, int epoch, int64_t s, int64_t step) {
    /* e.g. an update that overflowed: never replace a good checkpoint */
    if (!params_finite(r->arenas, 2)) fail_diverged(r, step, "the parameters are not finite after the update");
    st->step = step + 1;
    st->epoch = reason == SAVE_EPOCH_END ? epoch + 1 : epoch;
    st->step_in_epoch = reason == SAVE_EPOCH_END ? 0 : s + 1;
    checkpoint_save(r->cfg->run.dir, st, r->arenas, r->names, 2, r->cfg->run.keep_checkpoints);
}

/* Collective: the split's metrics, by full ranking (car) or beam-search lists of width
 * eval.beam over the SID trie (ar). ranks_dir (may be NULL): the per-user ranks are written
 * there too (eval_write_ranks' format), for paired tests between runs. */
static void rank_split(Run *r, Split split, MetricSums *out, const char *ranks_dir) {
    if (r->cfg->train.mode == MODE_AR && ranks_dir)
        eval_ar_split_write_ranks(&r->m, &r->users, split, &r->eo, r->cfg->eval.beam, out, ranks_dir);
    else if (r->cfg->train.mode == MODE_AR) eval_ar_split(&r->m, &r->users, split, &r->eo, r->cfg->eval.beam, out);
    else if (ranks_dir) eval_split_write_ranks(&r->m, &r->users, split, &r->eo, out, ranks_dir);
    else eval_split(&r->m, &r->users, split, &r->eo, out);
}

/* Validation after an epoch: NDCG@10 (car: full ranking; ar: beam-search lists, whose held-out
 * loss is logged too) decides the best epoch and early stopping. */
static void evaluate_epoch(Run *r, Loop *lp, CheckpointState *st, int epoch, int64_t step, double epoch_seconds) {
    const CarConfig *cfg = r->cfg;
    double t_eval = comm_wtime(), score;
    json_t *o = json_pack("{s:s,s:i,s:I,s:f}", "kind", "valid", "epoch", epoch, "step", (json_int_t)step,
                          "epoch_seconds", epoch_seconds);
    if (cfg->train.mode == MODE_AR) { /* the held-out loss is logged; the beam-search ranking decides */
        double vl = eval_loss(&r->m, &r->users, SPLIT_VALID, &r->eo);
        log_info("epoch %d valid loss %.4f (target item's tokens)", epoch, vl);
        json_object_set_new(o, "loss", json_real(vl));
    }
    {
        MetricSums ms;
        rank_split(r, SPLIT_VALID, &ms, NULL);
        score = ndcg10(&ms);
        char what[64];
        snprintf(what, sizeof what, "epoch %d valid", epoch);
        log_metrics(what, &ms);
        json_t *mj = metrics_json(&ms);
        json_object_update(o, mj);
        json_decref(mj);
    }
    lp->t_log += comm_wtime() - t_eval; /* evaluation time does not count as training throughput */
    emit(lp->mlog, o);
    if (!isfinite(score)) comm_fail("epoch %d: the validation score is not finite (%g): the model diverged", epoch, score);
    if (score > st->best_score) {
        st->best_score = score;
        st->best_epoch = epoch;
        st->best_step = step;
        st->bad_evals = 0;
    } else if (++st->bad_evals > cfg->train.patience) {
        log_info("early stop: no validation improvement in %d evaluations (best epoch %d)", st->bad_evals,
                 st->best_epoch);
    }
}

static void resume_state(Run *r, CheckpointState *st) {
    const CarConfig *cfg = r->cfg;
    char *path = checkpoint_latest(cfg->run.dir);
    if (path) {
        checkpoint_load(path, st, r->arenas, r->names, 2);
        log_info("resumed from %s (written by %d rank(s)): step %lld, epoch %d", path, st->ranks, (long long)st->step,
                 st->epoch);
    } else {
        log_info("run.resume: no checkpoint in %s/checkpoints yet, starting at step 0", cfg->run.dir);
    }
    free(path);
    free(st->extra_json);
    st->extra_json = NULL;
}

static void loop_open(Run *r, Loop *lp, int resumed_at, int64_t step) {
    const CarConfig *cfg = r->cfg;
    int B = cfg->train.batch_size;
    memset(lp, 0, sizeof *lp);
    lp->t_start = lp->t_log = comm_wtime();
    lp->order = xmalloc(sizeof(int64_t) * (size_t)(r->U + 1));
    lp->n_train = batch_epoch_order(r->offsets, r->U, (uint64_t)cfg->train.seed, 0, lp->order);
    if (lp->n_train == 0) comm_fail("%s: no user has a training window (users need at least 4 items)", cfg->data.path);
    lp->steps_per_epoch = (lp->n_train + B - 1) / B;
    lp->total_steps = lp->steps_per_epoch * cfg->train.epochs;
    if (cfg->train.max_steps > 0 && cfg->train.max_steps < lp->total_steps) lp->total_steps = cfg->train.max_steps;
    lp->first_step = step;
    optim_from_config(&lp->oc, cfg, lp->total_steps);
    batcher_init(&lp->bt, B, cfg->data.max_history, cfg->train.mode, cfg->sid.levels + 1, BATCH_SPLIT_TOKENS);
    if (comm_rank() == 0) {
        char *path = xsprintf("%s/metrics.jsonl", cfg->run.dir);
        lp->mlog = fopen(path, resumed_at ? "a" : "w");
        if (!lp->mlog) comm_fatal("%s: cannot write: %s", path, strerror(errno));
        free(path);
    }
}

static void loop_close(Loop *lp) {
    if (lp->mlog) fclose(lp->mlog);
    batcher_free(&lp->bt);
    free(lp->order);
}

/* Runs the steps of one epoch from step_in_epoch s on. Returns 1 if a stop signal ended it
 * (a checkpoint of the exact step was saved), else 0. */
static int run_epoch_steps(Run *r, Loop *lp, CheckpointState *st, int epoch, int64_t s, int64_t *step) {
    const CarConfig *cfg = r->cfg;
    for (; s < lp->steps_per_epoch && *step < lp->total_steps; s++, (*step)++) {
        ModelBatch batch = fill_batch(r, lp, s);
        double gnorm;
        test_hooks(&r->m, *step);
        ModelLoss l = train_step(&r->m, &r->sync, &batch, &lp->oc, *step, &gnorm);
        StepStats ss = step_stats_of(&l, (double)batcher_tokens(&lp->bt, &batch));
        step_stats_reduce(&ss);
        stop_if_not_finite(r, &ss, gnorm, *step);
        step_stats_add(&lp->acc, &ss);
        lp->tokens_total += ss.tokens;
        int epoch_end = s + 1 == lp->steps_per_epoch || *step + 1 == lp->total_steps;
        if ((*step + 1) % cfg->train.log_every == 0 || epoch_end) log_progress(lp, epoch, *step, gnorm);
        if (ss.stop > 0) {
            save_checkpoint(r, st, SAVE_SIGNAL, epoch, s, *step);
            char *path = checkpoint_path(cfg->run.dir, *step + 1);
            log_info("stopped by a signal after step %lld: checkpoint %s saved; continue with -o run.resume=true "
                     "(exit code %d: stopped, resumable)",
                     (long long)*step + 1, path, TRAIN_EXIT_STOPPED);
            free(path);
            (*step)++;
            return 1;
        }
        int periodic = cfg->run.checkpoint_every > 0 && (*step + 1) % cfg->run.checkpoint_every == 0;
        if (periodic && !epoch_end) save_checkpoint(r, st, SAVE_PERIODIC, epoch, s, *step);
    }
    return 0;
}

/* Trains from scratch or from the latest checkpoint (run.resume). Returns 0 when training is
 * complete, 1 when a signal stopped it (a checkpoint of that step was saved; resume is exact). */
static int train_loop(Run *r, json_t *summary) {
    const CarConfig *cfg = r->cfg;
    CheckpointState st = {.epoch = 1, .seed = (uint64_t)cfg->train.seed, .best_score = -INFINITY, .best_step = -1,
                          .config = r->cfg_text};
    if (cfg->run.resume) resume_state(r, &st);
    Loop lp;
    loop_open(r, &lp, st.step > 0 || st.step_in_epoch > 0, st.step);
    log_info("train: %lld users with a training window, %lld steps per epoch of %d, %lld steps in all; %lld parameters "
             "(%s mode, L = %d)",
             (long long)lp.n_train, (long long)lp.steps_per_epoch, cfg->train.batch_size, (long long)lp.total_steps,
             (long long)model_num_params(&r->m), cfg->train.mode == MODE_AR ? "ar" : "car", cfg->sid.levels);
    if (cfg->model.uid_bf16 && !bf16_gemm_native())
        log_warn("model.uid_bf16: this CPU has no AVX512-BF16, so the UID head's bf16 products run in scalar code, "
                 "many times slower than fp32 sgemm: set model.uid_bf16 = false here");
    int64_t step = st.step;
    int stopped = 0, epochs_run = st.epoch - 1;
    for (int epoch = st.epoch; epoch <= cfg->train.epochs && st.bad_evals <= cfg->train.patience; epoch++) {
        int64_t s0 = epoch == st.epoch ? st.step_in_epoch : 0;
        if (step >= lp.total_steps && s0 == 0) break; /* s0 > 0: this epoch's end is still due */
        batch_epoch_order(r->offsets, r->U, (uint64_t)cfg->train.seed, epoch, lp.order);
        double t_epoch = comm_wtime();
        if ((stopped = run_epoch_steps(r, &lp, &st, epoch, s0, &step))) break;
        epochs_run = epoch;
        if (epoch % cfg->train.eval_every == 0 || epoch == cfg->train.epochs || step >= lp.total_steps)
            evaluate_epoch(r, &lp, &st, epoch, step, comm_wtime() - t_epoch);
        save_checkpoint(r, &st, SAVE_EPOCH_END, epoch, 0, step - 1);
    }
    json_object_set_new(summary, "mode", json_string(cfg->train.mode == MODE_AR ? "ar" : "car"));
    json_object_set_new(summary, "epochs_run", json_integer(epochs_run));
    json_object_set_new(summary, "steps", json_integer((json_int_t)step));
    json_object_set_new(summary, "train_tokens_per_second", json_real(lp.tokens_total / fmax(lp.train_seconds, 1e-9)));
    json_object_set_new(summary, "train_seconds", json_real(comm_wtime() - lp.t_start));
    loop_close(&lp);
    return stopped;
}

/* Loads the best checkpoint and writes results.json: validation and test metrics (car) or
 * losses (ar), the popularity baseline and slow thinking at a few weights. */
static void final_evaluation(Run *r, const char *command, json_t *summary) {
    const CarConfig *cfg = r->cfg;
    Model *m = &r->m;
    char *best = checkpoint_best(cfg->run.dir);
    if (!best) comm_fail("%s has no trained model (checkpoints/): run the train stage first", cfg->run.dir);
    CheckpointState st = {0}; /* config not compared: evaluation options may differ from training's */
    checkpoint_load(best, &st, r->arenas, r->names, 2);
    free(st.extra_json);
    if (!params_finite(r->arenas, 2))
        comm_fail("%s holds non-finite parameters (a diverged model): no results are written", best);
    log_info("evaluating %s (epoch %d)", best, st.best_epoch);
    free(best);
    const UserSlice *us = &r->users;
    json_t *valid, *test;
    MetricSums vs, ts;
    rank_split(r, SPLIT_VALID, &vs, cfg->run.dir);
    rank_split(r, SPLIT_TEST, &ts, cfg->run.dir);
    char what[64];
    snprintf(what, sizeof what, "best epoch %d valid", st.best_epoch);
    log_metrics(what, &vs);
    snprintf(what, sizeof what, "best epoch %d test ", st.best_epoch);
    log_metrics(what, &ts);
    valid = metrics_json(&vs);
    test = metrics_json(&ts);
    if (cfg->train.mode == MODE_AR) {
        double vl = eval_loss(m, us, SPLIT_VALID, &r->eo), tl = eval_loss(m, us, SPLIT_TEST, &r->eo);
        log_info("best epoch %d: beam %d; valid loss %.4f, test loss %.4f (target item's tokens)", st.best_epoch,
                 cfg->eval.beam, vl, tl);
        json_object_set_new(valid, "loss", json_real(vl));
        json_object_set_new(test, "loss", json_real(tl));
        json_object_set_new(summary, "beam", json_integer(cfg->eval.beam));
    } else if (cfg->sid.levels > 0) {
        json_object_set_new(summary, "slow_thinking", slow_thinking_sweep(m, us, &r->eo, &vs));
    }
    MetricSums ps;
    eval_popularity(us, r->V, SPLIT_TEST, &r->eo, &ps);
    log_metrics("popularity baseline test", &ps);
    json_object_set_new(summary, "popularity_test", metrics_json(&ps));
    double rss = comm_peak_rss_mib();
    json_object_set_new(summary, "peak_rss_mib_per_rank", json_real(rss));
    /* the BLAS kernel and threads of the evaluation: they change the float rounding, hence a rerun's digits */
    json_object_set_new(summary, "blas", json_string(comm_blas_info()));
    write_results(cfg, command, valid, test, st.best_epoch, summary);
}

/* The training summary travels from the train stage to a later eval-only run. */
static char *summary_path(const CarConfig *cfg) { return xsprintf("%s/train_summary.json", cfg->run.dir); }

int train_stage_run(const CarConfig *cfg, const char *command, int do_train, int do_eval) {
    double t0 = comm_wtime();
    Run r;
    run_open(&r, cfg);
    json_t *summary = NULL;
    char *spath = summary_path(cfg);
    int stopped = 0;
    if (do_train) {
        summary = json_object();
        stopped = train_loop(&r, summary);
        if (comm_rank() == 0) {
            char *text = json_dumps(summary, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
            if (write_file_atomic(spath, text) != 0) log_warn("%s: cannot write: %s", spath, strerror(errno));
            free(text);
        }
        if (stopped) do_eval = 0;
    } else {
        summary = json_load_file(spath, 0, NULL);
        if (!summary) summary = json_object();
    }
    if (do_eval && !stopped && train_stop_requested()) { /* a signal between the stages: evaluate on resume */
        log_info("stopped by a signal before the evaluation; run again to evaluate (exit code %d)", TRAIN_EXIT_STOPPED);
        stopped = 1;
        do_eval = 0;
    }
    if (do_eval) final_evaluation(&r, command, summary);
    json_decref(summary);
    free(spath);
    double rss = comm_peak_rss_mib();
    log_info("%s: %.1fs, peak memory %.1f MiB per rank (max)", do_train ? "train" : "eval", comm_wtime() - t0, rss);
    run_close(&r);
    return stopped ? TRAIN_EXIT_STOPPED : 0;
}
