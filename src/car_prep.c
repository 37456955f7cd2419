/* car_prep --sequences FILE --items FILE --out dataset.h5 [--dim D] [--embeddings FILE] [--seed S]
 *          [--fields name[:weight],...] [--collab-dim D --collab-weight W ...]
 * Validates the raw inputs and writes the dataset file with item text embeddings, computed by
 * the built-in TF-IDF + randomized SVD encoder with items sharded over ranks, or imported;
 * optionally concatenated with a collaborative embedding of the training interactions (collab.h). */
#include "collab.h"
#include "comm.h"
#include "dataset.h"
#include "input.h"
#include "log.h"
#include "text.h"
#include "util.h"
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: car_prep --sequences FILE --items FILE --out DATASET.h5 [options]\n"
            "  --sequences FILE   one user a line: user_id item_id item_id ... (1-based, chronological)\n"
            "  --items FILE       JSON lines, one per item id 1..V, with \"item_id\" and \"text\"\n"
            "  --out FILE         dataset file to write (written atomically)\n"
            "  --dim D            embedding width of the built-in encoder (default 128)\n"
            "  --embeddings FILE  import a (V x D) float32/float64 matrix (.npy, or HDF5 [FILE:/dataset])\n"
            "  --seed S           encoder random seed (default 1)\n"
            "  --oversample N     randomized SVD oversampling (default 16)\n"
            "  --power-iters N    randomized SVD power iterations (default 3)\n"
            "  --min-df N         drop n-grams seen in fewer than N items (default 2)\n"
            "  --hash-bits N      n-gram hash space 2^N, 8..26 (default 20)\n"
            "  --fields SPEC      encode these JSON fields of items.jsonl instead of \"text\", each with a weight:\n"
            "                     name[:weight],... e.g. title:2,brand,categories,price:0.5 (a weight multiplies\n"
            "                     the field's term counts; arrays are joined, numbers become price bands)\n"
            "  --collab-dim D     add a D-dim collaborative embedding: shifted PPMI of item co-occurrence in the\n"
            "                     users' training items (never the last two: no validation/test leakage) + SVD\n"
            "  --collab-weight W  its weight in [0, 1]: rows [sqrt(1-W) text, sqrt(W) collab] (default 0.5;\n"
            "                     1 = collaborative only)\n"
            "  --collab-window K  co-occurrence window in positions (default 3)\n"
            "  --collab-shift S   PMI shift, >= 1 (default 1: plain PPMI)\n");
}

/* --fields name[:weight],...: the JSON fields the text encoder reads, with their weights */
#define MAX_FIELDS 16
typedef struct {
    int n;
    char *names[MAX_FIELDS];
    double weights[MAX_FIELDS];
    char desc[256];
} FieldSpec;

static void parse_fields(const char *spec, FieldSpec *fs) {
    char *copy = xstrdup(spec), *save = NULL;
    fs->n = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':'), *end = NULL;
        double w = 1;
        if (colon) {
            *colon = 0;
            w = strtod(colon + 1, &end);
            if (end == colon + 1 || *end || !(w >= 0 && w <= 100))
                comm_fail("--fields %s: weight '%s' of field '%s' is not a number in [0, 100]", spec, colon + 1, tok);
        }
        int ok = *tok != 0;
        for (const char *c = tok; *c; c++) ok &= (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_';
        if (!ok) comm_fail("--fields %s: '%s' is not a field name (lowercase letters, digits, _)", spec, tok);
        if (fs->n == MAX_FIELDS) comm_fail("--fields %s: more than %d fields", spec, MAX_FIELDS);
        for (int f = 0; f < fs->n; f++)
            if (!strcmp(fs->names[f], tok)) comm_fail("--fields %s: field '%s' given twice", spec, tok);
        fs->names[fs->n] = xstrdup(tok);
        fs->weights[fs->n++] = w;
    }
    if (fs->n == 0) comm_fail("--fields '%s': no field named", spec);
    snprintf(fs->desc, sizeof fs->desc, "fields %s", spec);
    free(copy);
}

static double parse_double(const char *flag, const char *v, double lo, double hi) {
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !(x >= lo && x <= hi)) comm_fail("%s %s: expected a number in [%g, %g]", flag, v, lo, hi);
    return x;
}

static long parse_long(const char *flag, const char *v, long lo, long hi) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) comm_fail("%s %s: expected an integer in [%ld, %ld]", flag, v, lo, hi);
    return x;
}

typedef struct { int64_t min, max, median; double mean; } LengthStats;

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static LengthStats length_stats(const Sequences *s) {
    int64_t *len = xmalloc(sizeof(int64_t) * (size_t)s->n_users);
    for (int64_t u = 0; u < s->n_users; u++) len[u] = s->offsets[u + 1] - s->offsets[u];
    qsort(len, (size_t)s->n_users, sizeof *len, cmp_i64);
    LengthStats st = {len[0], len[s->n_users - 1], len[s->n_users / 2], (double)s->n_interactions / (double)s->n_users};
    free(len);
    return st;
}

/* Replaces this rank's embedding rows (hi - lo) x *dim by [sqrt(1-w) text, sqrt(w) collab]
 * (collab alone when w = 1) and appends to the encoder description. */
static void add_collab(const Sequences *seq, int64_t n_items, int64_t lo, int64_t hi, const CollabOptions *col,
                       double w, float **emb, int *dim, char *encoder, size_t cap) {
    float *ce = xmalloc(sizeof(float) * (size_t)((hi - lo) * col->dim + 1));
    TextEncoderReport rep;
    collab_embed(seq, n_items, lo, hi, col, ce, &rep);
    size_t used = strlen(encoder);
    if (w >= 1) {
        free(*emb);
        *emb = ce;
        *dim = col->dim;
        used = 0;
    } else {
        float *both = xmalloc(sizeof(float) * (size_t)((hi - lo) * (*dim + col->dim) + 1));
        collab_concat(*emb, *dim, ce, col->dim, hi - lo, w, both);
        free(*emb);
        free(ce);
        *emb = both;
        *dim += col->dim;
    }
    snprintf(encoder + used, cap - used,
             "%scollab weight %g: shifted PPMI (window %d, shift %g) of training co-occurrence, SVD dim %d, %lld "
             "non-zeros, explained variance %.4f",
             used ? "; " : "", w, col->window, col->shift, col->dim, (long long)rep.nnz, rep.explained_variance);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "car_prep");
    char *command = command_line("car_prep", argc, argv); /* recorded in the dataset; before getopt permutes argv */
    const char *seq_path = NULL, *items_path = NULL, *out_path = NULL, *import_path = NULL;
    TextEncoderOptions enc;
    text_encoder_defaults(&enc);
    CollabOptions col;
    collab_defaults(&col);
    FieldSpec fs = {0};
    double collab_weight = 0.5;
    static struct option opts[] = {{"sequences", required_argument, 0, 's'}, {"items", required_argument, 0, 'i'},
                                   {"out", required_argument, 0, 'o'},       {"dim", required_argument, 0, 'd'},
                                   {"embeddings", required_argument, 0, 'e'}, {"seed", required_argument, 0, 'S'},
                                   {"oversample", required_argument, 0, 'O'}, {"power-iters", required_argument, 0, 'q'},
                                   {"min-df", required_argument, 0, 'm'},    {"hash-bits", required_argument, 0, 'b'},
                                   {"collab-dim", required_argument, 0, 'C'}, {"collab-weight", required_argument, 0, 'W'},
                                   {"collab-window", required_argument, 0, 'K'},
                                   {"collab-shift", required_argument, 0, 'F'}, {"fields", required_argument, 0, 'T'},
                                   {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': seq_path = optarg; break;
        case 'i': items_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 'e': import_path = optarg; break;
        case 'd': enc.dim = (int)parse_long("--dim", optarg, 1, 4096); break;
        case 'S': enc.seed = (uint64_t)parse_long("--seed", optarg, 0, 2147483647L); break;
        case 'O': enc.oversample = (int)parse_long("--oversample", optarg, 0, 1024); break;
        case 'q': enc.power_iters = (int)parse_long("--power-iters", optarg, 0, 50); break;
        case 'm': enc.min_df = (int)parse_long("--min-df", optarg, 1, 1000000); break;
        case 'b': enc.hash_bits = (int)parse_long("--hash-bits", optarg, 8, 26); break;
        case 'C': col.dim = (int)parse_long("--collab-dim", optarg, 1, 4096); break;
        case 'W': collab_weight = parse_double("--collab-weight", optarg, 0, 1); break;
        case 'K': col.window = (int)parse_long("--collab-window", optarg, 1, 1000); break;
        case 'F': col.shift = parse_double("--collab-shift", optarg, 1, 1e6); break;
        case 'T': parse_fields(optarg, &fs); break;
        case 'h':
            if (comm_rank() == 0) usage(stdout);
            comm_finalize();
            return 0;
        default: comm_fail("unknown or incomplete option '%s' (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc) comm_fail("unexpected argument '%s' (see --help)", argv[optind]);
    if (!seq_path || !items_path || !out_path) comm_fail("--sequences, --items and --out are required (see --help)");
    char *opt_err = text_encoder_check(&enc);
    if (opt_err) comm_fail("%s", opt_err);
    log_info("car_prep: %s", comm_blas_info());
    double t0 = comm_wtime();

    /* every rank reads and validates the inputs: the same error is seen everywhere */
    ItemTable items;
    char *err = input_read_items_fields(items_path, (const char *const *)fs.names, fs.n, &items);
    if (err) comm_fail("%s", err);
    Sequences seq;
    if ((err = input_read_sequences(seq_path, items.n_items, items_path, &seq))) comm_fail("%s", err);
    LengthStats ls = length_stats(&seq);
    int64_t *seen = xcalloc((size_t)items.n_items, sizeof(int64_t)), unseen = 0;
    for (int64_t i = 0; i < seq.n_interactions; i++) seen[seq.items[i]]++;
    for (int64_t i = 0; i < items.n_items; i++) unseen += seen[i] == 0;
    free(seen);
    log_info("inputs: %lld users, %lld items, %lld interactions; length min %lld / median %lld / mean %.2f / max %lld; "
             "%lld items never interacted with (%.1fs)",
             (long long)seq.n_users, (long long)items.n_items, (long long)seq.n_interactions, (long long)ls.min,
             (long long)ls.median, ls.mean, (long long)ls.max, (long long)unseen, comm_wtime() - t0);

    int64_t lo, hi;
    comm_split_range(items.n_items, comm_size(), comm_rank(), &lo, &hi);
    float *emb = NULL;
    int dim;
    char encoder[512];
    if (import_path) {
        dim = text_import_embeddings(import_path, items.n_items, lo, hi, &emb);
        text_l2_normalize(emb, hi - lo, dim); /* unit rows, like the built-in encoder's */
        snprintf(encoder, sizeof encoder, "imported from %s, rows L2-normalised", import_path);
        log_info("embeddings: imported %lld x %d from %s, rows L2-normalised", (long long)items.n_items, dim, import_path);
    } else {
        dim = enc.dim;
        emb = xmalloc(sizeof(float) * (size_t)((hi - lo) * dim + 1));
        TextEncoderReport rep;
        if (fs.n)
            text_embed_fields(items.fields + lo * fs.n, fs.n, fs.weights, hi - lo, items.n_items, &enc, emb, &rep);
        else
            text_embed(items.texts + lo, hi - lo, items.n_items, &enc, emb, &rep);
        snprintf(encoder, sizeof encoder,
                 "tfidf-lsa of %s: word 1-2 grams, hash_bits %d, min_df %d, randomized SVD dim %d oversample %d "
                 "power_iters %d seed %llu; vocabulary %lld terms, explained variance %.4f",
                 fs.n ? fs.desc : "text", enc.hash_bits, enc.min_df, enc.dim, enc.oversample, enc.power_iters, (unsigned long long)enc.seed,
                 (long long)rep.n_terms, rep.explained_variance);
        log_info("embeddings: %lld x %d, vocabulary %lld n-grams (df >= %d, of %lld seen), %lld non-zeros, explained "
                 "variance %.4f, %lld items without a vocabulary term (%.1fs)",
                 (long long)items.n_items, dim, (long long)rep.n_terms, enc.min_df, (long long)rep.n_buckets,
                 (long long)rep.nnz, rep.explained_variance, (long long)rep.n_empty, rep.seconds);
    }

    if (col.dim > 0) add_collab(&seq, items.n_items, lo, hi, &col, collab_weight, &emb, &dim, encoder, sizeof encoder);

    const char *keys[] = {"created_by", "sequences", "items", "encoder", "command"};
    const char *values[] = {"car_prep", seq_path, items_path, encoder, command};
    DatasetContent dc = {.n_users = seq.n_users, .n_items = items.n_items, .offsets = seq.offsets,
                         .user_ids = seq.user_ids, .items = seq.items, .dim = dim, .item_lo = lo, .item_hi = hi,
                         .embedding = emb, .texts = items.texts, .n_attrs = 5, .attr_keys = keys, .attr_values = values};
    dataset_write(out_path, &dc);
    double rss_mib = comm_peak_rss_mib();
    log_info("wrote %s: %lld users, %lld items, %lld interactions, embedding dim %d; %.1fs on %d rank(s), peak memory "
             "%.1f MiB per rank (max)",
             out_path, (long long)seq.n_users, (long long)items.n_items, (long long)seq.n_interactions, dim,
             comm_wtime() - t0, comm_size(), rss_mib);
    free(emb);
    free(command);
    item_table_free(&items);
    for (int f = 0; f < fs.n; f++) free(fs.names[f]);
    sequences_free(&seq);
    comm_finalize();
    return 0;
}
