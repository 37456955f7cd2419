#include "metrics.h"
#include "comm.h"
#include <math.h>

int64_t metrics_count_above(const float *scores, int64_t n, float target_score, int64_t target_index,
                            const uint8_t *skip) {
    /* a diverged model must not score hits: a non-finite target is a miss (every item above it) */
    if (!isfinite(target_score)) return n;
    int64_t above = 0;
    for (int64_t i = 0; i < n; i++) {
        if (skip && skip[i]) continue;
        /* written so that NaN and -inf scores of other items count against the target */
        int below = scores[i] < target_score && scores[i] > -INFINITY;
        above += i != target_index && !below;
    }
    return above;
}

void metrics_add(MetricSums *m, int64_t rank) {
    for (int k = 0; k < METRICS_NK; k++)
        if (rank < metrics_k[k]) {
            m->recall[k] += 1.0;
            m->ndcg[k] += 1.0 / log2((double)rank + 2.0);
        }
    m->n++;
}

void metrics_reduce(MetricSums *m) {
    double buf[2 * METRICS_NK + 1];
    for (int k = 0; k < METRICS_NK; k++) {
        buf[k] = m->recall[k];
        buf[METRICS_NK + k] = m->ndcg[k];
    }
    buf[2 * METRICS_NK] = (double)m->n;
    comm_sum_double(buf, 2 * METRICS_NK + 1);
    for (int k = 0; k < METRICS_NK; k++) {
        m->recall[k] = buf[k];
        m->ndcg[k] = buf[METRICS_NK + k];
    }
    m->n = (int64_t)buf[2 * METRICS_NK];
}

void metrics_mean(const MetricSums *m, double *out_recall, double *out_ndcg) {
    double n = m->n ? (double)m->n : 1.0;
    for (int k = 0; k < METRICS_NK; k++) {
        out_recall[k] = m->recall[k] / n;
        out_ndcg[k] = m->ndcg[k] / n;
    }
}
