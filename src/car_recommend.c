/* car_recommend RUN_DIR --users FILE|all --k K [--beam W] [--exclude-history] [--think-weight B]
 *               [--no-cache] --out recs.jsonl
 * Top-K recommendations of a trained run (its best checkpoint and sids.h5), car or ar, any
 * number of ranks, with reasons a person can read. See usage() and README.md. */
#include "beam.h"
#include "checkpoint.h"
#include "comm.h"
#include "config.h"
#include "dataset.h"
#include "h5io.h"
#include "log.h"
#include "sid.h"
#include "trie.h"
#include "util.h"
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: car_recommend RUN_DIR --users FILE|all --k K [--beam W] [--exclude-history]\n"
            "                     [--think-weight B] [--no-cache] --out recs.jsonl\n"
            "  Recommends the next K items for users of the run's dataset from its best checkpoint.\n"
            "  RUN_DIR            a car_train run directory (config.cfg, sids.h5, checkpoints/)\n"
            "  --users FILE|all   user ids (as in the input sequences file), one a line; or all users\n"
            "  --k K              items per user\n"
            "  --beam W           ar models: beam width (default: the run's eval.beam); lists may come\n"
            "                     out shorter than K when W beams hold fewer items (\"complete\": false)\n"
            "  --exclude-history  never recommend an item the user has already interacted with\n"
            "  --think-weight B   car models: slow thinking, UID logit + B * sum of the SID log-probs\n"
            "                     (default: the run's eval.think_weight)\n"
            "  --no-cache         ar models: recompute every sequence at each step (for comparison)\n"
            "  --out FILE         JSON lines, one per user in the order of --users; written whole or not at all\n"
            "Each line: user, items best first (ids as in the input files) with score, SID tuple, text and\n"
            "reasons (per SID level the\n"
            "think head's probability of the item's code and its rank among the codes; the history items\n"
            "sharing the longest SID prefix with it).\n");
}

typedef struct {
    const char *run_dir, *users, *out;
    int k, beam, exclude_history, no_cache;
    double think_weight; /* < 0: the run's */
} Args;

static int parse_int(const char *flag, const char *v, int lo) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > 1000000) comm_fail("%s '%s': expected an integer >= %d", flag, v, lo);
    return (int)x;
}

static void parse_args(int argc, char **argv, Args *a) {
    memset(a, 0, sizeof *a);
    a->think_weight = -1;
    a->beam = 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            if (comm_rank() == 0) usage(stdout);
            comm_finalize();
            exit(0);
        } else if (!strcmp(s, "--exclude-history")) a->exclude_history = 1;
        else if (!strcmp(s, "--no-cache")) a->no_cache = 1;
        else if (s[0] == '-' && !has) comm_fail("%s needs a value (see --help)", s);
        else if (!strcmp(s, "--users")) a->users = argv[++i];
        else if (!strcmp(s, "--out")) a->out = argv[++i];
        else if (!strcmp(s, "--k")) a->k = parse_int(s, argv[++i], 1);
        else if (!strcmp(s, "--beam")) a->beam = parse_int(s, argv[++i], 1);
        else if (!strcmp(s, "--think-weight")) {
            char *end;
            a->think_weight = strtod(argv[++i], &end);
            if (!*argv[i] || *end || !(a->think_weight >= 0 && a->think_weight <= 100))
                comm_fail("--think-weight '%s': expected a number in [0, 100]", argv[i]);
        } else if (s[0] == '-') comm_fail("unknown option '%s' (see --help)", s);
        else if (!a->run_dir) a->run_dir = s;
        else comm_fail("unexpected argument '%s' (one RUN_DIR; see --help)", s);
    }
    if (!a->run_dir) comm_fail("no RUN_DIR given (see --help)");
    if (!a->users) comm_fail("--users FILE|all is required (see --help)");
    if (!a->k) comm_fail("--k K is required (see --help)");
    if (!a->out) comm_fail("--out FILE is required (see --help)");
}

typedef struct { int64_t id, index; } IdIndex;

static int cmp_id(const void *a, const void *b) {
    int64_t x = ((const IdIndex *)a)->id, y = ((const IdIndex *)b)->id;
    return (x > y) - (x < y);
}

/* The global indices of the users named by spec ("all" or a file of ids, one a line), in its
 * order. Unknown ids end the job with one line listing them. */
static int64_t *select_users(const char *spec, const int64_t *ids, int64_t U, int64_t *n_sel) {
    int64_t *sel = xmalloc(sizeof(int64_t) * (size_t)(U + 1)), n = 0, cap = U + 1;
    if (!strcmp(spec, "all")) {
        for (int64_t u = 0; u < U; u++) sel[u] = u;
        *n_sel = U;
        return sel;
    }
    FILE *f = fopen(spec, "r");
    if (!f) comm_fail("--users %s: cannot read: %s", spec, strerror(errno));
    IdIndex *by_id = xmalloc(sizeof(IdIndex) * (size_t)(U + 1));
    for (int64_t u = 0; u < U; u++) by_id[u] = (IdIndex){ids[u], u};
    qsort(by_id, (size_t)U, sizeof *by_id, cmp_id);
    char line[256], *unknown = xstrdup("");
    int64_t n_unknown = 0;
    for (int ln = 1; fgets(line, sizeof line, f); ln++) {
        char *s = line, *end;
        while (*s == ' ' || *s == '\t') s++;
        if (*s == '\n' || *s == '\r' || !*s) continue;
        long long id = strtoll(s, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n') end++;
        if (end == s || *end) comm_fail("--users %s:%d: '%.40s' is not a user id (an integer a line)", spec, ln, strtok(s, "\r\n"));
        IdIndex key = {id, 0}, *hit = bsearch(&key, by_id, (size_t)U, sizeof *by_id, cmp_id);
        if (!hit) {
            if (n_unknown++ < 20) {
                char *next = xsprintf("%s%s%lld", unknown, n_unknown > 1 ? ", " : "", id);
                free(unknown);
                unknown = next;
            }
            continue;
        }
        if (n == cap) sel = xrealloc(sel, sizeof(int64_t) * (size_t)(cap *= 2));
        sel[n++] = hit->index;
    }
    fclose(f);
    free(by_id);
    if (n_unknown)
        comm_fail("--users %s: %lld unknown user id(s), not in the run's dataset: %s%s", spec, (long long)n_unknown, unknown,
                  n_unknown > 20 ? ", ..." : "");
    free(unknown);
    if (n == 0) comm_fail("--users %s: no user ids", spec);
    *n_sel = n;
    return sel;
}

/* What the lines need to know besides the lists. */
typedef struct {
    const Args *a;
    const CarConfig *cfg;
    const int32_t *codes;
    char **texts;
    const int64_t *ids;
    const UserSlice *all;
} Ctx;

/* an item's text as JSON (a text that is not UTF-8 says so instead of vanishing) */
static json_t *text_json(const char *s) {
    json_t *t = json_string(s ? s : "");
    return t ? t : json_string("(text is not valid UTF-8)");
}

/* codes item a and b share from level 1 on */
static int shared_prefix(const int32_t *codes, int L, int32_t a, int32_t b) {
    int l = 0;
    while (l < L && codes[(int64_t)a * L + l] == codes[(int64_t)b * L + l]) l++;
    return l;
}

/* reasons of item i of user b's list: per level its code's probability and rank; the history
 * items (most recent first, at most 5) sharing the longest SID prefix with it */
static json_t *reasons(const Ctx *c, const RecLists *l, int b, int i, const int32_t *seq, int64_t n) {
    int L = c->cfg->sid.levels;
    int32_t item = l->items[(size_t)b * l->K + i];
    json_t *levels = json_array(), *hist = json_array();
    for (int k = 0; k < L; k++) {
        size_t at = ((size_t)b * l->K + i) * L + k;
        json_array_append_new(levels, json_pack("{s:i,s:i,s:f,s:i}", "level", k + 1, "code",
                                                c->codes[(int64_t)item * L + k], "prob", (double)l->code_prob[at],
                                                "rank", l->code_rank[at]));
    }
    int best = 0;
    for (int64_t j = 0; j < n; j++) best = shared_prefix(c->codes, L, item, seq[j]) > best ? shared_prefix(c->codes, L, item, seq[j]) : best;
    for (int64_t j = n - 1; best > 0 && j >= 0 && json_array_size(hist) < 5; j--)
        if (shared_prefix(c->codes, L, item, seq[j]) == best)
            json_array_append_new(hist, json_pack("{s:i,s:o}", "item", seq[j] + 1, "text", text_json(c->texts[seq[j]])));
    return json_pack("{s:o,s:i,s:o}", "levels", levels, "shared_prefix_levels", best, "history_items", hist);
}

/* One JSON line for user u (global index) whose list is row b of l. */
static char *user_line(const Ctx *c, int64_t u, const RecLists *l, int b) {
    int L = c->cfg->sid.levels;
    const int32_t *seq = c->all->items + c->all->offsets[u];
    int64_t n = c->all->offsets[u + 1] - c->all->offsets[u];
    json_t *items = json_array();
    for (int i = 0; i < l->n[b]; i++) {
        int32_t it = l->items[(size_t)b * l->K + i];
        json_t *sid = json_array();
        for (int k = 0; k < L; k++) json_array_append_new(sid, json_integer(c->codes[(int64_t)it * L + k]));
        json_array_append_new(items, json_pack("{s:i,s:f,s:o,s:o,s:o}", "item", it + 1, "score",
                                               (double)l->scores[(size_t)b * l->K + i], "sid", sid, "text",
                                               text_json(c->texts[it]), "reasons", reasons(c, l, b, i, seq, n)));
    }
    json_t *o = json_pack("{s:I,s:I,s:o,s:b,s:o}", "user", (json_int_t)c->ids[u], "user_index", (json_int_t)u,
                          "history_length", json_integer(n), "complete", l->n[b] == l->K, "items", items);
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(o);
    if (!s) comm_fatal("car_recommend: user %lld: the JSON line could not be made (invalid UTF-8 in an item text?)",
                       (long long)c->ids[u]);
    return s;
}

/* The model of the run with its best checkpoint's parameters. */
static void load_model(const Args *a, const CarConfig *cfg, int64_t V, int32_t *codes, Model *m) {
    char *best = checkpoint_best(a->run_dir);
    if (!best) comm_fail("%s: no trained model (no best checkpoint in %s/checkpoints): run car_train's train stage first",
                         a->run_dir, a->run_dir);
    ModelSpec spec;
    model_spec_from_config(&spec, cfg, V);
    model_create(m, &spec, codes);
    ParamArena *arenas[2] = {&m->params, &m->uid.arena};
    const char *names[2] = {"params", "uid"};
    CheckpointState st = {0};
    checkpoint_load(best, &st, arenas, names, 2);
    log_info("car_recommend: %s model from %s (epoch %d), %lld items, L = %d", spec.mode == MODE_AR ? "ar" : "car", best,
             st.best_epoch, (long long)V, spec.levels);
    free(st.extra_json);
    free(best);
}

/* This rank's users sel[lo, hi) in rounds (collective: every rank runs as many); their lines
 * appended to *text. */
static void recommend_users(const Ctx *c, Recommender *rc, const int64_t *sel, int64_t lo, int64_t hi, char **text,
                            size_t *len) {
    int Bmax = c->cfg->eval.batch_size, mh = c->cfg->data.max_history;
    const UserSlice *all = c->all;
    int *hl = xmalloc(sizeof(int) * (size_t)Bmax);
    int64_t *eoff = xmalloc(sizeof(int64_t) * ((size_t)Bmax + 1)), *sample = xmalloc(sizeof(int64_t) * (size_t)Bmax);
    size_t cap = 0, ecap = 0;
    int32_t *items = NULL, *excl = NULL;
    RecLists lists = {0};
    double more = 1;
    for (int64_t first = lo; more > 0; first += Bmax) {
        int B = (int)(hi - first < Bmax ? (hi - first > 0 ? hi - first : 0) : Bmax);
        int64_t n = 0;
        eoff[0] = 0;
        for (int b = 0; b < B; b++) { /* the last max_history items; the whole sequence is excluded */
            int64_t u = sel[first + b], sn = all->offsets[u + 1] - all->offsets[u];
            hl[b] = (int)(sn < mh ? sn : mh);
            sample[b] = u;
            eoff[b + 1] = eoff[b] + (c->a->exclude_history ? sn : 0);
        }
        xgrow(&items, &cap, (size_t)B * mh + 1, sizeof(int32_t));
        xgrow(&excl, &ecap, (size_t)eoff[B] + 1, sizeof(int32_t));
        for (int b = 0; b < B; b++) {
            int64_t s0 = all->offsets[sample[b]], sn = all->offsets[sample[b] + 1] - s0;
            memcpy(items + n, all->items + s0 + sn - hl[b], sizeof(int32_t) * (size_t)hl[b]);
            n += hl[b];
            memcpy(excl + eoff[b], all->items + s0, sizeof(int32_t) * (size_t)(eoff[b + 1] - eoff[b]));
        }
        ModelBatch batch = {B, hl, items, sample};
        recommend_batch(rc, &batch, eoff, excl, &lists);
        for (int b = 0; b < B; b++) {
            char *line = user_line(c, sel[first + b], &lists, b);
            size_t ll = strlen(line);
            *text = xrealloc(*text, *len + ll + 2);
            memcpy(*text + *len, line, ll);
            (*text)[*len + ll] = '\n';
            *len += ll + 1;
            free(line);
        }
        more = first + Bmax < hi;
        comm_max_double(&more, 1);
    }
    rec_lists_free(&lists);
    free(hl); free(eoff); free(sample); free(items); free(excl);
}

/* Rank 0 writes every rank's lines, in rank order, to path (through a temporary name). */
static void write_lines(const char *path, const char *text, size_t len) {
    int P = comm_size();
    int64_t *counts = xmalloc(sizeof(int64_t) * (size_t)P), total = 0;
    comm_allgather_counts((int64_t)len, counts);
    for (int p = 0; p < P; p++) total += counts[p];
    char *all = xmalloc((size_t)total + 1), *err = NULL;
    comm_allgatherv_counted(text ? text : "", counts, all, 1);
    all[total] = 0;
    if (comm_rank() == 0) {
        if (write_file_atomic(path, all) != 0) err = xsprintf("--out %s: cannot write: %s", path, strerror(errno));
        else log_info("wrote %s", path);
    }
    comm_fail_if_any(err);
    free(err); free(all); free(counts);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "car_recommend");
    Args a;
    parse_args(argc, argv, &a);
    log_info("car_recommend: %s", comm_blas_info());
    char *cfg_path = xsprintf("%s/config.cfg", a.run_dir);
    if (!file_exists(cfg_path)) comm_fail("%s: not a run directory (no config.cfg)", a.run_dir);
    CarConfig cfg;
    config_load(&cfg, cfg_path, 0, NULL);
    Dataset ds;
    dataset_open(&ds, cfg.data.path);
    int64_t U = ds.n_users, V = ds.n_items, n_sel, lo, hi;
    int64_t *ids = xmalloc(sizeof(int64_t) * (size_t)(U + 1));
    h5io_read_all(ds.file, "/users/ids", H5T_NATIVE_INT64, ids);
    UserSlice all;
    dataset_read_users(&ds, 0, U, &all);
    int64_t *sel = select_users(a.users, ids, U, &n_sel);
    int L = cfg.sid.levels;
    int32_t *codes = xmalloc(sizeof(int32_t) * (size_t)(V * (L ? L : 1)));
    if (L) sid_load_codes(a.run_dir, V, 0, V, L, codes);
    Model m;
    load_model(&a, &cfg, V, codes, &m);
    dataset_close(&ds);
    int64_t nt;
    char **texts = h5io_read_strings_serial(cfg.data.path, "/items/text", &nt);
    Trie trie;
    trie_build(&trie, codes, V, L);
    RecOptions o = {.K = a.k, .beam = a.beam ? a.beam : cfg.eval.beam, .use_cache = !a.no_cache,
                    .think_weight = (float)(a.think_weight >= 0 ? a.think_weight : cfg.eval.think_weight),
                    .think_levels = cfg.eval.think_levels ? cfg.eval.think_levels : L};
    Recommender rc;
    recommender_init(&rc, &m, &trie, &o);
    /* whole batches of the selection per rank: every batch holds the same users whatever P, so
     * the lists do not depend on P to the last bit (a batch's rows share matrix products) */
    int64_t Bmax = cfg.eval.batch_size, glo, ghi;
    comm_split_range((n_sel + Bmax - 1) / Bmax, comm_size(), comm_rank(), &glo, &ghi);
    lo = glo * Bmax < n_sel ? glo * Bmax : n_sel;
    hi = ghi * Bmax < n_sel ? ghi * Bmax : n_sel;
    Ctx c = {&a, &cfg, codes, texts, ids, &all};
    char *text = NULL;
    size_t len = 0;
    double t0 = comm_wtime();
    recommend_users(&c, &rc, sel, lo, hi, &text, &len);
    log_info("car_recommend: %lld users, K = %d, %s, %.2fs", (long long)n_sel, a.k,
             m.spec.mode == MODE_AR ? "ar beam search" : "car one pass", comm_wtime() - t0);
    write_lines(a.out, text, len);
    for (int64_t i = 0; i < nt; i++) free(texts[i]);
    free(texts); free(text); free(sel); free(ids); free(codes); free(cfg_path);
    recommender_free(&rc);
    trie_free(&trie);
    model_free(&m);
    user_slice_free(&all);
    config_free(&cfg);
    comm_finalize();
    return 0;
}
