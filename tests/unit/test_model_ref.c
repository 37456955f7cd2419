/* model against the independent PyTorch reference (tests/reference/car_ref.py, float64, padded
 * batches; its output tests/reference/car_ref.bin is committed, so this test needs no torch).
 * Each record: the reference's weights go into the C model, then the same batch gives the same
 * loss (1e-5 relative), head logits (1e-5 of the largest), every parameter gradient (1e-4 of the
 * tensor's largest) and, after two AdamW steps with clipping on the reference's gradients, the
 * same parameters (1e-5). */
#include "check.h"
#include "model.h"
#include "optim.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

#define REF_PATH "tests/reference/car_ref.bin"

typedef struct {
    char *name;
    int ndim;
    int64_t dims[4], n;
    float *data;
} RefTensor;

static RefTensor *ref;
static int n_ref;

static uint32_t read_u32(FILE *f) {
    unsigned char b[4];
    if (fread(b, 1, 4, f) != 4) comm_fatal("%s: truncated", REF_PATH);
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void load_ref(void) {
    FILE *f = fopen(REF_PATH, "rb");
    if (!f) comm_fatal("%s: cannot open (run from the repository root)", REF_PATH);
    char magic[8];
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "CARREF01", 8)) comm_fatal("%s: not a CARREF01 file", REF_PATH);
    n_ref = (int)read_u32(f);
    ref = xcalloc((size_t)n_ref, sizeof *ref);
    for (int i = 0; i < n_ref; i++) {
        RefTensor *t = &ref[i];
        uint32_t len = read_u32(f);
        t->name = xmalloc(len + 1);
        if (fread(t->name, 1, len, f) != len) comm_fatal("%s: truncated", REF_PATH);
        t->name[len] = 0;
        t->ndim = (int)read_u32(f);
        if (t->ndim > 4) comm_fatal("%s: %s has %d dimensions", REF_PATH, t->name, t->ndim);
        t->n = 1;
        for (int d = 0; d < t->ndim; d++) t->n *= t->dims[d] = read_u32(f);
        t->data = xmalloc((size_t)(t->n ? t->n : 1) * sizeof(float));
        if (fread(t->data, sizeof(float), (size_t)t->n, f) != (size_t)t->n) comm_fatal("%s: truncated", REF_PATH);
    }
    fclose(f);
}

static const RefTensor *find(const char *rec, const char *what) {
    char name[160];
    snprintf(name, sizeof name, "%s/%s", rec, what);
    for (int i = 0; i < n_ref; i++)
        if (strcmp(ref[i].name, name) == 0) return &ref[i];
    return NULL;
}

static int count_prefix(const char *rec, const char *what) {
    char name[160];
    snprintf(name, sizeof name, "%s/%s", rec, what);
    int c = 0;
    for (int i = 0; i < n_ref; i++) c += strncmp(ref[i].name, name, strlen(name)) == 0;
    return c;
}

static double scalar(const char *rec, const char *what) {
    const RefTensor *t = find(rec, what);
    if (!t) comm_fatal("%s: %s/%s missing", REF_PATH, rec, what);
    return t->data[0];
}

/* every C tensor of arena a, paired with <rec>/<kind>/<name> of the file */
static const RefTensor *ref_of(const char *rec, const char *kind, const ParamTensor *t) {
    char what[96];
    snprintf(what, sizeof what, "%s/%s", kind, t->name);
    const RefTensor *r = find(rec, what);
    CHECK_MSG(r != NULL, "%s: %s missing in the reference", rec, what);
    if (r) CHECK_MSG(r->n == (int64_t)t->size, "%s: %s has %lld values, the C tensor %zu", rec, what, (long long)r->n,
                     t->size);
    return r && r->n == (int64_t)t->size ? r : NULL;
}

static void set_params(ParamArena *a, const char *rec) {
    for (int i = 0; i < a->n; i++) {
        const RefTensor *r = ref_of(rec, "param", &a->t[i]);
        if (r) memcpy(arena_param(a, i), r->data, a->t[i].size * sizeof(float));
    }
}

static void set_grads(ParamArena *a, const char *rec, const char *kind) {
    for (int i = 0; i < a->n; i++) {
        const RefTensor *r = ref_of(rec, kind, &a->t[i]);
        if (r) memcpy(arena_grad(a, i), r->data, a->t[i].size * sizeof(float));
    }
}

static double worst_grad(ParamArena *a, const char *rec, const char *kind, int params, double tol, double *worst) {
    for (int i = 0; i < a->n; i++) {
        const RefTensor *r = ref_of(rec, kind, &a->t[i]);
        if (!r) continue;
        const float *mine = params ? arena_param(a, i) : arena_grad(a, i);
        double e = check_rel_diff(mine, r->data, r->n, 0);
        CHECK_MSG(check_nan_detected(mine, r->data, r->n, 0, tol), "%s: %s/%s: a NaN would pass", rec, kind, a->t[i].name);
        CHECK_MSG(e < tol, "%s: %s/%s: max error %.3g of the largest value (tolerance %g)", rec, kind, a->t[i].name, e,
                  tol);
        *worst = check_max(*worst, e);
    }
    return *worst;
}

static void check_record(const char *rec) {
    if (!find(rec, "spec.levels")) {
        CHECK_MSG(0, "%s: record %s missing", REF_PATH, rec);
        return;
    }
    ModelSpec s = {0};
    s.levels = (int)scalar(rec, "spec.levels");
    const RefTensor *cb = find(rec, "spec.codebook");
    for (int l = 0; l < s.levels; l++) s.codebook[l] = (int)cb->data[l];
    s.n_items = (int64_t)scalar(rec, "spec.n_items");
    s.max_chunks = (int)scalar(rec, "spec.max_chunks");
    s.d_model = (int)scalar(rec, "spec.d_model");
    s.n_layers = (int)scalar(rec, "spec.n_layers");
    s.n_heads = (int)scalar(rec, "spec.n_heads");
    s.fusion = (int)scalar(rec, "spec.fusion");
    s.level_embedding = (int)scalar(rec, "spec.level_embedding");
    s.tie_uid = (int)scalar(rec, "spec.tie_uid");
    s.mode = (int)scalar(rec, "spec.mode");
    s.alpha = (float)scalar(rec, "spec.alpha");
    s.seed = 1;
    const RefTensor *rc = find(rec, "codes"), *rl = find(rec, "batch.len"), *ri = find(rec, "batch.items");
    int32_t *codes = xmalloc((size_t)(rc->n ? rc->n : 1) * sizeof(int32_t));
    for (int64_t i = 0; i < rc->n; i++) codes[i] = (int32_t)rc->data[i];
    int B = (int)rl->n, *len = xmalloc((size_t)B * sizeof(int));
    int32_t *items = xmalloc((size_t)ri->n * sizeof(int32_t));
    for (int b = 0; b < B; b++) len[b] = (int)rl->data[b];
    for (int64_t i = 0; i < ri->n; i++) items[i] = (int32_t)ri->data[i];
    ModelBatch batch = {B, len, items, NULL};

    Model m;
    model_create(&m, &s, codes);
    CHECK_MSG(count_prefix(rec, "param/") == m.params.n + m.uid.arena.n, "%s: %d reference tensors, %d in C", rec,
              count_prefix(rec, "param/"), m.params.n + m.uid.arena.n);
    set_params(&m.params, rec);
    set_params(&m.uid.arena, rec);

    /* loss */
    int64_t n = model_count_targets(&m, &batch);
    model_zero_grad(&m);
    ModelLoss l = model_forward(&m, &batch, 0, 0, 1.0f / (float)n);
    model_backward(&m);
    const RefTensor *rloss = find(rec, "loss");
    double loss = l.loss_sum / l.n_loss, act = l.act_sum / l.n_act;
    double think = s.levels ? l.think_sum / (s.mode == MODE_CAR ? l.n_loss : l.n_think) : 0;
    double el = fabs(loss - rloss->data[0]) / rloss->data[0];
    CHECK_MSG(el < 1e-5, "%s: loss %.9g, reference %.9g", rec, loss, rloss->data[0]);
    CHECK_CLOSE(act, rloss->data[1], 1e-5);
    CHECK_CLOSE(think, rloss->data[2], 1e-5);

    /* logits of every head at the rows that predict its level */
    double worst_logit = 0;
    int d = s.d_model;
    for (int k = 0; k <= s.levels; k++) {
        char what[32];
        snprintf(what, sizeof what, "logits.%d", k);
        const RefTensor *rz = find(rec, what);
        int nk = m.n_tgt[k];
        int K = k < s.levels ? s.codebook[k] : (int)s.n_items;
        CHECK_MSG(rz && rz->n == (int64_t)nk * K, "%s: %s: %d rows of %d expected", rec, what, nk, K);
        if (!rz || rz->n != (int64_t)nk * K) continue;
        float *H = xmalloc((size_t)nk * d * sizeof(float)), *z = xmalloc((size_t)nk * K * sizeof(float));
        for (int i = 0; i < nk; i++)
            memcpy(H + (size_t)i * d, model_hidden(&m) + (size_t)m.tgt_rows[(size_t)k * m.N + i] * d,
                   (size_t)d * sizeof(float));
        if (k < s.levels) model_think_logits(&m, H, nk, k, z);
        else uid_head_scores(&m.uid, H, nk, z);
        double e = check_rel_diff(z, rz->data, rz->n, 0);
        CHECK_MSG(check_nan_detected(z, rz->data, rz->n, 0, 1e-5), "%s: %s: a NaN would pass", rec, what);
        CHECK_MSG(e < 1e-5, "%s: %s: max error %.3g of the largest logit", rec, what, e);
        worst_logit = check_max(worst_logit, e);
        free(H);
        free(z);
    }

    /* gradients */
    double worst_g = 0;
    worst_grad(&m.params, rec, "grad", 0, 1e-4, &worst_g);
    worst_grad(&m.uid.arena, rec, "grad", 0, 1e-4, &worst_g);

    /* two AdamW steps with clipping, as torch.optim.AdamW + clip_grad_norm_, fed the reference's
     * gradients (exact zeros, like the key bias's, are float noise here and Adam would turn
     * them into steps of lr) */
    OptimConfig oc;
    optim_defaults(&oc);
    oc.lr = scalar(rec, "adamw.lr");
    oc.beta1 = scalar(rec, "adamw.beta1");
    oc.beta2 = scalar(rec, "adamw.beta2");
    oc.eps = scalar(rec, "adamw.eps");
    oc.weight_decay = scalar(rec, "adamw.weight_decay");
    oc.grad_clip = scalar(rec, "adamw.grad_clip");
    for (int step = 0; step < 2; step++) {
        set_grads(&m.params, rec, step ? "grad2" : "grad");
        set_grads(&m.uid.arena, rec, step ? "grad2" : "grad");
        model_optimizer_step(&m, &oc, step);
    }
    double worst_p = 0;
    worst_grad(&m.params, rec, "after2", 1, 1e-5, &worst_p);
    worst_grad(&m.uid.arena, rec, "after2", 1, 1e-5, &worst_p);
    if (comm_rank() == 0)
        printf("    %-7s loss rel error %.1e, logits %.1e, gradients %.1e, params after 2 AdamW steps %.1e\n", rec, el,
               worst_logit, worst_g, worst_p);
    model_free(&m);
    free(codes);
    free(len);
    free(items);
}

static void test_car(void) { check_record("car"); }
static void test_ar(void) { check_record("ar"); }
static void test_car_l0(void) { check_record("car_l0"); }

int main(int argc, char **argv) {
    comm_init(&argc, &argv, "test_model_ref");
    load_ref();
    RUN_TEST(test_car);
    RUN_TEST(test_ar);
    RUN_TEST(test_car_l0);
    for (int i = 0; i < n_ref; i++) {
        free(ref[i].name);
        free(ref[i].data);
    }
    free(ref);
    return check_finish();
}
