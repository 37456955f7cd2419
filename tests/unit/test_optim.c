/* optim: the learning-rate schedule, clipping, and AdamW on a hand-computed case (the PyTorch
 * comparison of whole steps is in test_model_ref). */
#include "check.h"
#include "config.h"
#include "optim.h"
#include <string.h>

static void test_schedule(void) {
    OptimConfig c;
    optim_defaults(&c);
    c.lr = 1.0;
    c.warmup_steps = 4;
    c.schedule = SCHEDULE_COSINE;
    c.total_steps = 104;
    c.lr_floor = 0.1;
    CHECK_CLOSE(optim_lr(&c, 0), 0.25, 1e-12); /* linear warm-up: (step + 1) / warmup */
    CHECK_CLOSE(optim_lr(&c, 3), 1.0, 1e-12);
    CHECK_CLOSE(optim_lr(&c, 4), 1.0, 1e-12); /* cosine from the peak ... */
    CHECK_CLOSE(optim_lr(&c, 54), 0.55, 1e-12); /* ... halfway between peak and floor ... */
    CHECK_CLOSE(optim_lr(&c, 104), 0.1, 1e-12); /* ... to the floor, and stays there */
    CHECK_CLOSE(optim_lr(&c, 500), 0.1, 1e-12);
    for (int64_t s = 5; s < 104; s++) CHECK(optim_lr(&c, s) < optim_lr(&c, s - 1));
    c.schedule = SCHEDULE_CONSTANT;
    CHECK_CLOSE(optim_lr(&c, 1), 0.5, 1e-12);
    CHECK_CLOSE(optim_lr(&c, 90), 1.0, 1e-12);
}

static void test_clip(void) {
    CHECK(optim_clip_scale(100.0, 0) == 1.0f);   /* no clipping */
    CHECK(optim_clip_scale(0.25, 1.0) == 1.0f);  /* norm 0.5 is under 1 */
    CHECK_CLOSE(optim_clip_scale(16.0, 2.0), 0.5, 1e-6); /* norm 4 down to 2 */
}

static void test_adamw(void) {
    ParamArena a = {0};
    int w = arena_add(&a, "w", 1, 2, PARAM_MATRIX), b = arena_add(&a, "b", 1, 2, PARAM_BIAS);
    int e = arena_add(&a, "e", 1, 1, PARAM_EMBEDDING);
    arena_alloc(&a);
    CHECK(a.total == 5 && a.t[b].offset == 2);
    for (int i = 0; i < 5; i++) {
        a.params[i] = 1.0f;
        a.grads[i] = (i % 2 ? -2.0f : 4.0f);
    }
    CHECK_CLOSE(arena_grad_sqnorm(&a), 3 * 16 + 2 * 4, 1e-9);
    OptimConfig c;
    optim_defaults(&c);
    c.weight_decay = 0.5;
    /* step 1: m_hat = g, v_hat = g^2, so the update is lr * sign(g), plus lr * wd * p on matrices */
    adamw_step(&a, 0, a.total, &c, 0.1f, 0.5f, 1);
    CHECK_CLOSE(arena_param(&a, w)[0], 1 - 0.1 - 0.05, 1e-6);
    CHECK_CLOSE(arena_param(&a, w)[1], 1 + 0.1 - 0.05, 1e-6);
    CHECK_CLOSE(arena_param(&a, b)[0], 1 - 0.1, 1e-6); /* biases do not decay */
    CHECK_CLOSE(arena_param(&a, e)[0], 1 - 0.1, 1e-6); /* nor embeddings by default */
    CHECK_CLOSE(a.m[0], 0.1 * 4 * 0.5, 1e-6); /* moments of the scaled gradient */
    CHECK_CLOSE(a.v[0], 0.001 * 4, 1e-6);
    /* a range of the flat buffer (a ZeRO shard) touches only that range */
    float before[5];
    memcpy(before, a.params, sizeof before);
    c.decay_embeddings = 1;
    adamw_step(&a, 3, 5, &c, 0.1f, 1.0f, 2);
    CHECK(memcmp(before, a.params, 3 * sizeof(float)) == 0);
    CHECK(a.params[3] != before[3] && a.params[4] != before[4]);
    CHECK(optim_decays(&c, PARAM_EMBEDDING) && !optim_decays(&c, PARAM_NORM) && optim_decays(&c, PARAM_MATRIX));
    arena_free(&a);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_optim");
    RUN_TEST(test_schedule);
    RUN_TEST(test_clip);
    RUN_TEST(test_adamw);
    return check_finish();
}
