#include "metrics.h"
#include "comm.h"
#include "vmath.h"
#include <math.h>

/* 1 when score does not rank below a finite target score ts: higher, equal, NaN or -inf (written
 * so that NaN and -inf of other items count against the target) */
#define NOT_BELOW(score, ts) (!((score) < (ts)) | !((score) > -INFINITY))

/* Items of s[0..n) not below ts, skipped ones left out: the hot loop of full-ranking evaluation
 * (every item of every user). Eight counters, one per lane of an AVX2 register, so the compiler
 * vectorises the block of eight at -O2 (VMATH_CLONES: an AVX2 copy) without a reduction pragma,
 * which clang's sanitizer builds cannot honour; each counts at most n / 8 < 2^32 items. */
VMATH_CLONES static int64_t count_not_below(const float *s, int64_t n, float ts, const uint8_t *skip) {
    uint32_t lane[8] = {0};
    int64_t i = 0, c = 0;
    if (skip)
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; k++) lane[k] += (skip[i + k] == 0) & NOT_BELOW(s[i + k], ts);
    else
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; k++) lane[k] += NOT_BELOW(s[i + k], ts);
    for (; i < n; i++) c += (!skip || skip[i] == 0) & NOT_BELOW(s[i], ts);
    for (int k = 0; k < 8; k++) c += lane[k];
    return c;
}

int64_t metrics_count_above(const float *scores, int64_t n, float target_score, int64_t target_index,
                            const uint8_t *skip) {
    /* a diverged model must not score hits: a non-finite target is a miss (every item above it) */
    if (!isfinite(target_score)) return n;
    int64_t above = count_not_below(scores, n, target_score, skip);
    /* the target itself never counts (its own entry was counted like any other, unless skipped) */
    if (target_index >= 0 && target_index < n && !(skip && skip[target_index]))
        above -= NOT_BELOW(scores[target_index], target_score);
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
