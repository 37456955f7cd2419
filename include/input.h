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
    int n_fields;    /* fields read besides text (input_read_items_fields), else 0 */
    char **fields;   /* fields[(id - 1) * n_fields + f]: field f as text, NULL when null or absent */
} ItemTable;

typedef struct {
    int64_t n_users, n_interactions;
    int64_t *user_ids; /* as in the file */
    int64_t *offsets;  /* n_users + 1 */
    int32_t *items;    /* 0-based item ids */
} Sequences;

/* Returns NULL on success or an allocated one-line error. */
char *input_read_items(const char *path, ItemTable *out);
/* input_read_items, and the named JSON fields of every record as text: a string as it is,
 * arrays joined with ", " (nested arrays flattened), a positive number as its price band
 * "price band N" (N = floor(log2 value): similar prices share a term), null or absent NULL. */
char *input_read_items_fields(const char *path, const char *const *names, int n_names, ItemTable *out);
char *input_read_sequences(const char *path, int64_t n_items, const char *items_path, Sequences *out);
void item_table_free(ItemTable *t);
void sequences_free(Sequences *s);

#endif
