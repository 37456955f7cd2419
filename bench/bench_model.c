/* one CAR training step timing: d, layers, heads, L, K, V, B, items per history */
#include "comm.h"
#include "model.h"
#include "rng.h"
#include "util.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double cpu(void){struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID,&t); return t.tv_sec+1e-9*t.tv_nsec;}
int main(int argc, char **argv) {
    comm_init(&argc, &argv, "bench_model");
    int d = 64, nl = 2, nh = 2, L = 3, K = 256, V = getenv("BV") ? atoi(getenv("BV")) : 12101, B = 256, n = 21, steps = 5, mode = MODE_CAR;
    float drop = 0.3f;
    if (argc > 1) d = atoi(argv[1]);
    if (argc > 2) steps = atoi(argv[2]);
    if (argc > 3) mode = atoi(argv[3]);
    if (argc > 4) drop = atof(argv[4]);
    ModelSpec s = {.levels = L, .codebook = {K, K, K}, .n_items = V, .max_chunks = n, .d_model = d, .n_layers = nl,
                   .n_heads = nh, .dropout = drop, .fusion = FUSION_SUM, .level_embedding = 0, .tie_uid = 0, .mode = mode,
                   .alpha = 1, .seed = 1};
    int32_t *codes = xmalloc((size_t)V * L * 4);
    for (int i = 0; i < V * L; i++) codes[i] = (int32_t)rng_below(1, 2, i, K);
    int *len = xmalloc(B * sizeof(int));
    int32_t *items = xmalloc((size_t)B * n * 4);
    for (int b = 0; b < B; b++) len[b] = n;
    for (int i = 0; i < B * n; i++) items[i] = (int32_t)rng_below(1, 3, i, V);
    ModelBatch batch = {B, len, items, NULL};
    Model m;
    model_create(&m, &s, codes);
    if (getenv("BLK")) m.uid.block = atoi(getenv("BLK"));
    OptimConfig oc;
    optim_defaults(&oc);
    oc.weight_decay = 0.01;
    oc.grad_clip = 1.0;
    double tf = 0, tb = 0, to = 0, tz = 0, c0 = 0, cf = 0, cb = 0, best = 1e9;
    ModelLoss l = {0};
    for (int st = 0; st <= steps; st++) {
        double t0 = comm_wtime(), k0 = cpu();
        model_zero_grad(&m);
        double t1 = comm_wtime();
        int64_t nt = model_count_targets(&m, &batch);
        l = model_forward(&m, &batch, 1, st, 1.0f / nt);
        double t2 = comm_wtime(), k2 = cpu();
        model_backward(&m);
        double t3 = comm_wtime(), k3 = cpu();
        model_optimizer_step(&m, &oc, st);
        double t4 = comm_wtime(), k4 = cpu();
        if (st == 0) continue; /* warm-up: allocations */
        c0 += k4 - k0; cf += k2 - k0; cb += k3 - k2; if (k4 - k0 < best) best = k4 - k0;
        tz += t1 - t0; tf += t2 - t1; tb += t3 - t2; to += t4 - t3;
    }
    double step = (tz + tf + tb + to) / steps;
    printf("cpu per step %.1f ms (min %.1f; fwd %.1f bwd %.1f) -> %.0f tokens/s, %.1f GFLOP/s\n", 1e3 * c0 / steps, 1e3 * best, 1e3 * cf / steps, 1e3 * cb / steps, m.N / best, model_train_flops(&m) / best / 1e9);
    printf("%s | tokens %d | step %.1f ms (zero %.1f fwd %.1f bwd %.1f opt %.1f) | %.0f tokens/s | %.1f GFLOP/s | loss %.4f | peak rss %lld MiB\n",
           comm_blas_info(), m.N, 1e3 * step, 1e3 * tz / steps, 1e3 * tf / steps, 1e3 * tb / steps, 1e3 * to / steps,
           m.N / step, model_train_flops(&m) / step / 1e9, l.loss_sum / l.n_loss, (long long)peak_rss_kib() / 1024);
    model_free(&m);
    comm_finalize();
    return 0;
}
