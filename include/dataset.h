/* dataset: the project's dataset file (DESIGN.md section 5).
 *   /users/offsets (U+1 int64), /users/items (int32, 0-based item ids, chronological, CSR),
 *   /users/ids (U int64, the ids of the input file), /items/text (V strings),
 *   /items/embedding (V x D float32), provenance attributes on "/".
 * Each rank reads only its own users or items (hyperslabs). */
#ifndef CAR_DATASET_H
#define CAR_DATASET_H
#include <hdf5.h>
#include <stdint.h>

typedef struct {
    hid_t file;
    char *path;
    int64_t n_users, n_items, n_interactions;
    int dim; /* embedding width */
} Dataset;

/* A contiguous range of users: user u (global) has items[offsets[u-lo] .. offsets[u-lo+1]). */
typedef struct {
    int64_t lo, hi;
    int64_t *offsets; /* hi-lo+1, starting at 0 */
    int32_t *items;
} UserSlice;

/* Collective. Opens and checks the structure (shapes agree); fails the job naming the file. */
void dataset_open(Dataset *ds, const char *path);
void dataset_close(Dataset *ds);
/* Collective. Reads users [lo, hi) and checks every item id is in range. */
void dataset_read_users(const Dataset *ds, int64_t lo, int64_t hi, UserSlice *out);
/* Collective. This rank's share of users (comm_split_range). */
void dataset_read_my_users(const Dataset *ds, UserSlice *out);
/* Collective. Rows [lo, hi) of /items/embedding into out ((hi-lo) x dim). */
void dataset_read_embeddings(const Dataset *ds, int64_t lo, int64_t hi, float *out);
void user_slice_free(UserSlice *s);

/* Leave-one-out (DESIGN.md section 2). For a chronological sequence seq[0..n):
 *   SPLIT_TEST:  target seq[n-1], history = the up to max_history items before it;
 *   SPLIT_VALID: target seq[n-2], history = the up to max_history items before it;
 *   SPLIT_TRAIN: no single target; the training part seq[0..n-2) cut to its last
 *                max_history+1 items (each item is the target of the ones before it).
 * Returns 0 when the user has nothing for that split (too short). */
typedef enum { SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST } Split;
/* 1 if a sequence of n items has something for split (its length is all that matters). */
int dataset_split_exists(int64_t n, Split split);
int dataset_split(const int32_t *seq, int64_t n, Split split, int max_history, const int32_t **hist, int64_t *hist_len,
                  int32_t *target);
/* The hist_len dataset_split gives a sequence of n items (0 when it has nothing for split): every
 * rank knows every user's from /users/offsets alone, without the items. */
int64_t dataset_split_len(int64_t n, Split split, int max_history);

/* What car_prep writes. Collective: every rank holds offsets/items/user_ids in full and
 * rows [item_lo, item_hi) of the embedding; rank 0 holds the texts. */
typedef struct {
    int64_t n_users, n_items;
    const int64_t *offsets, *user_ids;
    const int32_t *items;
    int dim;
    int64_t item_lo, item_hi;
    const float *embedding;
    char *const *texts;
    int n_attrs;
    const char *const *attr_keys, *const *attr_values; /* provenance strings */
} DatasetContent;

/* Writes PATH atomically (temporary name, then rename): a failed run leaves no PATH. */
void dataset_write(const char *path, const DatasetContent *c);

#endif
