/* collab: the PPMI rows against a dense reference computed from the definition, no leakage
 * (a user's last two items never change the embedding, while a training item does), and the
 * text + collab concatenation. Every rank builds its own item range. */
#include "check.h"
#include "collab.h"
#include "comm.h"
#include "rng.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { U = 60, V = 25 };

/* users of 3..10 items drawn with some structure (item k tends to follow k-1) */
static void make_sequences(Sequences *s, uint64_t seed) {
    s->n_users = U;
    s->offsets = xmalloc(sizeof(int64_t) * (U + 1));
    s->user_ids = xmalloc(sizeof(int64_t) * U);
    s->items = xmalloc(sizeof(int32_t) * U * 10);
    s->offsets[0] = 0;
    for (int u = 0; u < U; u++) {
        int n = 3 + (int)rng_below(seed, 1, (uint64_t)u, 8);
        int32_t it = (int32_t)rng_below(seed, 2, (uint64_t)u, V);
        for (int k = 0; k < n; k++) {
            s->items[s->offsets[u] + k] = it;
            it = rng_below(seed, 3, (uint64_t)(u * 16 + k), 3) ? (it + 1) % V : (int32_t)rng_below(seed, 4, (uint64_t)(u * 16 + k), V);
        }
        s->offsets[u + 1] = s->offsets[u] + n;
        s->user_ids[u] = u + 1;
    }
    s->n_interactions = s->offsets[U];
}

static void free_sequences(Sequences *s) { free(s->offsets); free(s->user_ids); free(s->items); }

/* dense PPMI from the definition: every ordered pair of distinct-item training positions within w */
static void dense_ppmi(const Sequences *s, int w, double shift, double *P) {
    double c[V][V] = {{0}}, row[V] = {0}, T = 0;
    for (int u = 0; u < U; u++) {
        const int32_t *x = s->items + s->offsets[u];
        int64_t n = s->offsets[u + 1] - s->offsets[u] - 2;
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++)
                if (a != b && abs(a - b) <= w && x[a] != x[b]) c[x[a]][x[b]] += 1;
    }
    for (int i = 0; i < V; i++)
        for (int j = 0; j < V; j++) row[i] += c[i][j], T += c[i][j];
    for (int i = 0; i < V; i++) {
        double n2 = 0;
        for (int j = 0; j < V; j++) {
            double v = c[i][j] > 0 ? log(c[i][j] * T / (row[i] * row[j])) - log(shift) : 0;
            P[i * V + j] = v > 0 ? v : 0;
            n2 += P[i * V + j] * P[i * V + j];
        }
        for (int j = 0; j < V && n2 > 0; j++) P[i * V + j] /= sqrt(n2);
    }
}

static void test_ppmi_matches_definition(void) {
    Sequences s;
    make_sequences(&s, 7);
    double P[V * V];
    for (int shift = 1; shift <= 2; shift++) {
        CollabOptions o;
        collab_defaults(&o);
        o.window = 2;
        o.shift = shift;
        dense_ppmi(&s, o.window, o.shift, P);
        int64_t lo, hi;
        comm_split_range(V, comm_size(), comm_rank(), &lo, &hi);
        TextTfidf m;
        collab_ppmi(&s, V, lo, hi, &o, &m);
        double worst = 0;
        int64_t nnz = 0;
        for (int64_t r = 0; r < hi - lo; r++) {
            double dense[V] = {0};
            for (int64_t q = m.row_ptr[r]; q < m.row_ptr[r + 1]; q++) dense[m.cols[q]] = m.vals[q];
            for (int j = 0; j < V; j++) {
                worst = check_max(worst, fabs(dense[j] - P[(lo + r) * V + j]));
                nnz += P[(lo + r) * V + j] > 0;
            }
        }
        CHECK_MSG(worst < 1e-12, "shift %d: max difference %.3g", shift, worst);
        CHECK(m.row_ptr[hi - lo] == nnz && nnz > 0);
        text_tfidf_free(&m);
    }
    free_sequences(&s);
}

static void embed(const Sequences *s, float **out, int64_t *lo, int64_t *hi) {
    CollabOptions o;
    collab_defaults(&o);
    o.dim = 6;
    comm_split_range(V, comm_size(), comm_rank(), lo, hi);
    *out = xmalloc(sizeof(float) * (size_t)((*hi - *lo) * o.dim + 1));
    collab_embed(s, V, *lo, *hi, &o, *out, NULL);
}

/* changing any user's last two items (validation and test) leaves the embedding bit-identical */
static void test_no_leakage(void) {
    Sequences s;
    make_sequences(&s, 11);
    float *a, *b, *c;
    int64_t lo, hi;
    embed(&s, &a, &lo, &hi);
    for (int u = 0; u < U; u += 3) {
        int64_t end = s.offsets[u + 1];
        s.items[end - 1] = (s.items[end - 1] + 7) % V;
        s.items[end - 2] = (s.items[end - 2] + 3) % V;
    }
    embed(&s, &b, &lo, &hi);
    CHECK(memcmp(a, b, sizeof(float) * (size_t)((hi - lo) * 6)) == 0);
    for (int64_t i = 0; i < (hi - lo) * 6; i++) CHECK_MSG(isfinite(a[i]), "non-finite at %lld", (long long)i);
    /* a training item does change it: the test can fail */
    s.items[s.offsets[4]] = (s.items[s.offsets[4]] + 5) % V;
    s.items[s.offsets[9]] = (s.items[s.offsets[9]] + 5) % V;
    embed(&s, &c, &lo, &hi);
    double diff = 0;
    for (int64_t i = 0; i < (hi - lo) * 6; i++) diff = check_max(diff, fabs((double)a[i] - c[i]));
    comm_max_double(&diff, 1);
    CHECK_MSG(diff > 1e-4, "a training item did not change the embedding (%.3g)", diff);
    free(a); free(b); free(c);
    free_sequences(&s);
}

static void test_concat(void) {
    float x[2 * 3] = {1, 0, 0, 0, 0.6f, 0.8f}, y[2 * 2] = {0, 1, 1, 0}, out[2 * 5];
    collab_concat(x, 3, y, 2, 2, 0.25, out);
    for (int i = 0; i < 2; i++) {
        double n2 = 0;
        for (int k = 0; k < 5; k++) n2 += out[i * 5 + k] * out[i * 5 + k];
        CHECK_CLOSE(n2, 1.0, 1e-6);
    }
    CHECK_CLOSE(out[0], sqrt(0.75), 1e-6);
    CHECK_CLOSE(out[4], sqrt(0.25), 1e-6);
    CHECK_CLOSE(out[5 + 3], sqrt(0.25), 1e-6);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_collab");
    RUN_TEST(test_ppmi_matches_definition);
    RUN_TEST(test_no_leakage);
    RUN_TEST(test_concat);
    return check_finish();
}
