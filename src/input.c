#include "input.h"
#include "util.h"
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void item_table_free(ItemTable *t) {
    for (int64_t i = 0; i < t->n_items; i++) {
        if (t->texts) free(t->texts[i]);
        if (t->leaf) free(t->leaf[i]);
        for (int f = 0; t->fields && f < t->n_fields; f++) free(t->fields[i * t->n_fields + f]);
    }
    free(t->texts);
    free(t->leaf);
    free(t->fields);
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

/* Control characters (jansson quotes the bad token, newline included) become '?': one line. */
static char *printable(char *s) {
    for (char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    return s;
}

/* A line holding a NUL byte would be read only up to it: not a text file. */
static char *nul_in_line(const char *path, int64_t lineno, const char *line, ssize_t len) {
    if ((size_t)len == strlen(line)) return NULL;
    return xsprintf("%s:%lld: NUL byte in the line (not a text file?)", path, (long long)lineno);
}

/* A JSON value as text for the encoder: a string as it is, arrays joined with ", " (nested ones
 * flattened), a number as its price band "price band N" (N = floor(log2(value)), so items of
 * similar prices share a term), anything else (null, missing) NULL. */
static void append_value(json_t *v, char **out, size_t *len) {
    char band[48];
    const char *piece = NULL;
    if (json_is_string(v)) piece = json_string_value(v);
    else if (json_is_number(v) && json_number_value(v) > 0) {
        snprintf(band, sizeof band, "price band %d", (int)floor(log2(json_number_value(v))));
        piece = band;
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) append_value(json_array_get(v, i), out, len);
        return;
    }
    if (!piece || blank(piece)) return;
    size_t n = strlen(piece);
    *out = xrealloc(*out, *len + n + 3);
    if (*len) { memcpy(*out + *len, ", ", 2); *len += 2; }
    memcpy(*out + *len, piece, n + 1);
    *len += n;
}

static char *field_text(json_t *obj, const char *name) {
    char *out = NULL;
    size_t len = 0;
    append_value(json_object_get(obj, name), &out, &len);
    return out;
}

/* The fields an ItemTable holds besides text (names, n_names). */
typedef struct { const char *const *names; int n; } FieldNames;

/* One record: its id and text (and leaf category, and the named fields) or an error. */
static char *parse_item(const char *path, int64_t lineno, const char *line, const FieldNames *fn, int64_t *id,
                        char **text, char **leaf, char ***fields) {
    json_error_t jerr;
    json_t *obj = json_loads(line, 0, &jerr);
    if (!obj) return xsprintf("%s:%lld: invalid JSON: %s", path, (long long)lineno, printable(jerr.text));
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
        *fields = fn->n ? xmalloc(sizeof(char *) * (size_t)fn->n) : NULL;
        for (int f = 0; f < fn->n; f++) (*fields)[f] = field_text(obj, fn->names[f]);
    }
    json_decref(obj);
    return err;
}

/* One record as read. The table is built once every line is in, so memory follows the number
 * of records, not the largest id: a single line with item_id 10^8 must not cost gigabytes. */
typedef struct { int64_t id, line; char *text, *leaf, **fields; } ItemRecord;

static void record_free(ItemRecord *r, int n_fields) {
    free(r->text);
    free(r->leaf);
    for (int f = 0; r->fields && f < n_fields; f++) free(r->fields[f]);
    free(r->fields);
}

static int cmp_record(const void *a, const void *b) {
    const ItemRecord *x = a, *y = b;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return (x->line > y->line) - (x->line < y->line);
}

/* Appends the records of the file to *recs (*n of them) until the first bad line. */
static char *read_item_records(const char *path, FILE *f, const FieldNames *fn, ItemRecord **recs, int64_t *n) {
    int64_t cap = 0, lineno = 0;
    char *line = NULL, *err = NULL;
    size_t line_cap = 0;
    ssize_t len;
    while (!err && (len = getline(&line, &line_cap, f)) >= 0) {
        lineno++;
        if ((err = nul_in_line(path, lineno, line, len))) break;
        if (blank(line)) continue;
        ItemRecord r = {0, lineno, NULL, NULL, NULL};
        if ((err = parse_item(path, lineno, line, fn, &r.id, &r.text, &r.leaf, &r.fields))) break;
        if (r.id < 1 || r.id > 100000000) {
            err = xsprintf("%s:%lld: item_id %lld out of range (ids start at 1)", path, (long long)lineno, (long long)r.id);
            record_free(&r, fn->n);
            break;
        }
        if (*n == cap) *recs = xrealloc(*recs, sizeof(ItemRecord) * (size_t)(cap = cap ? 2 * cap : 1024));
        (*recs)[(*n)++] = r;
    }
    free(line);
    return err;
}

/* recs sorted by (id, line): the repeated id seen first in file order, else (when the whole file
 * was read) the first id missing from 1..max, else NULL. The records all precede a bad line, so a
 * repeat is reported before it, as if checked while reading. */
static char *check_item_ids(const char *path, const ItemRecord *recs, int64_t n, int complete) {
    int64_t rep = -1;
    for (int64_t i = 1; i < n; i++)
        if (recs[i].id == recs[i - 1].id && (rep < 0 || recs[i].line < recs[rep].line)) rep = i;
    if (rep >= 0)
        return xsprintf("%s:%lld: item_id %lld repeats the record of line %lld", path, (long long)recs[rep].line,
                        (long long)recs[rep].id, (long long)recs[rep - 1].line);
    if (!complete) return NULL;
    for (int64_t i = 0; i < n; i++)
        if (recs[i].id != i + 1)
            return xsprintf("%s: item %lld has no record (item ids must run 1..%lld)", path, (long long)(i + 1),
                            (long long)recs[n - 1].id);
    return n ? NULL : xsprintf("%s: no items", path);
}

char *input_read_items(const char *path, ItemTable *out) { return input_read_items_fields(path, NULL, 0, out); }

char *input_read_items_fields(const char *path, const char *const *names, int n_names, ItemTable *out) {
    memset(out, 0, sizeof *out);
    FieldNames fn = {names, n_names};
    FILE *f = fopen(path, "r");
    if (!f) return xsprintf("%s: cannot open items file: %s", path, strerror(errno));
    ItemRecord *recs = NULL;
    int64_t n = 0;
    char *err = read_item_records(path, f, &fn, &recs, &n);
    fclose(f);
    if (n) qsort(recs, (size_t)n, sizeof *recs, cmp_record);
    char *id_err = check_item_ids(path, recs, n, err == NULL);
    if (id_err) { free(err); err = id_err; }
    if (!err) {
        out->n_items = n;
        out->texts = xmalloc(sizeof(char *) * (size_t)n);
        out->leaf = xmalloc(sizeof(char *) * (size_t)n);
        out->n_fields = n_names;
        out->fields = n_names ? xmalloc(sizeof(char *) * (size_t)(n * n_names)) : NULL;
        for (int64_t i = 0; i < n; i++) {
            out->texts[i] = recs[i].text;
            out->leaf[i] = recs[i].leaf;
            for (int f = 0; f < n_names; f++) out->fields[i * n_names + f] = recs[i].fields[f];
            free(recs[i].fields);
        }
    } else
        for (int64_t i = 0; i < n; i++) record_free(&recs[i], n_names);
    free(recs);
    return err;
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
    ssize_t len;
    while (!err && (len = getline(&line, &line_cap, f)) >= 0) {
        lineno++;
        if ((err = nul_in_line(path, lineno, line, len))) break;
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
