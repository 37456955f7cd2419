/* kill_on_create DIR SUFFIX PID [SECONDS]: a helper of the fault tests, not a test. Sends
 * SIGKILL to PID the moment a file whose name ends in SUFFIX appears in DIR (inotify: polling
 * would miss a checkpoint written in milliseconds), prints the name and exits 0; exits 1 if
 * none appears within SECONDS (default 120). DIR may not exist yet. */
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* a matching name already in dir (created before the watch), or NULL */
static const char *existing(const char *dir, const char *suffix, char *buf, size_t n) {
    DIR *d = opendir(dir);
    const char *found = NULL;
    for (struct dirent *e; d && !found && (e = readdir(d));)
        if (ends_with(e->d_name, suffix)) found = strncpy(buf, e->d_name, n - 1);
    if (d) closedir(d);
    return found;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: kill_on_create DIR SUFFIX PID [SECONDS]\n"); return 2; }
    const char *dir = argv[1], *suffix = argv[2];
    pid_t pid = (pid_t)atol(argv[3]);
    time_t until = time(NULL) + (argc > 4 ? atol(argv[4]) : 120);
    int fd = inotify_init1(IN_NONBLOCK), wd = -1;
    char name[4096] = "";
    const char *hit = NULL;
    while (!hit && time(NULL) < until) {
        if (wd < 0 && (wd = inotify_add_watch(fd, dir, IN_CREATE | IN_MOVED_TO)) >= 0) hit = existing(dir, suffix, name, sizeof name);
        struct pollfd p = {fd, POLLIN, 0};
        if (wd < 0 || hit || poll(&p, 1, 100) <= 0) { if (wd < 0) usleep(10000); continue; }
        char buf[8192] __attribute__((aligned(8)));
        ssize_t n = read(fd, buf, sizeof buf);
        for (char *q = buf; n > 0 && q < buf + n && !hit;) {
            struct inotify_event *e = (struct inotify_event *)q;
            if (e->len && ends_with(e->name, suffix)) hit = strncpy(name, e->name, sizeof name - 1);
            q += sizeof *e + e->len;
        }
    }
    if (!hit) return 1;
    kill(pid, SIGKILL);
    printf("%s\n", name);
    return 0;
}
