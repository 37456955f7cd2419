#include "util.h"
#include "comm.h"
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

int write_file_atomic(const char *path, const char *text) {
    char *tmp = xsprintf("%s.partial", path);
    FILE *f = fopen(tmp, "w");
    int ok = f && fputs(text, f) >= 0;
    if (f) ok = (fclose(f) == 0) && ok;
    ok = ok && rename(tmp, path) == 0;
    if (!ok) unlink(tmp);
    free(tmp);
    return ok ? 0 : -1;
}
