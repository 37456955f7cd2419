/* Fuzz target: the items.jsonl reader (car_prep --items). Any bytes either give a complete
 * table (every id 1..n with a non-blank text) or one error line naming the file. */
#include "fuzz_file.h"
#include "input.h"
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static FuzzFile file;
    const char *path = fuzz_file_set(&file, data, size);
    ItemTable t;
    char *err = input_read_items(path, &t);
    if (err) {
        FUZZ_ASSERT(strstr(err, path) == err && !strchr(err, '\n'));
        free(err);
        return 0;
    }
    FUZZ_ASSERT(t.n_items > 0);
    for (int64_t i = 0; i < t.n_items; i++) FUZZ_ASSERT(t.texts[i] && strspn(t.texts[i], " \t\r\n") < strlen(t.texts[i]));
    item_table_free(&t);
    return 0;
}
