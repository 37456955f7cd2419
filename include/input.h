/* input: the raw inputs car_prep reads. Sequences (`user item item ...`, 1-based ids) and
 * items (JSON lines with item_id and text). Readers return an error message naming the file
 * and line instead of exiting, so they can be tested. */
#ifndef CAR_INPUT_H
#define CAR_INPUT_H
#include <stdint.h>

typedef struct {
    int64_t n_items; /* ids 1..n_items, every one with a record */
    char **texts;    /* texts[id - 1] */
    char **leaf;     /* last element of "categories" (or NULL), for quality checks */
} ItemTable;

typedef struct {
    int64_t n_users, n_interactions;
    int64_t *user_ids; /* as in the file */
    int64_t *offsets;  /* n_users + 1 */
    int32_t *items;    /* 0-based item ids */
} Sequences;

/* Returns NULL on success or an allocated one-line error. */
char *input_read_items(const char *path, ItemTable *out);
char *input_read_sequences(const char *path, int64_t n_items, const char *items_path, Sequences *out);
void item_table_free(ItemTable *t);
void sequences_free(Sequences *s);

#endif
