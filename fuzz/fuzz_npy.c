/* Fuzz target: the .npy embedding importer (car_prep --embeddings FILE.npy): the header
 * parser and the row reader. The file's own row count is taken as the number of items (so
 * the data path is reached), a row range [lo, hi) is drawn from the last byte. */
#include "fuzz_file.h"
#include "text.h"
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static FuzzFile file;
    const char *path = fuzz_file_set(&file, data, size);
    NpyHeader h;
    char *err = text_npy_parse_header(data, size, (int64_t)size, &h);
    int64_t n_items = err ? 1 : h.rows, lo = 0, hi = n_items;
    if (!err && size > 0 && n_items > 0) { /* a rank's block: any contiguous part */
        lo = data[size - 1] % (n_items + 1);
        hi = lo + (data[size - 1] / 16) % (n_items - lo + 1);
    }
    free(err);
    int dim = 0;
    float *rows = NULL;
    err = text_npy_read_rows(path, n_items, lo, hi, &dim, &rows);
    if (err) {
        FUZZ_ASSERT(strstr(err, path) == err && !strchr(err, '\n') && rows == NULL);
        free(err);
        return 0;
    }
    FUZZ_ASSERT(dim == h.cols && dim >= 1);
    volatile float sum = 0; /* every value read is initialised and in bounds (ASan/MSan see it) */
    for (int64_t i = 0; i < (hi - lo) * dim; i++) sum += rows[i];
    (void)sum;
    free(rows);
    return 0;
}
