#include "config.h"
#include "comm.h"
#include "util.h"
#include <errno.h>
#include <libconfig.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum { T_INT, T_INT64, T_FLOAT, T_BOOL, T_STRING, T_ENUM, T_INTLIST } KeyType;

typedef struct {
    const char *section, *key;
    KeyType type;
    size_t offset;
    double min, max;          /* numeric range; for T_INTLIST each element */
    const char *words;        /* T_ENUM: allowed words separated by '|' */
    const char *fallback;     /* default, in override syntax */
} Key;

#define F(field) offsetof(CarConfig, field)
static const Key schema[] = {
    {"data", "path", T_STRING, F(data.path), 0, 0, NULL, "data/synth/dataset.h5"},
    {"data", "max_history", T_INT, F(data.max_history), 1, 1000, NULL, "20"},

    {"sid", "levels", T_INT, F(sid.levels), 0, SID_MAX_LEVELS, NULL, "3"},
    {"sid", "codebook", T_INTLIST, F(sid.codebook), 1, 1 << 20, NULL, "256"},
    {"sid", "iters", T_INT, F(sid.iters), 1, 100000, NULL, "50"},
    {"sid", "tol", T_FLOAT, F(sid.tol), 0, 1, NULL, "1e-4"},
    {"sid", "seed", T_INT64, F(sid.seed), 0, 9.2e18, NULL, "1"},
    {"sid", "normalize_residuals", T_BOOL, F(sid.normalize_residuals), 0, 1, NULL, "false"},
    {"sid", "method", T_ENUM, F(sid.method), 0, 0, "rkmeans|random|lsh", "rkmeans"},

    {"model", "d_model", T_INT, F(model.d_model), 4, 4096, NULL, "64"},
    {"model", "n_layers", T_INT, F(model.n_layers), 1, 64, NULL, "2"},
    {"model", "n_heads", T_INT, F(model.n_heads), 1, 64, NULL, "2"},
    {"model", "dropout", T_FLOAT, F(model.dropout), 0, 0.95, NULL, "0.3"},
    {"model", "fusion", T_ENUM, F(model.fusion), 0, 0, "sum|mean|none", "sum"},
    {"model", "level_embedding", T_BOOL, F(model.level_embedding), 0, 1, NULL, "false"},
    {"model", "tie_uid", T_BOOL, F(model.tie_uid), 0, 1, NULL, "false"},
    {"model", "uid_bf16", T_BOOL, F(model.uid_bf16), 0, 1, NULL, "false"},

    {"train", "mode", T_ENUM, F(train.mode), 0, 0, "car|ar", "car"},
    {"train", "alpha", T_FLOAT, F(train.alpha), 0, 100, NULL, "1.0"},
    {"train", "label_smoothing", T_FLOAT, F(train.label_smoothing), 0, 0.99, NULL, "0.0"},
    {"train", "epochs", T_INT, F(train.epochs), 1, 100000, NULL, "30"},
    {"train", "max_steps", T_INT64, F(train.max_steps), 0, 9.2e18, NULL, "0"},
    {"train", "batch_size", T_INT, F(train.batch_size), 1, 1 << 20, NULL, "256"},
    {"train", "lr", T_FLOAT, F(train.lr), 0, 10, NULL, "1e-3"},
    {"train", "beta2", T_FLOAT, F(train.beta2), 0.5, 0.99999, NULL, "0.98"},
    {"train", "lr_floor", T_FLOAT, F(train.lr_floor), 0, 1, NULL, "0.0"},
    {"train", "weight_decay", T_FLOAT, F(train.weight_decay), 0, 10, NULL, "0.01"},
    {"train", "grad_clip", T_FLOAT, F(train.grad_clip), 0, 1e6, NULL, "1.0"},
    {"train", "warmup_steps", T_INT, F(train.warmup_steps), 0, 1000000, NULL, "100"},
    {"train", "schedule", T_ENUM, F(train.schedule), 0, 0, "cosine|constant", "cosine"},
    {"train", "seed", T_INT64, F(train.seed), 0, 9.2e18, NULL, "1"},
    {"train", "patience", T_INT, F(train.patience), 0, 100000, NULL, "5"},
    {"train", "eval_every", T_INT, F(train.eval_every), 1, 100000, NULL, "1"},
    {"train", "log_every", T_INT, F(train.log_every), 1, 1000000, NULL, "50"},
    {"train", "grad_bucket_kib", T_INT, F(train.grad_bucket_kib), 0, 1048576, NULL, "256"},

    {"eval", "think_weight", T_FLOAT, F(eval.think_weight), 0, 100, NULL, "0"},
    {"eval", "think_levels", T_INT, F(eval.think_levels), 0, SID_MAX_LEVELS, NULL, "0"},
    {"eval", "filter_history", T_BOOL, F(eval.filter_history), 0, 1, NULL, "false"},
    {"eval", "batch_size", T_INT, F(eval.batch_size), 1, 1 << 20, NULL, "256"},
    {"eval", "beam", T_INT, F(eval.beam), 1, 100000, NULL, "20"}, /* ar: beam width of the ranking lists */

    {"run", "dir", T_STRING, F(run.dir), 0, 0, NULL, "runs/demo"},
    {"run", "stages", T_STRING, F(run.stages), 0, 0, NULL, "sid,train,eval"},
    {"run", "resume", T_BOOL, F(run.resume), 0, 1, NULL, "false"},
    {"run", "checkpoint_every", T_INT, F(run.checkpoint_every), 0, 100000000, NULL, "0"},
    {"run", "keep_checkpoints", T_INT, F(run.keep_checkpoints), 1, 1000, NULL, "3"},
};
#undef F
#define N_KEYS (sizeof schema / sizeof schema[0])
static const char *stage_words = "sid|train|eval";

static const Key *find_key(const char *section, const char *key) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(schema[i].section, section) == 0 && strcmp(schema[i].key, key) == 0) return &schema[i];
    return NULL;
}

static int section_known(const char *section) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(schema[i].section, section) == 0) return 1;
    return 0;
}

static void *slot(CarConfig *cfg, const Key *k) { return (char *)cfg + k->offset; }

static int word_index(const char *words, const char *w) {
    int idx = 0;
    size_t n = strlen(w);
    for (const char *p = words; *p; idx++) {
        const char *end = strchr(p, '|');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, w, n) == 0) return idx;
        if (!end) break;
        p = end + 1;
    }
    return -1;
}

static const char *word_at(const char *words, int idx, char *buf, size_t n) {
    const char *p = words;
    for (int i = 0; i < idx && p; i++) p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL;
    if (!p) return "?";
    size_t len = strchr(p, '|') ? (size_t)(strchr(p, '|') - p) : strlen(p);
    snprintf(buf, n, "%.*s", (int)(len < n ? len : n - 1), p);
    return buf;
}

static const char *type_name(KeyType t) {
    switch (t) {
    case T_INT: case T_INT64: return "an integer";
    case T_FLOAT: return "a number";
    case T_BOOL: return "true or false";
    case T_STRING: return "a string";
    case T_ENUM: return "one of the words";
    case T_INTLIST: return "an integer or a list of integers";
    }
    return "?";
}

/* Range and word checks shared by file values and overrides. Returns an error or NULL. */
static char *check_number(const Key *k, double v) {
    if (v < k->min || v > k->max)
        return xsprintf("key '%s.%s' = %g is out of range [%g, %g]", k->section, k->key, v, k->min, k->max);
    return NULL;
}

static char *set_int(CarConfig *cfg, const Key *k, long long v) {
    char *err = check_number(k, (double)v);
    if (err) return err;
    if (k->type == T_INT64) *(int64_t *)slot(cfg, k) = v;
    else *(int *)slot(cfg, k) = (int)v;
    return NULL;
}

static char *set_word(CarConfig *cfg, const Key *k, const char *w) {
    int idx = word_index(k->words, w);
    if (idx < 0) return xsprintf("key '%s.%s' = \"%s\" is not one of %s", k->section, k->key, w, k->words);
    *(int *)slot(cfg, k) = idx;
    return NULL;
}

static char *set_string(CarConfig *cfg, const Key *k, const char *s) {
    char **p = slot(cfg, k);
    free(*p);
    *p = xstrdup(s);
    return NULL;
}

/* Parse a value written as text (defaults and -o overrides). */
static char *set_from_text(CarConfig *cfg, const Key *k, const char *text) {
    char *end;
    errno = 0;
    switch (k->type) {
    case T_INT: case T_INT64: {
        long long v = strtoll(text, &end, 10);
        if (!*text || *end || errno) return xsprintf("key '%s.%s': \"%s\" is not %s", k->section, k->key, text, type_name(k->type));
        return set_int(cfg, k, v);
    }
    case T_FLOAT: {
        double v = strtod(text, &end);
        if (!*text || *end || errno || !isfinite(v))
            return xsprintf("key '%s.%s': \"%s\" is not %s", k->section, k->key, text, type_name(k->type));
        char *err = check_number(k, v);
        if (!err) *(double *)slot(cfg, k) = v;
        return err;
    }
    case T_BOOL:
        if (!strcmp(text, "true") || !strcmp(text, "1")) *(int *)slot(cfg, k) = 1;
        else if (!strcmp(text, "false") || !strcmp(text, "0")) *(int *)slot(cfg, k) = 0;
        else return xsprintf("key '%s.%s': \"%s\" is not true or false", k->section, k->key, text);
        return NULL;
    case T_STRING: {
        size_t n = strlen(text);
        if (n >= 2 && text[0] == '"' && text[n - 1] == '"') {
            char *inner = xstrdup(text + 1);
            inner[n - 2] = 0;
            set_string(cfg, k, inner);
            free(inner);
            return NULL;
        }
        return set_string(cfg, k, text);
    }
    case T_ENUM: return set_word(cfg, k, text);
    case T_INTLIST: {
        IntList *l = slot(cfg, k), out = {0, {0}};
        const char *p = text;
        if (*p == '[') p++;
        while (*p && *p != ']') {
            long long v = strtoll(p, &end, 10);
            if (end == p) return xsprintf("key '%s.%s': \"%s\" is not %s", k->section, k->key, text, type_name(k->type));
            if (out.n == SID_MAX_LEVELS) return xsprintf("key '%s.%s': more than %d values", k->section, k->key, SID_MAX_LEVELS);
            char *err = check_number(k, (double)v);
            if (err) return err;
            out.v[out.n++] = (int)v;
            p = end;
            while (*p == ',' || *p == ' ') p++;
        }
        if (out.n == 0) return xsprintf("key '%s.%s': empty list", k->section, k->key);
        *l = out;
        return NULL;
    }
    }
    return NULL;
}

static char *located(const config_setting_t *s, const char *path, char *msg) {
    const char *file = config_setting_source_file(s);
    char *out = xsprintf("%s:%d: %s", file ? file : path, config_setting_source_line(s), msg);
    free(msg);
    return out;
}

static char *set_from_setting(CarConfig *cfg, const Key *k, config_setting_t *s) {
    int t = config_setting_type(s);
    switch (k->type) {
    case T_INT: case T_INT64:
        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64) break;
        return set_int(cfg, k, config_setting_get_int64(s));
    case T_FLOAT: {
        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64 && t != CONFIG_TYPE_FLOAT) break;
        double v = t == CONFIG_TYPE_FLOAT ? config_setting_get_float(s) : (double)config_setting_get_int64(s);
        char *err = check_number(k, v);
        if (!err) *(double *)slot(cfg, k) = v;
        return err;
    }
    case T_BOOL:
        if (t != CONFIG_TYPE_BOOL) break;
        *(int *)slot(cfg, k) = config_setting_get_bool(s);
        return NULL;
    case T_STRING:
        if (t != CONFIG_TYPE_STRING) break;
        return set_string(cfg, k, config_setting_get_string(s));
    case T_ENUM:
        if (t != CONFIG_TYPE_STRING) break;
        return set_word(cfg, k, config_setting_get_string(s));
    case T_INTLIST: {
        IntList out = {0, {0}};
        if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
            long long v = config_setting_get_int64(s); /* range-checked before it is narrowed to int */
            char *err = check_number(k, (double)v);
            if (err) return err;
            out.n = 1;
            out.v[0] = (int)v;
        } else if (t == CONFIG_TYPE_ARRAY || t == CONFIG_TYPE_LIST) {
            int n = config_setting_length(s);
            if (n < 1 || n > SID_MAX_LEVELS) return xsprintf("key '%s.%s' needs 1 to %d values, has %d", k->section, k->key, SID_MAX_LEVELS, n);
            for (int i = 0; i < n; i++) {
                config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
                int et = config_setting_type(e);
                if (et != CONFIG_TYPE_INT && et != CONFIG_TYPE_INT64)
                    return xsprintf("key '%s.%s': element %d is not an integer", k->section, k->key, i + 1);
                long long v = config_setting_get_int64(e);
                char *err = check_number(k, (double)v);
                if (err) return err;
                out.v[i] = (int)v;
            }
            out.n = n;
        } else break;
        *(IntList *)slot(cfg, k) = out;
        return NULL;
    }
    }
    return xsprintf("key '%s.%s' must be %s%s%s", k->section, k->key, type_name(k->type), k->words ? " " : "",
                    k->words ? k->words : "");
}

static char *apply_file(CarConfig *cfg, const char *path) {
    if (!file_exists(path)) return xsprintf("%s: no such config file", path);
    config_t lc;
    config_init(&lc);
    if (config_read_file(&lc, path) != CONFIG_TRUE) {
        char *e = xsprintf("%s:%d: %s", config_error_file(&lc) ? config_error_file(&lc) : path, config_error_line(&lc),
                           config_error_text(&lc));
        config_destroy(&lc);
        return e;
    }
    config_setting_t *root = config_root_setting(&lc);
    char *err = NULL;
    for (int i = 0; !err && i < config_setting_length(root); i++) {
        config_setting_t *sec = config_setting_get_elem(root, (unsigned)i);
        const char *sname = config_setting_name(sec);
        if (!section_known(sname)) {
            err = located(sec, path, xsprintf("unknown section '%s' (known: data, sid, model, train, eval, run)", sname));
            break;
        }
        if (config_setting_type(sec) != CONFIG_TYPE_GROUP) {
            err = located(sec, path, xsprintf("section '%s' must be a group { ... }", sname));
            break;
        }
        for (int j = 0; !err && j < config_setting_length(sec); j++) {
            config_setting_t *s = config_setting_get_elem(sec, (unsigned)j);
            const Key *k = find_key(sname, config_setting_name(s));
            if (!k) err = located(s, path, xsprintf("unknown key '%s.%s'", sname, config_setting_name(s)));
            else if ((err = set_from_setting(cfg, k, s))) err = located(s, path, err);
        }
    }
    config_destroy(&lc);
    return err;
}

static char *apply_override(CarConfig *cfg, const char *ov) {
    const char *eq = strchr(ov, '='), *dot = strchr(ov, '.');
    if (!eq || !dot || dot > eq) return xsprintf("-o %s: expected section.key=value", ov);
    char section[64], key[64];
    snprintf(section, sizeof section, "%.*s", (int)(dot - ov) < 63 ? (int)(dot - ov) : 63, ov);
    snprintf(key, sizeof key, "%.*s", (int)(eq - dot - 1) < 63 ? (int)(eq - dot - 1) : 63, dot + 1);
    const Key *k = find_key(section, key);
    if (!k) return xsprintf("-o %s: unknown key '%s.%s'", ov, section, key);
    char *err = set_from_text(cfg, k, eq + 1);
    if (err) {
        char *e = xsprintf("-o %s: %s", ov, err);
        free(err);
        return e;
    }
    return NULL;
}

static char *check_consistency(const CarConfig *cfg) {
    if (cfg->sid.codebook.n != 1 && cfg->sid.levels > 0 && cfg->sid.codebook.n != cfg->sid.levels)
        return xsprintf("key 'sid.codebook' has %d sizes but sid.levels = %d (give one size, or one per level)",
                        cfg->sid.codebook.n, cfg->sid.levels);
    for (int l = 0; l < cfg->sid.levels; l++)
        if (config_codebook(cfg, l) < 2) return xsprintf("key 'sid.codebook': level %d has fewer than 2 codes", l + 1);
    if (cfg->model.d_model % cfg->model.n_heads)
        return xsprintf("key 'model.d_model' = %d is not a multiple of model.n_heads = %d", cfg->model.d_model, cfg->model.n_heads);
    if (cfg->eval.think_levels > cfg->sid.levels)
        return xsprintf("key 'eval.think_levels' = %d exceeds sid.levels = %d", cfg->eval.think_levels, cfg->sid.levels);
    /* stages: comma-separated words out of sid|train|eval */
    const char *p = cfg->run.stages;
    if (!*p) return xsprintf("key 'run.stages' is empty (use some of %s)", stage_words);
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char w[32];
        snprintf(w, sizeof w, "%.*s", (int)(len < 31 ? len : 31), p);
        if (word_index(stage_words, w) < 0) return xsprintf("key 'run.stages': unknown stage '%s' (use %s)", w, stage_words);
        p += len + (end ? 1 : 0);
    }
    if (!cfg->run.dir[0]) return xsprintf("key 'run.dir' is empty");
    if (!cfg->data.path[0]) return xsprintf("key 'data.path' is empty");
    return NULL;
}

char *config_parse(CarConfig *cfg, const char *path, int n_overrides, char **overrides) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_KEYS; i++) {
        char *err = set_from_text(cfg, &schema[i], schema[i].fallback);
        if (err) comm_fatal("bad default for %s.%s: %s", schema[i].section, schema[i].key, err);
    }
    cfg->source = xstrdup(path);
    char *err = apply_file(cfg, path);
    for (int i = 0; !err && i < n_overrides; i++) err = apply_override(cfg, overrides[i]);
    if (!err && (err = check_consistency(cfg))) {
        char *e = xsprintf("%s: %s", path, err);
        free(err);
        err = e;
    }
    return err;
}

void config_load(CarConfig *cfg, const char *path, int n_overrides, char **overrides) {
    char *err = config_parse(cfg, path, n_overrides, overrides);
    comm_fail_if_any(err); /* every rank reads the file itself: one may fail alone (node-local path) */
    free(err);
}

void config_free(CarConfig *cfg) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (schema[i].type == T_STRING) free(*(char **)slot(cfg, &schema[i]));
    free(cfg->source);
    memset(cfg, 0, sizeof *cfg);
}

static void write_value(const CarConfig *cfg, const Key *k, FILE *out) {
    const void *p = (const char *)cfg + k->offset;
    char buf[64];
    switch (k->type) {
    case T_INT: fprintf(out, "%d", *(const int *)p); break;
    case T_INT64: { /* beyond 32 bits libconfig reads an integer back only with the L suffix */
        long long v = *(const int64_t *)p;
        fprintf(out, "%lld%s", v, v > INT32_MAX || v < INT32_MIN ? "L" : "");
        break;
    }
    case T_FLOAT: {
        double v = *(const double *)p;
        snprintf(buf, sizeof buf, "%.15g", v); /* shortest that reads back exactly */
        if (strtod(buf, NULL) != v) snprintf(buf, sizeof buf, "%.17g", v);
        fprintf(out, "%s%s", buf, strpbrk(buf, ".eEn") ? "" : ".0"); /* keep it a float in libconfig */
        break;
    }
    case T_BOOL: fprintf(out, "%s", *(const int *)p ? "true" : "false"); break;
    case T_STRING: {
        fputc('"', out);
        for (const char *s = *(char *const *)p; *s; s++) {
            if (*s == '"' || *s == '\\') fputc('\\', out);
            fputc(*s, out);
        }
        fputc('"', out);
        break;
    }
    case T_ENUM: fprintf(out, "\"%s\"", word_at(k->words, *(const int *)p, buf, sizeof buf)); break;
    case T_INTLIST: {
        const IntList *l = p;
        fputc('[', out);
        for (int i = 0; i < l->n; i++) fprintf(out, "%s%d", i ? ", " : "", l->v[i]);
        fputc(']', out);
        break;
    }
    }
}

void config_print(const CarConfig *cfg, FILE *out) {
    const char *open = NULL;
    for (size_t i = 0; i < N_KEYS; i++) {
        const Key *k = &schema[i];
        if (!open || strcmp(open, k->section)) {
            if (open) fprintf(out, "};\n");
            fprintf(out, "%s = {\n", k->section);
            open = k->section;
        }
        fprintf(out, "  %s = ", k->key);
        write_value(cfg, k, out);
        fprintf(out, ";\n");
    }
    if (open) fprintf(out, "};\n");
}

char *config_to_string(const CarConfig *cfg) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) comm_fatal("open_memstream failed");
    config_print(cfg, f);
    fclose(f);
    return buf;
}

int config_codebook(const CarConfig *cfg, int level) {
    return cfg->sid.codebook.n == 1 ? cfg->sid.codebook.v[0] : cfg->sid.codebook.v[level];
}

int config_has_stage(const CarConfig *cfg, const char *stage) {
    size_t n = strlen(stage);
    for (const char *p = cfg->run.stages; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, stage, n) == 0) return 1;
        p += len + (end ? 1 : 0);
    }
    return 0;
}
