/* Fuzz target: the items.jsonl reader (car_prep --items, with --fields title,categories,price).
 * Any bytes either give a complete table (every id 1..n with a non-blank text; a field is
 * NULL or non-blank text) or one error line naming the file. */
#include "fuzz_file.h"
#include "input.h"
#include <string.h>

static int blank(const char *s) { return strspn(s, " \t\r\n") == strlen(s); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static FuzzFile file;
    static const char *const names[] = {"title", "categories", "price"}; /* a string, an array, a number */
    const char *path = fuzz_file_set(&file, data, size);
    ItemTable t;
    char *err = input_read_items_fields(path, names, 3, &t);
    if (err) {
        FUZZ_ASSERT(strstr(err, path) == err && !strchr(err, '\n'));
        free(err);
        return 0;
    }
    FUZZ_ASSERT(t.n_items > 0 && t.n_fields == 3);
    for (int64_t i = 0; i < t.n_items; i++) {
        FUZZ_ASSERT(t.texts[i] && !blank(t.texts[i]));
        for (int f = 0; f < 3; f++) FUZZ_ASSERT(!t.fields[i * 3 + f] || !blank(t.fields[i * 3 + f]));
    }
    item_table_free(&t);
    return 0;
}
