#include "log.h"
#include "comm.h"
#include <stdarg.h>
#include <stdio.h>

void log_info(const char *fmt, ...) {
    if (comm_rank() != 0) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

void log_warn(const char *fmt, ...) {
    if (comm_rank() != 0) return;
    fprintf(stderr, "%s: warning: ", comm_program());
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void format_seconds(double s, char *out, size_t n) {
    if (s < 0 || s > 1e7) { snprintf(out, n, "?"); return; }
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(out, n, "%dh%02dm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(out, n, "%dm%02ds", t / 60, t % 60);
    else snprintf(out, n, "%ds", t);
}

void progress_start(Progress *p, const char *label, const char *unit, int64_t total) {
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->done = 0;
    p->start = p->last_print = comm_wtime();
}

static void progress_print(Progress *p, double now) {
    double dt = now - p->start, rate = dt > 0 ? (double)p->done / dt : 0;
    char eta[32], el[32];
    format_seconds(rate > 0 ? (double)(p->total - p->done) / rate : -1, eta, sizeof eta);
    format_seconds(dt, el, sizeof el);
    log_info("%s: %lld/%lld %s (%.0f%%), %.1f %s/s, elapsed %s, left %s", p->label, (long long)p->done,
             (long long)p->total, p->unit, p->total ? 100.0 * (double)p->done / (double)p->total : 100.0, rate,
             p->unit, el, eta);
}

void progress_update(Progress *p, int64_t done) {
    p->done = done;
    double now = comm_wtime();
    if (now - p->last_print < 1.0) return;
    p->last_print = now;
    progress_print(p, now);
}

void progress_end(Progress *p) {
    p->done = p->total;
    progress_print(p, comm_wtime());
}
