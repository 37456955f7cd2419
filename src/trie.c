/* trie: semantic-ID trie as runs of the (tuple, id)-sorted items. */
#include "trie.h"
#include "comm.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

static const int32_t *sort_codes;
static int sort_L;

static int cmp_tuple(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    const int32_t *cx = sort_codes + (int64_t)x * sort_L, *cy = sort_codes + (int64_t)y * sort_L;
    for (int l = 0; l < sort_L; l++)
        if (cx[l] != cy[l]) return cx[l] < cy[l] ? -1 : 1;
    return (x > y) - (x < y);
}

/* 1 when sorted items i - 1 and i differ in their first depth codes */
static int breaks(const Trie *t, int64_t i, int depth) {
    const int32_t *a = t->codes + (int64_t)t->sorted[i - 1] * t->L, *b = t->codes + (int64_t)t->sorted[i] * t->L;
    for (int l = 0; l < depth; l++)
        if (a[l] != b[l]) return 1;
    return 0;
}

void trie_build(Trie *t, const int32_t *codes, int64_t V, int L) {
    memset(t, 0, sizeof *t);
    if (L < 0 || L > SID_MAX_LEVELS || V <= 0 || V > INT32_MAX) comm_fatal("trie: %lld items of %d levels", (long long)V, L);
    t->L = L;
    t->V = V;
    t->codes = codes;
    t->sorted = xmalloc(sizeof(int32_t) * (size_t)V);
    for (int64_t i = 0; i < V; i++) t->sorted[i] = (int32_t)i;
    sort_codes = codes;
    sort_L = L;
    qsort(t->sorted, (size_t)V, sizeof(int32_t), cmp_tuple);
    for (int d = 0; d <= L; d++) {
        int64_t n = 1;
        for (int64_t i = 1; i < V; i++) n += breaks(t, i, d);
        t->n_nodes[d] = n;
        t->start[d] = xmalloc(sizeof(int64_t) * (size_t)(n + 1));
        int64_t k = 0;
        t->start[d][k++] = 0;
        for (int64_t i = 1; i < V; i++)
            if (breaks(t, i, d)) t->start[d][k++] = i;
        t->start[d][n] = V;
        if (d > 0) {
            t->code[d] = xmalloc(sizeof(int32_t) * (size_t)n);
            for (int64_t j = 0; j < n; j++) t->code[d][j] = codes[(int64_t)t->sorted[t->start[d][j]] * L + d - 1];
        }
    }
    /* children of a depth-d node: the depth-(d+1) nodes starting inside its run */
    for (int d = 0; d < L; d++) {
        int64_t n = t->n_nodes[d], c = 0;
        t->child[d] = xmalloc(sizeof(int64_t) * (size_t)(n + 1));
        for (int64_t j = 0; j < n; j++) {
            t->child[d][j] = c;
            while (c < t->n_nodes[d + 1] && t->start[d + 1][c] < t->start[d][j + 1]) c++;
        }
        t->child[d][n] = c;
    }
}

void trie_free(Trie *t) {
    free(t->sorted);
    for (int d = 0; d <= SID_MAX_LEVELS; d++) {
        free(t->start[d]);
        free(t->child[d]);
        free(t->code[d]);
    }
    memset(t, 0, sizeof *t);
}

int64_t trie_find(const Trie *t, const int32_t *prefix, int len) {
    int64_t node = 0;
    for (int d = 0; d < len; d++) {
        int64_t first, n = trie_children(t, d, node, &first), lo = first, hi = first + n;
        while (lo < hi) { /* children are in increasing code order */
            int64_t mid = (lo + hi) / 2;
            if (t->code[d + 1][mid] < prefix[d]) lo = mid + 1;
            else hi = mid;
        }
        if (lo == first + n || t->code[d + 1][lo] != prefix[d]) return -1;
        node = lo;
    }
    return node;
}

int64_t trie_node_of(const Trie *t, int32_t item, int len) {
    return trie_find(t, t->codes + (int64_t)item * t->L, len);
}
