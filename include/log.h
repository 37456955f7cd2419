/* log: rank 0 prints; progress of long stages with rate and time left. */
#ifndef CAR_LOG_H
#define CAR_LOG_H
#include <stdint.h>

void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

typedef struct {
    const char *label, *unit;
    int64_t total, done;
    double start, last_print;
} Progress;

void progress_start(Progress *p, const char *label, const char *unit, int64_t total);
/* Prints at most once a second: "label: done/total unit (pct), rate unit/s, ETA". */
void progress_update(Progress *p, int64_t done);
void progress_end(Progress *p);

#endif
