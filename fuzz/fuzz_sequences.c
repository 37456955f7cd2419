/* Fuzz target: the sequences reader (car_prep --sequences). Any bytes either parse into
 * consistent sequences or give one error line; never a crash, a leak or an overflow. */
#include "fuzz_file.h"
#include "input.h"
#include <string.h>

enum { N_ITEMS = 1000 }; /* ids 1..1000 are valid: the fuzzer meets both sides of the range */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static FuzzFile file;
    const char *path = fuzz_file_set(&file, data, size);
    Sequences s;
    char *err = input_read_sequences(path, N_ITEMS, "items.jsonl", &s);
    if (err) {
        FUZZ_ASSERT(strstr(err, path) == err && !strchr(err, '\n')); /* one line naming the file */
        free(err);
        return 0;
    }
    FUZZ_ASSERT(s.n_users > 0 && s.offsets[0] == 0 && s.offsets[s.n_users] == s.n_interactions);
    for (int64_t u = 0; u < s.n_users; u++) FUZZ_ASSERT(s.offsets[u + 1] > s.offsets[u]);
    for (int64_t i = 0; i < s.n_interactions; i++) FUZZ_ASSERT(s.items[i] >= 0 && s.items[i] < N_ITEMS);
    sequences_free(&s);
    return 0;
}
