#include "train.h"
#include "comm.h"
#include "dataset.h"
#include "eval.h"
#include "gradsync.h"
#include "h5io.h"
#include "log.h"
#include "model.h"
#include "rng.h"
#include "sid.h"
#include "checkpoint.h"
#include <signal.h>
#include "util.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { uint64_t key; int64_t user; } OrderKey;

static int cmp_order(const void *a, const void *b) {
    const OrderKey *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return (x->user > y->user) - (x->user < y->user);
}

/* The users that have a training window, in the seeded order of epoch e: the same on every
 * rank and for every rank count. */
static int64_t epoch_order(const int64_t *offsets, int64_t n_users, uint64_t seed, int epoch,
                           int64_t *order) {
    OrderKey *k = xmalloc(sizeof(OrderKey) * (size_t)(n_users + 1));
    int64_t n = 0;
    for (int64_t u = 0; u < n_users; u++) {
        if (!dataset_split_exists(offsets[u + 1] - offsets[u], SPLIT_TRAIN)) continue;
        k[n].key = rng_u64(seed, 0x5eed0000ULL + (uint64_t)epoch, (uint64_t)u);
        k[n++].user = u;
    }
    qsort(k, (size_t)n, sizeof *k, cmp_order);
    for (int64_t i = 0; i < n; i++) order[i] = k[i].user;
    free(k);
    return n;
}

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

/* Slow thinking at a few weights beta, for choosing eval.think_weight on validation. */
static json_t *slow_thinking_sweep(Model *m, const UserSlice *users, const EvalOptions *eo) {
    static const double betas[] = {0.25, 0.5, 1.0};
    json_t *out = json_array();
    for (size_t i = 0; i < sizeof betas / sizeof betas[0]; i++) {
        EvalOptions o = *eo;
        o.think_weight = betas[i];
        MetricSums vs, ts;
        eval_split(m, users, SPLIT_VALID, &o, &vs);
        eval_split(m, users, SPLIT_TEST, &o, &ts);
        char what[64];
        snprintf(what, sizeof what, "slow thinking beta %.2f valid", betas[i]);
        log_metrics(what, &vs);
        snprintf(what, sizeof what, "slow thinking beta %.2f test ", betas[i]);
        log_metrics(what, &ts);
        json_array_append_new(out, json_pack("{s:f,s:o,s:o}", "think_weight", betas[i], "valid", metrics_json(&vs), "test",
                                             metrics_json(&ts)));
    }
    return out;
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
    if (gs) gradsync_finish(gs);
    else comm_sum_float(m->params.grads, (int)m->params.total);
    *grad_norm = model_optimizer_step(m, oc, step);
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
        if (write_file_atomic(path, body) != 0) err = xsprintf("%s: cannot write", path);
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

static volatile sig_atomic_t stop_signal;
static void on_stop_signal(int sig) { stop_signal = sig; }

/* Trains from scratch or from the latest checkpoint (run.resume); saves a checkpoint every
 * run.checkpoint_every steps and after every epoch. Returns 0 when training is complete,
 * 1 when a signal stopped it (a checkpoint was saved; resume continues exactly). */
static int train_loop(Run *r, json_t *summary) {
    const CarConfig *cfg = r->cfg;
    Model *m = &r->m;
    double t_start = comm_wtime();
    int L = cfg->sid.levels, C = L + 1, B = cfg->train.batch_size, mx = cfg->data.max_history;
    int is_ar = cfg->train.mode == MODE_AR;
    int64_t *order = xmalloc(sizeof(int64_t) * (size_t)(r->U + 1));
    int64_t n_train = epoch_order(r->offsets, r->U, (uint64_t)cfg->train.seed, 0, order);
    if (n_train == 0) comm_fail("%s: no user has a training window (users need at least 4 items)", cfg->data.path);
    int64_t steps_per_epoch = (n_train + B - 1) / B;
    int64_t total_steps = steps_per_epoch * cfg->train.epochs;
    if (cfg->train.max_steps > 0 && cfg->train.max_steps < total_steps) total_steps = cfg->train.max_steps;
    OptimConfig oc;
    optim_from_config(&oc, cfg, total_steps);
    CheckpointState st = {.epoch = 1, .seed = (uint64_t)cfg->train.seed, .best_score = -INFINITY, .best_step = -1,
                          .config = r->cfg_text};
    int resumed = 0;
    if (cfg->run.resume) {
        char *path = checkpoint_latest(cfg->run.dir);
        if (path) {
            checkpoint_load(path, &st, r->arenas, r->names, 2);
            log_info("resumed from %s (written by %d rank(s)): step %lld, epoch %d", path, st.ranks, (long long)st.step,
                     st.epoch);
            resumed = 1;
        } else {
            log_info("run.resume: no checkpoint in %s/checkpoints yet, starting at step 0", cfg->run.dir);
        }
        free(path);
        free(st.extra_json);
        st.extra_json = NULL;
    }
    log_info("train: %lld users with a training window, %lld steps per epoch of %d, %lld steps in all; %lld parameters "
             "(%s mode, L = %d)",
             (long long)n_train, (long long)steps_per_epoch, B, (long long)total_steps,
             (long long)model_num_params(m), is_ar ? "ar" : "car", L);
    FILE *mlog = NULL;
    if (comm_rank() == 0) {
        char *path = xsprintf("%s/metrics.jsonl", cfg->run.dir);
        mlog = fopen(path, resumed ? "a" : "w");
        if (!mlog) comm_fatal("%s: cannot write", path);
        free(path);
    }
    struct sigaction sa = {0}, old_term, old_usr1;
    sa.sa_handler = on_stop_signal;
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGUSR1, &sa, &old_usr1);
    int *len = xmalloc(sizeof(int) * (size_t)B);
    int64_t *sample = xmalloc(sizeof(int64_t) * (size_t)B);
    int32_t *items = xmalloc(sizeof(int32_t) * (size_t)B * (size_t)(mx + 1));
    const UserSlice *us = &r->users;
    int64_t step = st.step, first_step = st.step;
    int stopped = 0, epochs_run = st.epoch - 1;
    double acc[6] = {0}, tokens_acc = 0, t_log = comm_wtime(), train_seconds = 0, tokens_total = 0;
    for (int epoch = st.epoch; epoch <= cfg->train.epochs && step < total_steps && st.bad_evals <= cfg->train.patience;
         epoch++) {
        epoch_order(r->offsets, r->U, (uint64_t)cfg->train.seed, epoch, order);
        double t_epoch = comm_wtime();
        int64_t s = epoch == st.epoch ? st.step_in_epoch : 0;
        for (; s < steps_per_epoch && step < total_steps; s++, step++) {
            int nb = 0;
            int64_t n_items = 0;
            for (int64_t i = s * B; i < (s + 1) * B && i < n_train; i++) {
                int64_t u = order[i];
                if (u < us->lo || u >= us->hi) continue; /* another rank's user */
                const int32_t *seq = us->items + us->offsets[u - us->lo], *h;
                int64_t hl;
                int32_t t;
                dataset_split(seq, us->offsets[u - us->lo + 1] - us->offsets[u - us->lo], SPLIT_TRAIN, mx, &h, &hl, &t);
                memcpy(items + n_items, h, sizeof(int32_t) * (size_t)hl);
                n_items += hl;
                len[nb] = (int)hl;
                sample[nb++] = u;
            }
            ModelBatch batch = {nb, len, items, sample};
            double gnorm;
            ModelLoss l = train_step(m, &r->sync, &batch, &oc, step, &gnorm);
            double tok = 0;
            for (int b = 0; b < nb; b++) tok += is_ar ? (double)len[b] * C - 1 : (double)(len[b] - 1) * C;
            /* the stop flag travels with the loss sums: every rank stops at the same step */
            double ls[8] = {l.loss_sum, l.act_sum, l.think_sum, (double)l.n_loss, (double)l.n_act, (double)l.n_think, tok,
                            (double)(stop_signal != 0)};
            comm_sum_double(ls, 8);
            for (int k = 0; k < 6; k++) acc[k] += ls[k];
            tokens_acc += ls[6];
            tokens_total += ls[6];
            if ((step + 1) % cfg->train.log_every == 0 || step + 1 == total_steps || s + 1 == steps_per_epoch) {
                double now = comm_wtime(), dt = now - t_log;
                train_seconds += dt;
                double per_step = train_seconds / (double)(step + 1 - first_step), left = per_step * (double)(total_steps - step - 1);
                double loss = acc[0] / fmax(acc[3], 1), act = acc[1] / fmax(acc[4], 1), think = acc[2] / fmax(acc[5], 1);
                log_info("epoch %d step %lld/%lld: loss %.4f (act %.4f, think %.4f), |g| %.3f, lr %.2e, %.0f tokens/s, "
                         "left ~%.0fs",
                         epoch, (long long)step + 1, (long long)total_steps, loss, act, think, gnorm, optim_lr(&oc, step),
                         tokens_acc / dt, left);
                emit(mlog, json_pack("{s:s,s:i,s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "kind", "train", "epoch", epoch, "step",
                                     (json_int_t)(step + 1), "loss", loss, "act_loss", act, "think_loss", think,
                                     "grad_norm", gnorm, "lr", optim_lr(&oc, step), "tokens_per_second", tokens_acc / dt,
                                     "elapsed_seconds", now - t_start));
                memset(acc, 0, sizeof acc);
                tokens_acc = 0;
                t_log = comm_wtime();
            }
            int periodic = cfg->run.checkpoint_every > 0 && (step + 1) % cfg->run.checkpoint_every == 0;
            if ((periodic || ls[7] > 0) && s + 1 < steps_per_epoch) {
                st.step = step + 1;
                st.epoch = epoch;
                st.step_in_epoch = s + 1;
                checkpoint_save(cfg->run.dir, &st, r->arenas, r->names, 2, cfg->run.keep_checkpoints);
            }
            if (ls[7] > 0) {
                log_info("stopped by a signal after step %lld: checkpoint saved in %s/checkpoints; continue with "
                         "-o run.resume=true",
                         (long long)step + 1, cfg->run.dir);
                stopped = 1;
                step++;
                break;
            }
        }
        if (stopped) break;
        epochs_run = epoch;
        double epoch_seconds = comm_wtime() - t_epoch;
        if (epoch % cfg->train.eval_every == 0 || epoch == cfg->train.epochs || step >= total_steps) {
            double t_eval = comm_wtime(), score;
            json_t *o = json_pack("{s:s,s:i,s:I,s:f}", "kind", "valid", "epoch", epoch, "step", (json_int_t)step,
                                  "epoch_seconds", epoch_seconds);
            if (is_ar) {
                double vl = eval_loss(m, us, SPLIT_VALID, &r->eo);
                score = -vl;
                log_info("epoch %d valid loss %.4f (%.1fs)", epoch, vl, comm_wtime() - t_eval);
                json_object_set_new(o, "loss", json_real(vl));
            } else {
                MetricSums ms;
                eval_split(m, us, SPLIT_VALID, &r->eo, &ms);
                score = ndcg10(&ms);
                char what[64];
                snprintf(what, sizeof what, "epoch %d valid", epoch);
                log_metrics(what, &ms);
                json_t *mj = metrics_json(&ms);
                json_object_update(o, mj);
                json_decref(mj);
            }
            t_log += comm_wtime() - t_eval; /* evaluation time does not count as training throughput */
            emit(mlog, o);
            if (score > st.best_score) {
                st.best_score = score;
                st.best_epoch = epoch;
                st.best_step = step;
                st.bad_evals = 0;
            } else if (++st.bad_evals > cfg->train.patience) {
                log_info("early stop: no validation improvement in %d evaluations (best epoch %d)", st.bad_evals,
                         st.best_epoch);
            }
        }
        st.step = step;
        st.epoch = epoch + 1;
        st.step_in_epoch = 0;
        checkpoint_save(cfg->run.dir, &st, r->arenas, r->names, 2, cfg->run.keep_checkpoints);
    }
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGUSR1, &old_usr1, NULL);
    json_object_set_new(summary, "mode", json_string(is_ar ? "ar" : "car"));
    json_object_set_new(summary, "epochs_run", json_integer(epochs_run));
    json_object_set_new(summary, "steps", json_integer((json_int_t)step));
    json_object_set_new(summary, "train_tokens_per_second", json_real(tokens_total / fmax(train_seconds, 1e-9)));
    json_object_set_new(summary, "train_seconds", json_real(comm_wtime() - t_start));
    if (mlog) fclose(mlog);
    free(len); free(sample); free(items); free(order);
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
    log_info("evaluating %s (epoch %d)", best, st.best_epoch);
    free(best);
    const UserSlice *us = &r->users;
    json_t *valid, *test;
    if (cfg->train.mode == MODE_AR) {
        double vl = eval_loss(m, us, SPLIT_VALID, &r->eo), tl = eval_loss(m, us, SPLIT_TEST, &r->eo);
        log_info("best epoch %d: valid loss %.4f, test loss %.4f (ranking for ar needs beam search, not built yet)",
                 st.best_epoch, vl, tl);
        valid = json_pack("{s:f}", "loss", vl);
        test = json_pack("{s:f}", "loss", tl);
    } else {
        MetricSums vs, ts;
        eval_split(m, us, SPLIT_VALID, &r->eo, &vs);
        eval_split(m, us, SPLIT_TEST, &r->eo, &ts);
        char what[64];
        snprintf(what, sizeof what, "best epoch %d valid", st.best_epoch);
        log_metrics(what, &vs);
        snprintf(what, sizeof what, "best epoch %d test ", st.best_epoch);
        log_metrics(what, &ts);
        valid = metrics_json(&vs);
        test = metrics_json(&ts);
        if (cfg->sid.levels > 0) json_object_set_new(summary, "slow_thinking", slow_thinking_sweep(m, us, &r->eo));
        MetricSums ps;
        eval_popularity(us, r->V, SPLIT_TEST, &r->eo, &ps);
        log_metrics("popularity baseline test", &ps);
        json_object_set_new(summary, "popularity_test", metrics_json(&ps));
    }
    double rss = comm_peak_rss_mib();
    json_object_set_new(summary, "peak_rss_mib_per_rank", json_real(rss));
    write_results(cfg, command, valid, test, st.best_epoch, summary);
}

/* The training summary travels from the train stage to a later eval-only run. */
static char *summary_path(const CarConfig *cfg) { return xsprintf("%s/train_summary.json", cfg->run.dir); }

void train_stage_run(const CarConfig *cfg, const char *command, int do_train, int do_eval) {
    double t0 = comm_wtime();
    Run r;
    run_open(&r, cfg);
    json_t *summary = NULL;
    char *spath = summary_path(cfg);
    if (do_train) {
        summary = json_object();
        int stopped = train_loop(&r, summary);
        if (comm_rank() == 0) {
            char *text = json_dumps(summary, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
            if (write_file_atomic(spath, text) != 0) log_warn("%s: cannot write", spath);
            free(text);
        }
        if (stopped) do_eval = 0;
    } else {
        summary = json_load_file(spath, 0, NULL);
        if (!summary) summary = json_object();
    }
    if (do_eval) final_evaluation(&r, command, summary);
    json_decref(summary);
    free(spath);
    double rss = comm_peak_rss_mib();
    log_info("%s: %.1fs, peak memory %.1f MiB per rank (max)", do_train ? "train" : "eval", comm_wtime() - t0, rss);
    run_close(&r);
}
