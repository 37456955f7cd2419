#include "input.h"
#include "util.h"
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void item_table_free(ItemTable *t) {
    for (int64_t i = 0; i < t->n_items; i++) {
        if (t->texts) free(t->texts[i]);
        if (t->leaf) free(t->leaf[i]);
    }
    free(t->texts);
    free(t->leaf);
    memset(t, 0, sizeof *t);
}

void sequences_free(Sequences *s) {
    free(s->user_ids);
    free(s->offsets);
    free(s->items);
    memset(s, 0, sizeof *s);
}

static int blank(const char *s) {
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') return 0;
    return 1;
}

/* One record: its id and text (and leaf category) or an error. */
static char *parse_item(const char *path, int64_t lineno, const char *line, int64_t *id, char **text, char **leaf) {
    json_error_t jerr;
    json_t *obj = json_loads(line, 0, &jerr);
    if (!obj) return xsprintf("%s:%lld: invalid JSON: %s", path, (long long)lineno, jerr.text);
    char *err = NULL;
    json_t *jid = json_object_get(obj, "item_id"), *jtext = json_object_get(obj, "text");
    if (!json_is_object(obj)) err = xsprintf("%s:%lld: expected a JSON object", path, (long long)lineno);
    else if (!json_is_integer(jid))
        err = xsprintf("%s:%lld: missing or non-integer \"item_id\"", path, (long long)lineno);
    else if (!json_is_string(jtext) || blank(json_string_value(jtext)))
        err = xsprintf("%s:%lld: item %lld has no text (a non-empty \"text\" string is required)", path,
                       (long long)lineno, (long long)json_integer_value(jid));
    if (!err) {
        *id = json_integer_value(jid);
        *text = xstrdup(json_string_value(jtext));
        json_t *cats = json_object_get(obj, "categories");
        size_t n = json_is_array(cats) ? json_array_size(cats) : 0;
        json_t *last = n ? json_array_get(cats, n - 1) : NULL;
        *leaf = json_is_string(last) ? xstrdup(json_string_value(last)) : NULL;
    }
    json_decref(obj);
    return err;
}

char *input_read_items(const char *path, ItemTable *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f) return xsprintf("%s: cannot open items file: %s", path, strerror(errno));
    int64_t cap = 1024, max_id = 0, lineno = 0;
    char **texts = xcalloc((size_t)cap, sizeof(char *)), **leaf = xcalloc((size_t)cap, sizeof(char *));
    int64_t *first_line = xcalloc((size_t)cap, sizeof(int64_t));
    char *line = NULL, *err = NULL;
    size_t line_cap = 0;
    while (!err && getline(&line, &line_cap, f) >= 0) {
        lineno++;
        if (blank(line)) continue;
        int64_t id = 0;
        char *text = NULL, *lf = NULL;
        if ((err = parse_item(path, lineno, line, &id, &text, &lf))) break;
        if (id < 1 || id > 100000000) {
            err = xsprintf("%s:%lld: item_id %lld out of range (ids start at 1)", path, (long long)lineno, (long long)id);
            free(text); free(lf);
            break;
        }
        while (id > cap) {
            int64_t ncap = cap * 2;
            texts = xrealloc(texts, sizeof(char *) * (size_t)ncap);
            leaf = xrealloc(leaf, sizeof(char *) * (size_t)ncap);
            first_line = xrealloc(first_line, sizeof(int64_t) * (size_t)ncap);
            memset(texts + cap, 0, sizeof(char *) * (size_t)(ncap - cap));
            memset(leaf + cap, 0, sizeof(char *) * (size_t)(ncap - cap));
            memset(first_line + cap, 0, sizeof(int64_t) * (size_t)(ncap - cap));
            cap = ncap;
        }
        if (texts[id - 1]) {
            err = xsprintf("%s:%lld: item_id %lld repeats the record of line %lld", path, (long long)lineno, (long long)id,
                           (long long)first_line[id - 1]);
            free(text); free(lf);
            break;
        }
        texts[id - 1] = text;
        leaf[id - 1] = lf;
        first_line[id - 1] = lineno;
        if (id > max_id) max_id = id;
    }
    free(line);
    fclose(f);
    for (int64_t i = 0; !err && i < max_id; i++)
        if (!texts[i]) err = xsprintf("%s: item %lld has no record (item ids must run 1..%lld)", path, (long long)(i + 1), (long long)max_id);
    if (!err && max_id == 0) err = xsprintf("%s: no items", path);
    out->n_items = cap; /* so item_table_free releases every slot */
    out->texts = texts;
    out->leaf = leaf;
    free(first_line);
    if (err) { item_table_free(out); return err; }
    out->n_items = max_id;
    return NULL;
}

/* Parses one decimal integer token at *p; returns 0 and an error if it is not one. */
static int next_int(char **p, long long *v) {
    while (**p == ' ' || **p == '\t') (*p)++;
    if (!**p || **p == '\n' || **p == '\r') return 0;
    char *end;
    errno = 0;
    *v = strtoll(*p, &end, 10);
    if (end == *p || errno || (*end && *end != ' ' && *end != '\t' && *end != '\n' && *end != '\r')) return -1;
    *p = end;
    return 1;
}

static char *bad_token(const char *path, int64_t lineno, const char *p) {
    while (*p == ' ' || *p == '\t') p++;
    int n = 0;
    while (p[n] && p[n] != ' ' && p[n] != '\t' && p[n] != '\n' && p[n] != '\r' && n < 40) n++;
    return xsprintf("%s:%lld: '%.*s' is not a number (expected: user_id item_id item_id ...)", path, (long long)lineno, n, p);
}

char *input_read_sequences(const char *path, int64_t n_items, const char *items_path, Sequences *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f) return xsprintf("%s: cannot open sequences file: %s", path, strerror(errno));
    int64_t ucap = 1024, icap = 8192, nu = 0, ni = 0, lineno = 0;
    out->user_ids = xmalloc(sizeof(int64_t) * (size_t)ucap);
    out->offsets = xmalloc(sizeof(int64_t) * (size_t)(ucap + 1));
    out->items = xmalloc(sizeof(int32_t) * (size_t)icap);
    out->offsets[0] = 0;
    char *line = NULL, *err = NULL;
    size_t line_cap = 0;
    while (!err && getline(&line, &line_cap, f) >= 0) {
        lineno++;
        if (blank(line)) continue;
        char *p = line;
        long long v;
        int r = next_int(&p, &v);
        if (r < 0) { err = bad_token(path, lineno, p); break; }
        if (nu == ucap) {
            ucap *= 2;
            out->user_ids = xrealloc(out->user_ids, sizeof(int64_t) * (size_t)ucap);
            out->offsets = xrealloc(out->offsets, sizeof(int64_t) * (size_t)(ucap + 1));
        }
        out->user_ids[nu] = v;
        int64_t start = ni;
        while ((r = next_int(&p, &v)) == 1) {
            if (v < 1 || v > n_items) {
                err = xsprintf("%s:%lld: item id %lld out of range 1..%lld (the items of %s)", path, (long long)lineno, v,
                               (long long)n_items, items_path);
                break;
            }
            if (ni == icap) {
                icap *= 2;
                out->items = xrealloc(out->items, sizeof(int32_t) * (size_t)icap);
            }
            out->items[ni++] = (int32_t)(v - 1);
        }
        if (err) break;
        if (r < 0) { err = bad_token(path, lineno, p); break; }
        if (ni == start) { err = xsprintf("%s:%lld: user %lld has no items", path, (long long)lineno, (long long)out->user_ids[nu]); break; }
        out->offsets[++nu] = ni;
    }
    free(line);
    fclose(f);
    if (!err && nu == 0) err = xsprintf("%s: no users", path);
    out->n_users = nu;
    out->n_interactions = ni;
    if (err) { sequences_free(out); return err; }
    return NULL;
}
