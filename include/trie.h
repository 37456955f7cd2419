/* trie: the semantic-ID trie of a catalogue. Items sorted by their code tuple (then by id) put
 * every prefix's items in one contiguous run, so a node of depth l is that run: the items whose
 * first l codes agree. Depth 0 is the root (all items), depth L the leaves (one per distinct
 * tuple; codes are not unique, so a leaf may hold several items). Memory O(V x L), built once.
 * Nodes of depth l are numbered 0..trie_nodes(l) - 1 in tuple order; the children of node n
 * are the consecutive nodes [first, first + count) of depth l + 1, in increasing code order. */
#ifndef CAR_TRIE_H
#define CAR_TRIE_H
#include "config.h"
#include <stdint.h>

typedef struct {
    int L;
    int64_t V;
    int32_t *sorted;                /* (V) items in (tuple, id) order */
    int64_t n_nodes[SID_MAX_LEVELS + 1]; /* per depth 0..L */
    int64_t *start[SID_MAX_LEVELS + 1];             /* (n_nodes[l] + 1) node n of depth l = sorted[start[n] .. start[n + 1]) */
    int64_t *child[SID_MAX_LEVELS + 1];             /* depth l < L: (n_nodes[l] + 1) children of node n = [child[n], child[n + 1]) */
    int32_t *code[SID_MAX_LEVELS + 1];              /* depth l >= 1: (n_nodes[l]) the node's code at level l (0-based: l - 1) */
    const int32_t *codes;           /* (V, L), borrowed */
} Trie;

/* codes (V, L) stay owned by the caller (L 0: one root holding every item). */
void trie_build(Trie *t, const int32_t *codes, int64_t V, int L);
void trie_free(Trie *t);
static inline int64_t trie_nodes(const Trie *t, int depth) { return t->n_nodes[depth]; }
/* Children of node n of depth < L: *first, returns their count. */
static inline int64_t trie_children(const Trie *t, int depth, int64_t n, int64_t *first) {
    *first = t->child[depth][n];
    return t->child[depth][n + 1] - t->child[depth][n];
}
static inline int32_t trie_code(const Trie *t, int depth, int64_t n) { return t->code[depth][n]; }
/* Items under node n of depth l (at a leaf: the items sharing its tuple), ascending by id at a leaf. */
static inline const int32_t *trie_items(const Trie *t, int depth, int64_t n, int64_t *count) {
    *count = t->start[depth][n + 1] - t->start[depth][n];
    return t->sorted + t->start[depth][n];
}
/* Node of depth len holding prefix[0..len), or -1 when no item has that prefix. */
int64_t trie_find(const Trie *t, const int32_t *prefix, int len);
/* Node at depth len whose prefix is the first len codes of item (always exists). */
int64_t trie_node_of(const Trie *t, int32_t item, int len);

#endif
