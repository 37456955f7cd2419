#include "runlock.h"
#include "comm.h"
#include "util.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int lock_fd = -1; /* kept open: closing any descriptor of the file would drop the lock */

/* The holder's "host pid" line, or "unknown" */
static char *holder_of(int fd) {
    char buf[256] = "";
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return xstrdup("an unknown process");
    buf[n] = 0;
    buf[strcspn(buf, "\n")] = 0;
    char host[200] = "?";
    long pid = 0;
    if (sscanf(buf, "%199s %ld", host, &pid) == 2) return xsprintf("host %s, pid %ld", host, pid);
    return xsprintf("'%s'", buf);
}

char *runlock_try(const char *run_dir) {
    if (lock_fd >= 0) return NULL; /* this process holds it already */
    char *path = xsprintf("%s/.lock", run_dir), *err = NULL;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        err = xsprintf("%s: cannot open the run lock: %s", path, strerror(errno));
        free(path);
        return err;
    }
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    int rc;
    while ((rc = fcntl(fd, F_SETLK, &fl)) != 0 && errno == EINTR) {}
    if (rc != 0) {
        if (errno == EACCES || errno == EAGAIN) {
            char *who = holder_of(fd);
            err = xsprintf("run.dir '%s' is in use by another car_train (%s; lock %s): wait for it to end or choose "
                           "another run.dir",
                           run_dir, who, path);
            free(who);
        } else {
            err = xsprintf("%s: cannot lock: %s", path, strerror(errno));
        }
        close(fd);
        free(path);
        return err;
    }
    char host[128] = "unknown";
    gethostname(host, sizeof host - 1);
    char *line = xsprintf("%s %ld\n", host, (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, line, strlen(line), 0) != (ssize_t)strlen(line))
        err = xsprintf("%s: cannot write the run lock: %s", path, strerror(errno));
    free(line);
    free(path);
    if (err) close(fd);
    else lock_fd = fd;
    return err;
}

void runlock_acquire(const char *run_dir) {
    char *err = comm_rank() == 0 ? runlock_try(run_dir) : NULL;
    comm_fail_if_any(err);
    free(err);
}
