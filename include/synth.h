/* synth: a synthetic recommendation data set with known structure (DESIGN.md section 3).
 * Items sit in a category > subcategory > brand hierarchy; their texts are built from words
 * tied to each level plus noise words, so a text encoder can recover the hierarchy. Users walk
 * the catalogue by a mixture of semantic drift (same subcategory, sometimes another subcategory
 * of the same category), fixed item-to-item links (collaborative signal no text explains) and
 * Zipf popularity. Everything is a function of the seed alone (counter-based rng). */
#ifndef CAR_SYNTH_H
#define CAR_SYNTH_H
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#define SYNTH_LEVEL_WORDS 4  /* words tied to each category and to each subcategory */
#define SYNTH_TITLE_LEVEL_WORDS 2 /* of which a title uses this many per level */
#define SYNTH_NOISE_POOL 256 /* shared noise words */

typedef struct {
    int64_t users, items;
    int categories, subcategories, brands; /* subcategories per category, brands per subcategory */
    int min_len, max_len;                  /* user sequence length, uniform in [min_len, max_len] */
    double w_drift, w_link, w_popularity;  /* next-item mixture (any positive scale) */
    double drift_category;                 /* share of drift steps to another subcategory of the category */
    int max_links;                         /* each item has 1..max_links fixed next items */
    double zipf;                           /* popularity of the item of rank r ~ (r+1)^-zipf */
    int noise_words;                       /* noise words per title */
    uint64_t seed;
} SynthParams;

/* How a step (an item after a user's first) was drawn. */
typedef enum { SYNTH_DRIFT_SUB, SYNTH_DRIFT_CAT, SYNTH_LINK, SYNTH_POPULAR, SYNTH_FALLBACK, SYNTH_STEP_KINDS } SynthStep;
extern const char *const synth_step_names[SYNTH_STEP_KINDS];

typedef struct {
    SynthParams p;
    int64_t n_subcategories, n_brands; /* global counts: C*S and C*S*B */
    /* vocabulary: subcategory g = c*S + s belongs to category g / S; brand b to subcategory b / B */
    char **category_names, **subcategory_names, **brand_names;
    char **category_words, **subcategory_words; /* SYNTH_LEVEL_WORDS per category / subcategory */
    char **noise_pool;                          /* SYNTH_NOISE_POOL */
    double *subcategory_price;                  /* base price of each subcategory */
    /* items, 0-based (item id = index + 1) */
    int32_t *item_subcategory, *item_brand, *item_pop_rank; /* rank 0 = most popular */
    double *item_popularity;                                /* probability, sums to 1 */
    int64_t *link_offsets;                                  /* V+1 */
    int32_t *links;                                         /* 0-based next items */
    char **item_title;
    double *item_price;
    /* users: user u (id u+1) has items user_items[user_offsets[u] .. user_offsets[u+1]), 0-based */
    int64_t *user_offsets;
    int32_t *user_items;
    int64_t n_interactions;
    int64_t steps[SYNTH_STEP_KINDS];
} SynthData;

SynthParams synth_defaults(void);
/* 0 when the parameters are usable, else -1 with a one-line message naming the flag. */
int synth_check(const SynthParams *p, char *err, size_t err_size);
/* Generates everything (parameters must pass synth_check). Serial, deterministic. */
void synth_generate(const SynthParams *p, SynthData *d);
void synth_free(SynthData *d);

/* Category of item i (0-based). */
static inline int synth_item_category(const SynthData *d, int64_t i) {
    return d->item_subcategory[i] / d->p.subcategories;
}

/* Consecutive pairs of all users: how many share the subcategory / category, how many are planted
 * links, and what sharing a subcategory would be by chance (sum over subcategories of the squared
 * share of interactions). */
typedef struct { int64_t pairs, same_subcategory, same_category, linked; double chance_subcategory; } SynthPairStats;
SynthPairStats synth_pair_stats(const SynthData *d);

/* The items.jsonl record of item i (0-based): item_id, asin, title, brand, categories, price, text. */
json_t *synth_item_json(const SynthData *d, int64_t i);
/* The generator's parameters, the hierarchy and the realised statistics. */
json_t *synth_truth_json(const SynthData *d);

/* Writers: 0 on success, -1 on a write error (errno set). */
int synth_write_sequences(const SynthData *d, FILE *f); /* "user_id item_id ..." 1-based */
int synth_write_items(const SynthData *d, FILE *f);     /* one JSON object a line */
int synth_write_truth(const SynthData *d, FILE *f);

#endif
