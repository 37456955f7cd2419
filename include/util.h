/* util: allocation that cannot return NULL, small string and file helpers. */
#ifndef CAR_UTIL_H
#define CAR_UTIL_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

void *xmalloc(size_t n);              /* aborts the job on failure */
void *xcalloc(size_t count, size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* Grows *p (capacity *cap elements of elem bytes, contents not kept) to hold need; returns *p. */
void *xgrow(void *p_, size_t *cap, size_t need, size_t elem);
char *xsprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "program argv[1] argv[2] ...": the command line a run or a file records (allocated) */
char *command_line(const char *program, int argc, char **argv);

int file_exists(const char *path);
/* mkdir -p; returns 0 on success, -1 with errno set. */
int make_dirs(const char *path);
/* Writes TEXT to PATH through PATH.partial and a rename; returns 0 on success, -1 with errno set. */
int write_file_atomic(const char *path, const char *text);
int64_t peak_rss_kib(void);           /* this process's peak resident set (VmHWM) */
/* FNV-1a 64 over bytes, chained through h (start with FNV64_INIT). */
#define FNV64_INIT 0xcbf29ce484222325ULL
uint64_t fnv1a64(uint64_t h, const void *data, size_t n);
/* Hash of one row of BYTES bytes with its global index g (four multiply-xorshift lanes over 8-byte
 * words: ~10x faster than byte-wise FNV). Summed over rows it is a checksum of an array that does
 * not depend on which ranks hold which rows. */
uint64_t hash_row(int64_t g, const void *row, size_t bytes);
/* Sum of hash_row over rows [g0, g0 + count) of row_bytes each, held at data. */
uint64_t hash_rows(const void *data, int64_t g0, int64_t count, size_t row_bytes);

#endif
