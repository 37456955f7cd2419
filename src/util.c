#include "util.h"
#include "comm.h"
#include "rng.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) comm_fatal("out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc(size_t count, size_t n) {
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (!p) comm_fatal("out of memory allocating %zu x %zu bytes", count, n);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) comm_fatal("out of memory reallocating %zu bytes", n);
    return q;
}

void *xgrow(void *p_, size_t *cap, size_t need, size_t elem) {
    void **p = p_;
    if (need > *cap || !*p) {
        free(*p);
        *cap = need > *cap ? need : *cap;
        *p = xmalloc((*cap ? *cap : 1) * elem);
    }
    return *p;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

char *xsprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

char *command_line(const char *program, int argc, char **argv) {
    char *line = xstrdup(program);
    for (int i = 1; i < argc; i++) {
        char *longer = xsprintf("%s %s", line, argv[i]);
        free(line);
        line = longer;
    }
    return line;
}

int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int64_t peak_rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    int64_t kib = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) { kib = strtoll(line + 6, NULL, 10); break; }
    fclose(f);
    return kib;
}

uint64_t fnv1a64(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ULL; }
    return h;
}

uint64_t hash_row(int64_t g, const void *row, size_t bytes) {
    const unsigned char *x = row;
    const uint64_t k = 0x9e3779b97f4a7c15ULL;
    uint64_t h[4] = {rng_mix((uint64_t)g), k, 2 * k, 3 * k}, w;
    size_t i = 0;
    for (; i + 32 <= bytes; i += 32)
        for (int j = 0; j < 4; j++) {
            memcpy(&w, x + i + 8 * j, sizeof w);
            h[j] = (h[j] ^ w) * k;
            h[j] ^= h[j] >> 32;
        }
    for (; i < bytes; i += 4) { /* 4-byte words (float rows, as checkpoints always had), then bytes */
        uint32_t u = 0;
        memcpy(&u, x + i, bytes - i < 4 ? bytes - i : 4);
        h[0] = (h[0] ^ u) * k;
        h[0] ^= h[0] >> 32;
    }
    return rng_mix(h[0] ^ rng_mix(h[1] ^ rng_mix(h[2] ^ rng_mix(h[3] ^ (uint64_t)(bytes / 4)))));
}

uint64_t hash_rows(const void *data, int64_t g0, int64_t count, size_t row_bytes) {
    uint64_t sum = 0;
    for (int64_t r = 0; r < count; r++) sum += hash_row(g0 + r, (const char *)data + (size_t)r * row_bytes, row_bytes);
    return sum;
}

int make_dirs(const char *path) {
    char *p = xstrdup(path);
    int rc = 0;
    for (char *s = p + 1; ; s++) {
        char c = *s;
        if (c == '/' || c == 0) {
            *s = 0;
            struct stat st;
            if (mkdir(p, 0777) != 0 && (errno != EEXIST || stat(p, &st) != 0 || !S_ISDIR(st.st_mode))) {
                if (errno == EEXIST) errno = ENOTDIR;
                rc = -1;
                break;
            }
            *s = c;
        }
        if (!c) break;
    }
    free(p);
    return rc;
}

static int errno_or_eio(void) { return errno ? errno : EIO; } /* a stream may fail without setting errno */

int write_file_atomic(const char *path, const char *text) {
    char *tmp = xsprintf("%s.partial", path);
    int why = 0; /* errno of the first failure: the calls after it, cleanup included, may change errno */
    FILE *f = fopen(tmp, "w");
    if (!f) why = errno_or_eio();
    errno = 0;
    if (f && fputs(text, f) < 0) why = errno_or_eio();
    /* flushed and synced before the rename: a full disk shows here, and a crash never leaves an
     * empty file under the final name (signal handlers use SA_RESTART, so no EINTR) */
    if (f && !why && (fflush(f) != 0 || fsync(fileno(f)) != 0)) why = errno_or_eio();
    if (f && fclose(f) != 0 && !why) why = errno_or_eio();
    if (!why && rename(tmp, path) != 0) why = errno_or_eio();
    if (why) unlink(tmp);
    free(tmp);
    errno = why;
    return why ? -1 : 0;
}
