/* Fuzz target: the run configuration (car_train CONFIG -o section.key=value ...).
 * Input: the config file's text, then up to 8 overrides, separated by NUL bytes. Any input
 * either gives a configuration or an error message; a configuration must print as text that
 * loads back to the same configuration (run.dir/config.cfg and checkpoints rely on it). */
#include "config.h"
#include "fuzz_file.h"
#include <string.h>

enum { MAX_OVERRIDES = 8 };

/* The configuration printed by config_to_string must parse to itself. */
static void check_round_trip(const CarConfig *cfg, FuzzFile *again) {
    char *text = config_to_string(cfg);
    CarConfig back;
    char *err = config_parse(&back, fuzz_file_set(again, (const uint8_t *)text, strlen(text)), 0, NULL);
    if (err) fprintf(stderr, "printed configuration does not load: %s\n%s", err, text);
    FUZZ_ASSERT(err == NULL);
    char *text_back = config_to_string(&back);
    FUZZ_ASSERT(strcmp(text, text_back) == 0);
    free(text_back);
    config_free(&back);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static FuzzFile file, again;
    char *copy = malloc(size + 1), *overrides[MAX_OVERRIDES];
    memcpy(copy, data, size);
    copy[size] = 0;
    size_t file_len = strlen(copy);
    int n = 0;
    for (size_t at = file_len + 1; at <= size && n < MAX_OVERRIDES; at += strlen(copy + at) + 1) overrides[n++] = copy + at;
    CarConfig cfg;
    char *err = config_parse(&cfg, fuzz_file_set(&file, data, file_len), n, overrides);
    if (!err) check_round_trip(&cfg, &again);
    free(err);
    config_free(&cfg);
    free(copy);
    return 0;
}
