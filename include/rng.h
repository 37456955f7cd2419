/* rng: counter-based random numbers. A value is a pure function of (seed, stream, counter),
 * so results never depend on which rank draws them or in which order. */
#ifndef CAR_RNG_H
#define CAR_RNG_H
#include <math.h>
#include <stdint.h>

static inline uint64_t rng_mix(uint64_t x) { /* splitmix64 finaliser */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline uint64_t rng_u64(uint64_t seed, uint64_t stream, uint64_t counter) {
    return rng_mix(rng_mix(rng_mix(seed) ^ stream) ^ counter);
}

/* uniform in [0, 1), 53 bits */
static inline double rng_uniform(uint64_t seed, uint64_t stream, uint64_t counter) {
    return (double)(rng_u64(seed, stream, counter) >> 11) * (1.0 / 9007199254740992.0);
}

/* standard normal by Box-Muller from two counters (2c, 2c+1) */
static inline double rng_normal(uint64_t seed, uint64_t stream, uint64_t counter) {
    double u1 = rng_uniform(seed, stream, 2 * counter);
    double u2 = rng_uniform(seed, stream, 2 * counter + 1);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* uniform integer in [0, n) */
static inline uint64_t rng_below(uint64_t seed, uint64_t stream, uint64_t counter, uint64_t n) {
    return (uint64_t)(rng_uniform(seed, stream, counter) * (double)n) % (n ? n : 1);
}

/* A sequential generator for code that draws many numbers in a fixed order. */
typedef struct { uint64_t seed, stream, counter; } Rng;
static inline Rng rng_make(uint64_t seed, uint64_t stream) { Rng r = {seed, stream, 0}; return r; }
static inline double rng_next_uniform(Rng *r) { return rng_uniform(r->seed, r->stream, r->counter++); }
static inline double rng_next_normal(Rng *r) { return rng_normal(r->seed, r->stream, r->counter++); }
static inline uint64_t rng_next_below(Rng *r, uint64_t n) { return rng_below(r->seed, r->stream, r->counter++, n); }

#endif
