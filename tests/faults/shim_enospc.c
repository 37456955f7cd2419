/* shim_enospc.so: a disk that fills up while one named file is written, for the fault tests
 * (LD_PRELOAD; not a test). Once CAR_FAULT_ENOSPC_BYTES (default 0) bytes have gone to files
 * whose path contains CAR_FAULT_ENOSPC_PATH, every further write to them fails with ENOSPC,
 * as a full disk would answer. Other files are untouched.
 *
 * Why a shim and not the alternatives: it fails exactly the file under test after a chosen
 * number of bytes (a tmpfs filled to the brim fails whichever write comes first, e.g. the
 * run's config.cfg at startup, and mounting needs privileges CI rarely has); prlimit --fsize
 * answers with SIGXFSZ or EFBIG, not ENOSPC, and hits every file over the limit, Open MPI's
 * shared-memory segments included. Interposed: the POSIX writes (HDF5 writes through Open MPI's
 * MPI-IO, which calls pwrite/pwritev) and fopen (stdio writes through libc-internal calls that
 * no preload sees, so a matching FILE is wrapped in a failing fopencookie stream). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static long long budget_left(void) { /* bytes that may still go to matching files */
    static long long left = -2;
    if (left == -2) left = getenv("CAR_FAULT_ENOSPC_BYTES") ? atoll(getenv("CAR_FAULT_ENOSPC_BYTES")) : 0;
    return left;
}

static int matches_path(const char *path) {
    const char *want = getenv("CAR_FAULT_ENOSPC_PATH");
    return want && *want && path && strstr(path, want);
}

static int matches_fd(int fd) {
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return 0;
    path[n] = 0;
    return matches_path(path);
}

/* How many of n bytes may be written (taking them from the budget); -1 with ENOSPC if none. */
static ssize_t allow(size_t n) {
    static long long used;
    long long left = budget_left() - used;
    if (left <= 0 && n > 0) { errno = ENOSPC; return -1; }
    size_t k = (long long)n < left ? n : (size_t)left;
    used += (long long)k;
    return (ssize_t)k;
}

#define REAL(name, ret, ...) static ret (*real)(__VA_ARGS__); if (!real) real = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, name)

ssize_t write(int fd, const void *buf, size_t n) {
    REAL("write", ssize_t, int, const void *, size_t);
    ssize_t k = matches_fd(fd) ? allow(n) : (ssize_t)n;
    return k < 0 ? -1 : real(fd, buf, (size_t)k);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL("pwrite", ssize_t, int, const void *, size_t, off_t);
    ssize_t k = matches_fd(fd) ? allow(n) : (ssize_t)n;
    return k < 0 ? -1 : real(fd, buf, (size_t)k, off);
}
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) { return pwrite(fd, buf, n, off); }

/* a vector write: all of it or ENOSPC (a short vector write is rare enough not to model) */
static int vector_ok(int fd, const struct iovec *iov, int cnt) {
    size_t n = 0;
    for (int i = 0; i < cnt; i++) n += iov[i].iov_len;
    if (!matches_fd(fd) || (size_t)allow(n) == n) return 1;
    errno = ENOSPC;
    return 0;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    REAL("writev", ssize_t, int, const struct iovec *, int);
    return vector_ok(fd, iov, cnt) ? real(fd, iov, cnt) : -1;
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    REAL("pwritev", ssize_t, int, const struct iovec *, int, off_t);
    return vector_ok(fd, iov, cnt) ? real(fd, iov, cnt, off) : -1;
}
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off) { return pwritev(fd, iov, cnt, off); }

/* glibc does not call a cookie again after a short write (as it calls write(2) again, which then
 * fails with ENOSPC): what does not fit is an ENOSPC failure here */
static ssize_t cookie_write(void *c, const char *buf, size_t n) {
    ssize_t k = allow(n);
    if (k > 0) fwrite(buf, 1, (size_t)k, c);
    if (k == (ssize_t)n) return k;
    errno = ENOSPC;
    return -1;
}
static int cookie_close(void *c) { return fclose(c); }

FILE *fopen(const char *path, const char *mode) {
    REAL("fopen", FILE *, const char *, const char *);
    FILE *f = real(path, mode);
    if (!f || !matches_path(path) || !strpbrk(mode, "wa+")) return f;
    setvbuf(f, NULL, _IONBF, 0);
    return fopencookie(f, mode, (cookie_io_functions_t){.write = cookie_write, .close = cookie_close});
}
FILE *fopen64(const char *path, const char *mode) { return fopen(path, mode); }
