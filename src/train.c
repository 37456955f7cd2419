#include "train.h"
#include "comm.h"
#include "dataset.h"
#include "eval.h"
#include "h5io.h"
#include "log.h"
#include "model.h"
#include "rng.h"
#include "sid.h"
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

typedef struct {
    float *params, *uid;
} Snapshot;

static void snapshot_take(Snapshot *s, const Model *m) {
    if (!s->params) {
        s->params = xmalloc(sizeof(float) * m->params.total);
        s->uid = xmalloc(sizeof(float) * m->uid.arena.total);
    }
    memcpy(s->params, m->params.params, sizeof(float) * m->params.total);
    memcpy(s->uid, m->uid.arena.params, sizeof(float) * m->uid.arena.total);
}

static void snapshot_restore(const Snapshot *s, Model *m) {
    memcpy(m->params.params, s->params, sizeof(float) * m->params.total);
    memcpy(m->uid.arena.params, s->uid, sizeof(float) * m->uid.arena.total);
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

void train_stage_run(const CarConfig *cfg, const char *command) {
    double t_start = comm_wtime();
    Dataset ds;
    dataset_open(&ds, cfg->data.path);
    int64_t U = ds.n_users, V = ds.n_items;
    int64_t *offsets = xmalloc(sizeof(int64_t) * (size_t)(U + 1));
    h5io_read_all(ds.file, "/users/offsets", H5T_NATIVE_INT64, offsets);
    UserSlice users;
    dataset_read_my_users(&ds, &users);
    int L = cfg->sid.levels;
    int32_t *codes = NULL;
    if (L > 0) {
        codes = xmalloc(sizeof(int32_t) * (size_t)(V * L));
        sid_load_codes(cfg->run.dir, 0, V, L, codes);
    }
    ModelSpec spec;
    model_spec_from_config(&spec, cfg, V);
    Model m;
    model_create(&m, &spec, codes);
    EvalOptions eo;
    eval_options_from_config(&eo, cfg);
    int C = L + 1, B = cfg->train.batch_size, mx = cfg->data.max_history;
    int64_t *order = xmalloc(sizeof(int64_t) * (size_t)(U + 1));
    int64_t n_train = epoch_order(offsets, U, (uint64_t)cfg->train.seed, 0, order);
    if (n_train == 0) comm_fail("%s: no user has a training window (users need at least 4 items)", cfg->data.path);
    int64_t steps_per_epoch = (n_train + B - 1) / B;
    int64_t total_steps = steps_per_epoch * cfg->train.epochs;
    if (cfg->train.max_steps > 0 && cfg->train.max_steps < total_steps) total_steps = cfg->train.max_steps;
    OptimConfig oc;
    optim_from_config(&oc, cfg, total_steps);
    log_info("train: %lld users with a training window, %lld steps per epoch of %d, %lld steps in all; %lld parameters "
             "(%s mode, L = %d)",
             (long long)n_train, (long long)steps_per_epoch, B, (long long)total_steps,
             (long long)model_num_params(&m), cfg->train.mode == MODE_AR ? "ar" : "car", L);

    FILE *mlog = NULL;
    if (comm_rank() == 0) {
        char *path = xsprintf("%s/metrics.jsonl", cfg->run.dir);
        mlog = fopen(path, "w");
        if (!mlog) comm_fatal("%s: cannot write", path);
        free(path);
    }
    int *len = xmalloc(sizeof(int) * (size_t)B);
    int64_t *sample = xmalloc(sizeof(int64_t) * (size_t)B);
    int32_t *items = xmalloc(sizeof(int32_t) * (size_t)B * (size_t)(mx + 1));
    Snapshot best = {0};
    int is_ar = cfg->train.mode == MODE_AR;
    double best_score = -INFINITY;
    int best_epoch = 0, bad_evals = 0, epochs_run = 0;
    int64_t step = 0;
    double acc[6] = {0}, tokens_acc = 0, t_log = comm_wtime(), train_seconds = 0, tokens_total = 0;
    for (int epoch = 1; epoch <= cfg->train.epochs && step < total_steps; epoch++) {
        epoch_order(offsets, U, (uint64_t)cfg->train.seed, epoch, order);
        double t_epoch = comm_wtime();
        for (int64_t s = 0; s < steps_per_epoch && step < total_steps; s++, step++) {
            int nb = 0;
            int64_t n_items = 0;
            for (int64_t i = s * B; i < (s + 1) * B && i < n_train; i++) {
                int64_t u = order[i];
                if (u < users.lo || u >= users.hi) continue; /* another rank's user */
                const int32_t *seq = users.items + users.offsets[u - users.lo], *h;
                int64_t hl;
                int32_t t;
                dataset_split(seq, users.offsets[u - users.lo + 1] - users.offsets[u - users.lo], SPLIT_TRAIN, mx, &h, &hl, &t);
                memcpy(items + n_items, h, sizeof(int32_t) * (size_t)hl);
                n_items += hl;
                len[nb] = (int)hl;
                sample[nb++] = u;
            }
            ModelBatch batch = {nb, len, items, sample};
            double targets = (double)model_count_targets(&m, &batch);
            comm_sum_double(&targets, 1);
            model_zero_grad(&m);
            ModelLoss l = model_forward(&m, &batch, 1, step, (float)(1.0 / targets));
            model_backward(&m);
            if (comm_size() > 1) {
                comm_sum_float(m.params.grads, (int)m.params.total);
                comm_sum_float(m.uid.arena.grads, (int)m.uid.arena.total);
            }
            double gnorm = model_optimizer_step(&m, &oc, step);
            double ls[6] = {l.loss_sum, l.act_sum, l.think_sum, (double)l.n_loss, (double)l.n_act, (double)l.n_think};
            comm_sum_double(ls, 6);
            for (int k = 0; k < 6; k++) acc[k] += ls[k];
            double tok = 0;
            for (int b = 0; b < nb; b++) tok += is_ar ? (double)len[b] * C - 1 : (double)(len[b] - 1) * C;
            comm_sum_double(&tok, 1);
            tokens_acc += tok;
            tokens_total += tok;
            if ((step + 1) % cfg->train.log_every == 0 || step + 1 == total_steps || s + 1 == steps_per_epoch) {
                double now = comm_wtime(), dt = now - t_log;
                train_seconds += dt;
                double per_step = train_seconds / (double)(step + 1), left = per_step * (double)(total_steps - step - 1);
                double loss = acc[0] / fmax(acc[3], 1), act = acc[1] / fmax(acc[4], 1), think = acc[2] / fmax(acc[5], 1);
                log_info("epoch %d step %lld/%lld: loss %.4f (act %.4f, think %.4f), |g| %.3f, lr %.2e, %.0f tokens/s, "
                         "left ~%.0fs",
                         epoch, (long long)step + 1, (long long)total_steps, loss, act, think, gnorm, optim_lr(&oc, step),
                         tokens_acc / dt, left);
                json_t *o = json_pack("{s:s,s:i,s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "kind", "train", "epoch", epoch, "step",
                                      (json_int_t)(step + 1), "loss", loss, "act_loss", act, "think_loss", think,
                                      "grad_norm", gnorm, "lr", optim_lr(&oc, step), "tokens_per_second", tokens_acc / dt,
                                      "elapsed_seconds", now - t_start);
                emit(mlog, o);
                memset(acc, 0, sizeof acc);
                tokens_acc = 0;
                t_log = comm_wtime();
            }
        }
        epochs_run = epoch;
        double epoch_seconds = comm_wtime() - t_epoch;
        if (epoch % cfg->train.eval_every != 0 && epoch != cfg->train.epochs && step < total_steps) continue;
        double t_eval = comm_wtime(), score;
        json_t *o = json_pack("{s:s,s:i,s:I,s:f}", "kind", "valid", "epoch", epoch, "step", (json_int_t)step,
                              "epoch_seconds", epoch_seconds);
        if (is_ar) {
            double vl = eval_loss(&m, &users, SPLIT_VALID, &eo);
            score = -vl;
            log_info("epoch %d valid loss %.4f (%.1fs)", epoch, vl, comm_wtime() - t_eval);
            json_object_set_new(o, "loss", json_real(vl));
        } else {
            MetricSums ms;
            eval_split(&m, &users, SPLIT_VALID, &eo, &ms);
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
        if (score > best_score) {
            best_score = score;
            best_epoch = epoch;
            bad_evals = 0;
            snapshot_take(&best, &m);
        } else if (++bad_evals > cfg->train.patience) {
            log_info("early stop: no validation improvement in %d evaluations (best epoch %d)", bad_evals, best_epoch);
            break;
        }
    }
    snapshot_restore(&best, &m);
    json_t *extra = json_pack("{s:s,s:i,s:I,s:f,s:f}", "mode", is_ar ? "ar" : "car", "epochs_run", epochs_run, "steps",
                              (json_int_t)step, "train_tokens_per_second", tokens_total / fmax(train_seconds, 1e-9),
                              "wall_seconds", comm_wtime() - t_start);
    json_t *valid, *test;
    if (is_ar) {
        double vl = eval_loss(&m, &users, SPLIT_VALID, &eo), tl = eval_loss(&m, &users, SPLIT_TEST, &eo);
        log_info("best epoch %d: valid loss %.4f, test loss %.4f (ranking for ar needs beam search, not built yet)",
                 best_epoch, vl, tl);
        valid = json_pack("{s:f}", "loss", vl);
        test = json_pack("{s:f}", "loss", tl);
    } else {
        MetricSums vs, ts;
        eval_split(&m, &users, SPLIT_VALID, &eo, &vs);
        eval_split(&m, &users, SPLIT_TEST, &eo, &ts);
        char what[64];
        snprintf(what, sizeof what, "best epoch %d valid", best_epoch);
        log_metrics(what, &vs);
        snprintf(what, sizeof what, "best epoch %d test ", best_epoch);
        log_metrics(what, &ts);
        valid = metrics_json(&vs);
        test = metrics_json(&ts);
        MetricSums ps;
        eval_popularity(&users, V, SPLIT_TEST, &eo, &ps);
        log_metrics("popularity baseline test", &ps);
        json_object_set_new(extra, "popularity_test", metrics_json(&ps));
    }
    double rss = (double)peak_rss_kib() / 1024.0;
    comm_max_double(&rss, 1);
    json_object_set_new(extra, "peak_rss_mib_per_rank", json_real(rss));
    write_results(cfg, command, valid, test, best_epoch, extra);
    json_decref(extra);
    log_info("train: %.1fs, peak memory %.1f MiB per rank (max)", comm_wtime() - t_start, rss);
    if (mlog) fclose(mlog);
    free(best.params); free(best.uid); free(len); free(sample); free(items); free(order); free(offsets); free(codes);
    model_free(&m);
    user_slice_free(&users);
    dataset_close(&ds);
}
