/* beam: top-K recommendation lists from a trained model, for both training modes.
 *
 * ar: constrained beam search of width W over the SID trie. At level l every beam's think-head
 * softmax is taken over the trie's valid children of its prefix only, and each user keeps the W
 * best prefixes by summed log-prob (ties: tuple order). After level L the UID head scores only
 * the items under each surviving prefix (the leaf's items: codes are not unique), its softmax
 * likewise restricted to them; an item's score is its joint log-prob. Items are sharded: every
 * rank scores the candidates it owns for the beams of all ranks, the leaf normalisers are
 * all-reduced, the per-rank best lists travel to the user's rank and are merged. Distinct items
 * by construction (an item lies under one leaf); with W beams the list may be shorter than K.
 * car: one pass, the UID logit of every item (plus beta * sum of the think log-probs with slow
 * thinking), top-K merged the same way.
 * Ties between items are broken by item id (smaller first), so lists do not depend on P. */
#ifndef CAR_BEAM_H
#define CAR_BEAM_H
#include "decode.h"
#include "model.h"
#include "trie.h"

typedef struct {
    int K;             /* list length */
    int beam;          /* ar: W >= 1 */
    int use_cache;     /* ar: KV cache (1) or recomputation of every sequence (0) */
    float think_weight; /* car: beta of slow thinking (0: fast, the UID logit alone) */
    int think_levels;  /* car: levels slow thinking uses (0: all) */
} RecOptions;

typedef struct {
    int B, K, L;
    int *n;             /* (B) items listed, <= K */
    int32_t *items;     /* (B, K) best first */
    float *scores;      /* (B, K) ar: joint log-prob; car: the ranking score */
    float *code_prob;   /* (B, K, L) the think head's probability of the item's code at each level
                           (ar: given the item's own prefix; car: from the one hidden state) */
    int *code_rank;     /* (B, K, L) that code's rank among the level's codes (1: most probable) */
} RecLists;

typedef struct {
    Model *m;
    const Trie *trie;
    RecOptions o;
    Decoder dec;
    float *scores; /* car: the item scores of a round, kept (fresh pages each round cost more than the scoring) */
    size_t scores_cap;
} Recommender;

void recommender_init(Recommender *r, Model *m, const Trie *trie, const RecOptions *o);
void recommender_free(Recommender *r);
void rec_lists_free(RecLists *l);
/* Collective: every rank calls it, each with its own users (B may be 0). Lists for the B
 * histories of b (each shorter than max_chunks items); user b never gets the items
 * excl[excl_off[b] .. excl_off[b+1]) (excl_off NULL: nothing excluded). out is (re)allocated. */
void recommend_batch(Recommender *r, const ModelBatch *b, const int64_t *excl_off, const int32_t *excl, RecLists *out);

#endif
