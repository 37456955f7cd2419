/* fuzz_file: the one thing every harness needs, the fuzz input as a file. The readers take a
 * path (as car_prep and car_train do), so each input is written to an in-memory file (memfd)
 * and read back through /proc/self/fd/N: no disk I/O, nothing left behind. */
#ifndef CAR_FUZZ_FILE_H
#define CAR_FUZZ_FILE_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct { int fd; char path[64]; } FuzzFile;

/* The file f (created on first use) now holds exactly data[0..n). Returns its path. */
static const char *fuzz_file_set(FuzzFile *f, const uint8_t *data, size_t n) {
    if (f->fd <= 0) {
        f->fd = memfd_create("car-fuzz", 0);
        if (f->fd < 0) { perror("memfd_create"); abort(); }
        snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
    }
    if (ftruncate(f->fd, 0) != 0 || (n && pwrite(f->fd, data, n, 0) != (ssize_t)n)) { perror("memfd write"); abort(); }
    return f->path;
}

/* An oracle violated: the input is a finding even though nothing crashed. */
#define FUZZ_ASSERT(cond)                                                              \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                   \
        }                                                                              \
    } while (0)

#endif
