#include "synth.h"
#include "rng.h"
#include "util.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const synth_step_names[SYNTH_STEP_KINDS] = {"drift_subcategory", "drift_category", "link", "popularity",
                                                        "fallback"};

/* Random streams: one per purpose and index, so no value depends on the order others are drawn in. */
enum { ST_VOCAB = 1, ST_SUB_PRICE, ST_LEAF_PERM, ST_POP_PERM, ST_LINKS, ST_TITLE, ST_PRICE, ST_USER_LEN, ST_USER };
static uint64_t stream(uint64_t kind, uint64_t index) { return kind << 48 ^ index; }

SynthParams synth_defaults(void) {
    SynthParams p = {
        .users = 2000, .items = 1000, .categories = 8, .subcategories = 4, .brands = 3,
        .min_len = 5, .max_len = 20,
        .w_drift = 0.45, .w_link = 0.35, .w_popularity = 0.20, .drift_category = 0.25,
        .max_links = 3, .zipf = 1.0, .noise_words = 3, .seed = 1,
    };
    return p;
}

int synth_check(const SynthParams *p, char *err, size_t n) {
#define BAD(...) do { snprintf(err, n, __VA_ARGS__); return -1; } while (0)
    if (p->users < 1 || p->users > 10000000) BAD("--users must be in [1, 10000000], got %lld", (long long)p->users);
    if (p->items < 2 || p->items > 1000000) BAD("--items must be in [2, 1000000], got %lld", (long long)p->items);
    if (p->categories < 1 || p->categories > 10000) BAD("--categories must be in [1, 10000], got %d", p->categories);
    if (p->subcategories < 1 || p->subcategories > 1000)
        BAD("--subcategories must be in [1, 1000], got %d", p->subcategories);
    if (p->brands < 1 || p->brands > 1000) BAD("--brands must be in [1, 1000], got %d", p->brands);
    int64_t leaves = (int64_t)p->categories * p->subcategories, brands = leaves * p->brands;
    if (brands > p->items)
        BAD("categories x subcategories x brands = %d x %d x %d = %lld exceeds --items %lld (every brand needs an item)",
            p->categories, p->subcategories, p->brands, (long long)brands, (long long)p->items);
    if (p->min_len < 5) BAD("--min-len must be at least 5 (leave-one-out needs it), got %d", p->min_len);
    if (p->max_len < p->min_len || p->max_len > 100000)
        BAD("--max-len must be in [--min-len %d, 100000], got %d", p->min_len, p->max_len);
    if (!(p->w_drift >= 0 && p->w_link >= 0 && p->w_popularity >= 0) || !isfinite(p->w_drift + p->w_link + p->w_popularity))
        BAD("--drift, --link and --popularity must be finite and >= 0, got %g, %g, %g", p->w_drift, p->w_link, p->w_popularity);
    if (!(p->w_drift + p->w_link + p->w_popularity > 0))
        BAD("--drift + --link + --popularity must be positive, got %g + %g + %g", p->w_drift, p->w_link, p->w_popularity);
    if (!(p->drift_category >= 0 && p->drift_category <= 1))
        BAD("--drift-category must be in [0, 1], got %g", p->drift_category);
    if (p->max_links < 1 || p->max_links > 100 || p->max_links > p->items - 1)
        BAD("--links must be in [1, min(100, items - 1)], got %d", p->max_links);
    if (!(p->zipf >= 0 && p->zipf <= 5)) BAD("--zipf must be in [0, 5], got %g", p->zipf);
    if (p->noise_words < 0 || p->noise_words > SYNTH_NOISE_POOL / 4)
        BAD("--noise must be in [0, %d], got %d", SYNTH_NOISE_POOL / 4, p->noise_words);
    return 0;
#undef BAD
}

/* ---- vocabulary: pronounceable pseudo-words, all distinct ---- */

typedef struct { uint64_t *slot; size_t cap; } WordSet; /* open addressing over word hashes */

static int wordset_insert(WordSet *s, const char *w) { /* 0 if already there */
    uint64_t h = fnv1a64(FNV64_INIT, w, strlen(w));
    h = h ? h : 1;
    for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (s->slot[i] == h) return 0;
        if (!s->slot[i]) { s->slot[i] = h; return 1; }
    }
}

static char *new_word(Rng *r, WordSet *set) {
    static const char *const onset[] = {"b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t",
                                        "v", "z", "br", "dr", "kr", "st", "tr", "pl", "gl", "sh", "ch", "th"};
    static const char *const vowel[] = {"a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y"};
    static const char *const coda[] = {"", "", "", "", "n", "r", "l", "s", "x", "m"};
    char w[64];
    for (int attempt = 0;; attempt++) {
        int syllables = 2 + (attempt >= 8) + (attempt >= 32) + attempt / 256; /* longer when crowded */
        size_t len = 0;
        w[0] = 0;
        for (int k = 0; k < syllables && len + 8 < sizeof w; k++)
            len += (size_t)snprintf(w + len, sizeof w - len, "%s%s%s", onset[rng_next_below(r, 24)],
                                    vowel[rng_next_below(r, 10)], k == syllables - 1 ? coda[rng_next_below(r, 10)] : "");
        if (wordset_insert(set, w)) {
            w[0] = (char)(w[0] - 'a' + 'A');
            return xstrdup(w);
        }
    }
}

static char **new_words(Rng *r, WordSet *set, int64_t n) {
    char **w = xmalloc(sizeof(char *) * (size_t)n);
    for (int64_t i = 0; i < n; i++) w[i] = new_word(r, set);
    return w;
}

static void free_words(char **w, int64_t n) {
    if (!w) return;
    for (int64_t i = 0; i < n; i++) free(w[i]);
    free(w);
}

/* ---- sampling ---- */

static int32_t *random_permutation(uint64_t seed, uint64_t st, int64_t n) {
    int32_t *perm = xmalloc(sizeof(int32_t) * (size_t)n);
    Rng r = rng_make(seed, st);
    for (int64_t i = 0; i < n; i++) perm[i] = (int32_t)i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)rng_next_below(&r, (uint64_t)i + 1);
        int32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
    return perm;
}

/* Index in [lo, hi) of the first cumulative weight above u * (the range's total); cum restarts at lo. */
static int64_t draw_cumulative(const double *cum, int64_t lo, int64_t hi, double u) {
    double t = u * cum[hi - 1];
    int64_t a = lo, b = hi - 1;
    while (a < b) {
        int64_t m = a + (b - a) / 2;
        if (cum[m] > t) b = m;
        else a = m + 1;
    }
    return a;
}

/* Items grouped by subcategory with cumulative popularity restarting in each group. */
typedef struct {
    const SynthData *d;
    int64_t *group_start; /* n_subcategories + 1 */
    int32_t *grouped;     /* item ids in group order */
    double *group_cum;    /* cumulative popularity within the group */
    double *all_cum;      /* cumulative popularity over all items in id order */
    double w_drift, w_link; /* normalised mixture thresholds */
} Sampler;

static int32_t draw_popular(const Sampler *s, Rng *r) {
    return (int32_t)draw_cumulative(s->all_cum, 0, s->d->p.items, rng_next_uniform(r));
}

static int32_t draw_in_subcategory(const Sampler *s, Rng *r, int64_t g) {
    return s->grouped[draw_cumulative(s->group_cum, s->group_start[g], s->group_start[g + 1], rng_next_uniform(r))];
}

static int32_t draw_in_category(const Sampler *s, Rng *r, int c) {
    int S = s->d->p.subcategories;
    double total = 0;
    for (int k = 0; k < S; k++) total += s->group_cum[s->group_start[(int64_t)c * S + k + 1] - 1];
    double t = rng_next_uniform(r) * total;
    int k = 0;
    for (; k < S - 1; k++) {
        t -= s->group_cum[s->group_start[(int64_t)c * S + k + 1] - 1];
        if (t < 0) break;
    }
    return draw_in_subcategory(s, r, (int64_t)c * S + k);
}

static int32_t draw_kind(const Sampler *s, Rng *r, int32_t cur, SynthStep kind) {
    const SynthData *d = s->d;
    int S = d->p.subcategories;
    int64_t g = d->item_subcategory[cur];
    switch (kind) {
    case SYNTH_DRIFT_SUB: return draw_in_subcategory(s, r, g);
    case SYNTH_DRIFT_CAT: { /* another subcategory of the same category */
        int64_t first = g - g % S, other = first + (g - first + 1 + (int64_t)rng_next_below(r, (uint64_t)S - 1)) % S;
        return draw_in_subcategory(s, r, other);
    }
    case SYNTH_LINK: {
        int64_t lo = d->link_offsets[cur], n = d->link_offsets[cur + 1] - lo;
        return d->links[lo + (int64_t)rng_next_below(r, (uint64_t)n)];
    }
    default: return draw_popular(s, r);
    }
}

/* The next item after cur: a mixture draw that never repeats cur. */
static int32_t draw_step(const Sampler *s, Rng *r, int32_t cur, SynthStep *kind) {
    double u = rng_next_uniform(r);
    if (u < s->w_drift)
        *kind = s->d->p.subcategories > 1 && rng_next_uniform(r) < s->d->p.drift_category ? SYNTH_DRIFT_CAT : SYNTH_DRIFT_SUB;
    else if (u < s->w_drift + s->w_link) *kind = SYNTH_LINK;
    else *kind = SYNTH_POPULAR;
    for (int tries = 0; tries < 64; tries++) {
        int32_t next = draw_kind(s, r, cur, *kind);
        if (next != cur) return next;
    }
    /* the kind cannot leave cur (a one-item subcategory, a dominant item): popularity, then uniform */
    *kind = SYNTH_FALLBACK;
    for (int tries = 0; tries < 64; tries++) {
        int32_t next = draw_popular(s, r);
        if (next != cur) return next;
    }
    return (int32_t)((cur + 1 + (int64_t)rng_next_below(r, (uint64_t)s->d->p.items - 1)) % s->d->p.items);
}

/* ---- generation ---- */

static void make_vocabulary(SynthData *d) {
    const SynthParams *p = &d->p;
    int64_t C = p->categories, L = d->n_subcategories;
    int64_t total = C + L + d->n_brands + SYNTH_LEVEL_WORDS * (C + L) + SYNTH_NOISE_POOL + 8;
    WordSet set = {NULL, 64};
    while (set.cap < 2 * (size_t)total) set.cap *= 2;
    set.slot = xcalloc(set.cap, sizeof(uint64_t));
    static const char *const reserved[] = {"title", "brand", "categories", "price", "synth"};
    for (int i = 0; i < 5; i++) wordset_insert(&set, reserved[i]);
    Rng r = rng_make(p->seed, stream(ST_VOCAB, 0));
    d->category_names = new_words(&r, &set, C);
    d->subcategory_names = new_words(&r, &set, L);
    d->brand_names = new_words(&r, &set, d->n_brands);
    d->category_words = new_words(&r, &set, SYNTH_LEVEL_WORDS * C);
    d->subcategory_words = new_words(&r, &set, SYNTH_LEVEL_WORDS * L);
    d->noise_pool = new_words(&r, &set, SYNTH_NOISE_POOL);
    free(set.slot);
    /* each subcategory has its price level, log-uniform in [5, 200] */
    d->subcategory_price = xmalloc(sizeof(double) * (size_t)L);
    for (int64_t g = 0; g < L; g++)
        d->subcategory_price[g] = 5.0 * exp(log(40.0) * rng_uniform(p->seed, stream(ST_SUB_PRICE, g), 0));
}

/* 2 distinct indices in [0, SYNTH_LEVEL_WORDS) */
static void two_of_level(Rng *r, int *a, int *b) {
    *a = (int)rng_next_below(r, SYNTH_LEVEL_WORDS);
    *b = (*a + 1 + (int)rng_next_below(r, SYNTH_LEVEL_WORDS - 1)) % SYNTH_LEVEL_WORDS;
}

static char *make_title(const SynthData *d, int64_t i) {
    const SynthParams *p = &d->p;
    Rng r = rng_make(p->seed, stream(ST_TITLE, (uint64_t)i));
    int64_t g = d->item_subcategory[i], c = synth_item_category(d, i);
    const char *words[SYNTH_TITLE_LEVEL_WORDS * 2 + SYNTH_NOISE_POOL];
    int n = 0, a, b;
    two_of_level(&r, &a, &b);
    words[n++] = d->category_words[c * SYNTH_LEVEL_WORDS + a];
    words[n++] = d->category_words[c * SYNTH_LEVEL_WORDS + b];
    two_of_level(&r, &a, &b);
    words[n++] = d->subcategory_words[g * SYNTH_LEVEL_WORDS + a];
    words[n++] = d->subcategory_words[g * SYNTH_LEVEL_WORDS + b];
    int first_noise = n;
    while (n < first_noise + p->noise_words) { /* distinct noise words */
        const char *w = d->noise_pool[rng_next_below(&r, SYNTH_NOISE_POOL)];
        int seen = 0;
        for (int k = first_noise; k < n; k++) seen |= words[k] == w;
        if (!seen) words[n++] = w;
    }
    for (int k = n - 1; k > 0; k--) { /* word order carries no meaning */
        int j = (int)rng_next_below(&r, (uint64_t)k + 1);
        const char *t = words[k]; words[k] = words[j]; words[j] = t;
    }
    size_t len = strlen(d->brand_names[d->item_brand[i]]) + 1;
    for (int k = 0; k < n; k++) len += strlen(words[k]) + 1;
    char *title = xmalloc(len), *q = title;
    q += sprintf(q, "%s", d->brand_names[d->item_brand[i]]);
    for (int k = 0; k < n; k++) q += sprintf(q, " %s", words[k]);
    return title;
}

static void make_items(SynthData *d) {
    const SynthParams *p = &d->p;
    int64_t V = p->items, L = d->n_subcategories;
    /* hierarchy: a random order of items dealt round-robin over subcategories, then brands */
    int32_t *perm = random_permutation(p->seed, stream(ST_LEAF_PERM, 0), V);
    d->item_subcategory = xmalloc(sizeof(int32_t) * (size_t)V);
    d->item_brand = xmalloc(sizeof(int32_t) * (size_t)V);
    for (int64_t k = 0; k < V; k++) {
        int64_t g = k % L;
        d->item_subcategory[perm[k]] = (int32_t)g;
        d->item_brand[perm[k]] = (int32_t)(g * p->brands + (k / L) % p->brands);
    }
    free(perm);
    /* popularity: Zipf over a random ranking, independent of the hierarchy */
    int32_t *order = random_permutation(p->seed, stream(ST_POP_PERM, 0), V);
    d->item_pop_rank = xmalloc(sizeof(int32_t) * (size_t)V);
    d->item_popularity = xmalloc(sizeof(double) * (size_t)V);
    double z = 0;
    for (int64_t r = 0; r < V; r++) {
        d->item_pop_rank[order[r]] = (int32_t)r;
        z += pow((double)r + 1, -p->zipf);
    }
    for (int64_t i = 0; i < V; i++) d->item_popularity[i] = pow((double)d->item_pop_rank[i] + 1, -p->zipf) / z;
    free(order);
    /* links: 1..max_links distinct next items, uniform over the whole catalogue */
    d->link_offsets = xmalloc(sizeof(int64_t) * (size_t)(V + 1));
    d->link_offsets[0] = 0;
    for (int64_t i = 0; i < V; i++)
        d->link_offsets[i + 1] = d->link_offsets[i] + 1 +
                                 (int64_t)rng_below(p->seed, stream(ST_LINKS, (uint64_t)i), 0, (uint64_t)p->max_links);
    d->links = xmalloc(sizeof(int32_t) * (size_t)d->link_offsets[V]);
    for (int64_t i = 0; i < V; i++) {
        Rng r = rng_make(p->seed, stream(ST_LINKS, (uint64_t)i));
        r.counter = 1;
        for (int64_t k = d->link_offsets[i]; k < d->link_offsets[i + 1];) {
            int32_t j = (int32_t)rng_next_below(&r, (uint64_t)V);
            int fresh = j != i;
            for (int64_t m = d->link_offsets[i]; m < k; m++) fresh &= d->links[m] != j;
            if (fresh) d->links[k++] = j;
        }
    }
    /* texts and prices */
    d->item_title = xmalloc(sizeof(char *) * (size_t)V);
    d->item_price = xmalloc(sizeof(double) * (size_t)V);
    for (int64_t i = 0; i < V; i++) {
        d->item_title[i] = make_title(d, i);
        double price = d->subcategory_price[d->item_subcategory[i]] * exp(0.25 * rng_normal(p->seed, stream(ST_PRICE, i), 0));
        d->item_price[i] = fmax(0.5, round(price * 100) / 100);
    }
}

static void make_users(SynthData *d) {
    const SynthParams *p = &d->p;
    int64_t U = p->users, V = p->items, L = d->n_subcategories;
    Sampler s = {.d = d};
    double wsum = p->w_drift + p->w_link + p->w_popularity;
    s.w_drift = p->w_drift / wsum;
    s.w_link = p->w_link / wsum;
    s.group_start = xcalloc((size_t)L + 1, sizeof(int64_t));
    for (int64_t i = 0; i < V; i++) s.group_start[d->item_subcategory[i] + 1]++;
    for (int64_t g = 0; g < L; g++) s.group_start[g + 1] += s.group_start[g];
    s.grouped = xmalloc(sizeof(int32_t) * (size_t)V);
    s.group_cum = xmalloc(sizeof(double) * (size_t)V);
    s.all_cum = xmalloc(sizeof(double) * (size_t)V);
    int64_t *fill = xmalloc(sizeof(int64_t) * (size_t)L);
    memcpy(fill, s.group_start, sizeof(int64_t) * (size_t)L);
    for (int64_t i = 0; i < V; i++) s.grouped[fill[d->item_subcategory[i]]++] = (int32_t)i;
    free(fill);
    for (int64_t g = 0; g < L; g++)
        for (int64_t k = s.group_start[g]; k < s.group_start[g + 1]; k++)
            s.group_cum[k] = (k > s.group_start[g] ? s.group_cum[k - 1] : 0) + d->item_popularity[s.grouped[k]];
    for (int64_t i = 0; i < V; i++) s.all_cum[i] = (i ? s.all_cum[i - 1] : 0) + d->item_popularity[i];

    d->user_offsets = xmalloc(sizeof(int64_t) * (size_t)(U + 1));
    d->user_offsets[0] = 0;
    uint64_t span = (uint64_t)(p->max_len - p->min_len + 1);
    for (int64_t u = 0; u < U; u++)
        d->user_offsets[u + 1] = d->user_offsets[u] + p->min_len + (int64_t)rng_below(p->seed, stream(ST_USER_LEN, u), 0, span);
    d->n_interactions = d->user_offsets[U];
    d->user_items = xmalloc(sizeof(int32_t) * (size_t)d->n_interactions);
    for (int64_t u = 0; u < U; u++) {
        Rng r = rng_make(p->seed, stream(ST_USER, (uint64_t)u));
        int32_t *seq = d->user_items + d->user_offsets[u];
        int64_t n = d->user_offsets[u + 1] - d->user_offsets[u];
        int preferred = (int)rng_next_below(&r, (uint64_t)p->categories);
        seq[0] = draw_in_category(&s, &r, preferred);
        for (int64_t k = 1; k < n; k++) {
            SynthStep kind;
            seq[k] = draw_step(&s, &r, seq[k - 1], &kind);
            d->steps[kind]++;
        }
    }
    free(s.group_start); free(s.grouped); free(s.group_cum); free(s.all_cum);
}

void synth_generate(const SynthParams *p, SynthData *d) {
    memset(d, 0, sizeof *d);
    d->p = *p;
    d->n_subcategories = (int64_t)p->categories * p->subcategories;
    d->n_brands = d->n_subcategories * p->brands;
    make_vocabulary(d);
    make_items(d);
    make_users(d);
}

void synth_free(SynthData *d) {
    free_words(d->category_names, d->p.categories);
    free_words(d->subcategory_names, d->n_subcategories);
    free_words(d->brand_names, d->n_brands);
    free_words(d->category_words, SYNTH_LEVEL_WORDS * (int64_t)d->p.categories);
    free_words(d->subcategory_words, SYNTH_LEVEL_WORDS * d->n_subcategories);
    free_words(d->noise_pool, SYNTH_NOISE_POOL);
    free_words(d->item_title, d->item_title ? d->p.items : 0);
    free(d->subcategory_price);
    free(d->item_subcategory); free(d->item_brand); free(d->item_pop_rank); free(d->item_popularity);
    free(d->link_offsets); free(d->links); free(d->item_price);
    free(d->user_offsets); free(d->user_items);
    memset(d, 0, sizeof *d);
}

SynthPairStats synth_pair_stats(const SynthData *d) {
    SynthPairStats st = {0};
    int64_t *per_sub = xcalloc((size_t)d->n_subcategories, sizeof(int64_t));
    for (int64_t k = 0; k < d->n_interactions; k++) per_sub[d->item_subcategory[d->user_items[k]]]++;
    for (int64_t g = 0; g < d->n_subcategories; g++) {
        double share = (double)per_sub[g] / (double)d->n_interactions;
        st.chance_subcategory += share * share;
    }
    free(per_sub);
    for (int64_t u = 0; u < d->p.users; u++)
        for (int64_t k = d->user_offsets[u] + 1; k < d->user_offsets[u + 1]; k++) {
            int32_t a = d->user_items[k - 1], b = d->user_items[k];
            st.pairs++;
            st.same_subcategory += d->item_subcategory[a] == d->item_subcategory[b];
            st.same_category += synth_item_category(d, a) == synth_item_category(d, b);
            for (int64_t m = d->link_offsets[a]; m < d->link_offsets[a + 1]; m++)
                if (d->links[m] == b) { st.linked++; break; }
        }
    return st;
}

/* ---- JSON ---- */

#define SYNTH_JSON_FLAGS (JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10))

/* A price as Python prints it (12.0, 3.04), like the Amazon files. */
static void format_price(double price, char *out, size_t n) {
    snprintf(out, n, "%.10g", price);
    if (!strpbrk(out, ".e")) strncat(out, ".0", n - strlen(out) - 1);
}

static json_t *string_array(char *const *s, int64_t n) {
    json_t *a = json_array();
    for (int64_t i = 0; i < n; i++) json_array_append_new(a, json_string(s[i]));
    return a;
}

static json_t *int_array(const int32_t *v, int64_t n, int add) {
    json_t *a = json_array();
    for (int64_t i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i] + add));
    return a;
}

/* n groups of `per` strings */
static json_t *grouped_strings(char *const *s, int64_t n, int per) {
    json_t *a = json_array();
    for (int64_t i = 0; i < n; i++) json_array_append_new(a, string_array(s + i * per, per));
    return a;
}

json_t *synth_item_json(const SynthData *d, int64_t i) {
    int64_t g = d->item_subcategory[i], c = synth_item_category(d, i);
    const char *brand = d->brand_names[d->item_brand[i]], *cat = d->category_names[c], *sub = d->subcategory_names[g];
    char price[64], asin[32];
    format_price(d->item_price[i], price, sizeof price);
    snprintf(asin, sizeof asin, "SYN%07lld", (long long)i + 1);
    char *text = xsprintf("Title: %s; Brand: %s; Categories: Synth, %s, %s; Price: %s", d->item_title[i], brand, cat,
                          sub, price);
    json_t *o = json_object();
    json_object_set_new(o, "item_id", json_integer(i + 1));
    json_object_set_new(o, "asin", json_string(asin));
    json_object_set_new(o, "title", json_string(d->item_title[i]));
    json_object_set_new(o, "brand", json_string(brand));
    json_t *cats = json_array();
    json_array_append_new(cats, json_string("Synth"));
    json_array_append_new(cats, json_string(cat));
    json_array_append_new(cats, json_string(sub));
    json_object_set_new(o, "categories", cats);
    json_object_set_new(o, "price", json_real(d->item_price[i]));
    json_object_set_new(o, "text", json_string(text));
    free(text);
    return o;
}

json_t *synth_truth_json(const SynthData *d) {
    const SynthParams *p = &d->p;
    int64_t V = p->items, L = d->n_subcategories, C = p->categories;
    double wsum = p->w_drift + p->w_link + p->w_popularity;
    json_t *t = json_object(), *par = json_object(), *w = json_object();
    json_object_set_new(t, "generator", json_string("car_synth"));
    json_object_set_new(t, "doc", json_string(
        "Indices: categories, subcategories (global, category = subcategory / subcategories) and brands "
        "(global, subcategory = brand / brands) are 0-based; item_* arrays are indexed by item_id - 1; "
        "item_links and sequences hold 1-based item ids. Popularity of rank r is (r+1)^-zipf, rank 0 most popular."));
    json_object_set_new(par, "users", json_integer(p->users));
    json_object_set_new(par, "items", json_integer(V));
    json_object_set_new(par, "categories", json_integer(C));
    json_object_set_new(par, "subcategories", json_integer(p->subcategories));
    json_object_set_new(par, "brands", json_integer(p->brands));
    json_object_set_new(par, "min_len", json_integer(p->min_len));
    json_object_set_new(par, "max_len", json_integer(p->max_len));
    json_object_set_new(w, "drift", json_real(p->w_drift / wsum));
    json_object_set_new(w, "link", json_real(p->w_link / wsum));
    json_object_set_new(w, "popularity", json_real(p->w_popularity / wsum));
    json_object_set_new(par, "weights", w);
    json_object_set_new(par, "drift_category", json_real(p->drift_category));
    json_object_set_new(par, "max_links", json_integer(p->max_links));
    json_object_set_new(par, "zipf", json_real(p->zipf));
    json_object_set_new(par, "noise_words", json_integer(p->noise_words));
    json_object_set_new(par, "noise_pool", json_integer(SYNTH_NOISE_POOL));
    json_object_set_new(par, "level_words", json_integer(SYNTH_LEVEL_WORDS));
    json_object_set_new(par, "seed", json_integer((json_int_t)p->seed));
    json_object_set_new(t, "params", par);

    json_object_set_new(t, "category_names", string_array(d->category_names, C));
    json_object_set_new(t, "category_words", grouped_strings(d->category_words, C, SYNTH_LEVEL_WORDS));
    json_object_set_new(t, "subcategory_names", string_array(d->subcategory_names, L));
    json_object_set_new(t, "subcategory_words", grouped_strings(d->subcategory_words, L, SYNTH_LEVEL_WORDS));
    json_object_set_new(t, "brand_names", string_array(d->brand_names, d->n_brands));
    json_object_set_new(t, "noise_words", string_array(d->noise_pool, SYNTH_NOISE_POOL));
    json_t *cat = json_array(), *links = json_array();
    for (int64_t i = 0; i < V; i++) {
        json_array_append_new(cat, json_integer(synth_item_category(d, i)));
        json_t *l = json_array();
        for (int64_t k = d->link_offsets[i]; k < d->link_offsets[i + 1]; k++)
            json_array_append_new(l, json_integer(d->links[k] + 1));
        json_array_append_new(links, l);
    }
    json_object_set_new(t, "item_category", cat);
    json_object_set_new(t, "item_subcategory", int_array(d->item_subcategory, V, 0));
    json_object_set_new(t, "item_brand", int_array(d->item_brand, V, 0));
    json_object_set_new(t, "item_popularity_rank", int_array(d->item_pop_rank, V, 0));
    json_object_set_new(t, "item_links", links);

    SynthPairStats ps = synth_pair_stats(d);
    json_t *st = json_object(), *steps = json_object();
    json_object_set_new(st, "interactions", json_integer(d->n_interactions));
    json_object_set_new(st, "mean_length", json_real((double)d->n_interactions / (double)p->users));
    for (int k = 0; k < SYNTH_STEP_KINDS; k++) json_object_set_new(steps, synth_step_names[k], json_integer(d->steps[k]));
    json_object_set_new(st, "steps", steps);
    json_object_set_new(st, "pairs", json_integer(ps.pairs));
    json_object_set_new(st, "same_subcategory", json_integer(ps.same_subcategory));
    json_object_set_new(st, "same_category", json_integer(ps.same_category));
    json_object_set_new(st, "linked", json_integer(ps.linked));
    json_object_set_new(st, "chance_same_subcategory", json_real(ps.chance_subcategory));
    json_object_set_new(t, "stats", st);
    return t;
}

/* ---- writers ---- */

static int finish_write(FILE *f) {
    if (fflush(f) != 0 || ferror(f)) { if (!errno) errno = EIO; return -1; }
    return 0;
}

int synth_write_sequences(const SynthData *d, FILE *f) {
    for (int64_t u = 0; u < d->p.users; u++) {
        fprintf(f, "%lld", (long long)u + 1);
        for (int64_t k = d->user_offsets[u]; k < d->user_offsets[u + 1]; k++) fprintf(f, " %d", d->user_items[k] + 1);
        fputc('\n', f);
    }
    return finish_write(f);
}

int synth_write_items(const SynthData *d, FILE *f) {
    for (int64_t i = 0; i < d->p.items; i++) {
        json_t *o = synth_item_json(d, i);
        char *line = json_dumps(o, SYNTH_JSON_FLAGS);
        json_decref(o);
        if (!line) { errno = ENOMEM; return -1; }
        fputs(line, f);
        fputc('\n', f);
        free(line);
    }
    return finish_write(f);
}

int synth_write_truth(const SynthData *d, FILE *f) {
    json_t *t = synth_truth_json(d);
    int rc = json_dumpf(t, f, SYNTH_JSON_FLAGS);
    json_decref(t);
    if (rc != 0) { if (!errno) errno = EIO; return -1; }
    fputc('\n', f);
    return finish_write(f);
}
