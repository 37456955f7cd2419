/* model: the chunk Transformer: parameters, packed batches, forward, heads, backward. */
#include "model.h"
#include "comm.h"
#include "layers.h"
#include "rng.h"
#include "util.h"
#include "vmath.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void model_spec_from_config(ModelSpec *s, const CarConfig *cfg, int64_t n_items) {
    memset(s, 0, sizeof *s);
    s->levels = cfg->sid.levels;
    for (int l = 0; l < s->levels; l++) s->codebook[l] = config_codebook(cfg, l);
    s->n_items = n_items;
    s->max_chunks = cfg->data.max_history + 1;
    s->d_model = cfg->model.d_model;
    s->n_layers = cfg->model.n_layers;
    s->n_heads = cfg->model.n_heads;
    s->dropout = (float)cfg->model.dropout;
    s->fusion = cfg->model.fusion;
    s->level_embedding = cfg->model.level_embedding;
    s->tie_uid = cfg->model.tie_uid;
    s->uid_bf16 = cfg->model.uid_bf16;
    s->mode = cfg->train.mode;
    s->alpha = (float)cfg->train.alpha;
    s->label_smoothing = (float)cfg->train.label_smoothing;
    s->seed = (uint64_t)cfg->train.seed;
}

/* ---------------------------------------------------------------- parameters */

static int add_layer_tensor(Model *m, int i, const char *what, int64_t rows, int64_t cols, int kind) {
    char name[48];
    snprintf(name, sizeof name, "h.%d.%s", i, what);
    return arena_add(&m->params, name, rows, cols, kind);
}

void model_create(Model *m, const ModelSpec *spec, const int32_t *codes) {
    memset(m, 0, sizeof *m);
    m->spec = *spec;
    const ModelSpec *s = &m->spec;
    int L = s->levels, d = s->d_model;
    if (L < 0 || L > SID_MAX_LEVELS) comm_fail("model: %d SID levels, expected 0..%d", L, SID_MAX_LEVELS);
    if (d <= 0 || s->n_layers <= 0 || s->n_heads <= 0 || d % s->n_heads)
        comm_fail("model: d_model %d must be a positive multiple of n_heads %d (n_layers %d)", d, s->n_heads,
                  s->n_layers);
    if (s->n_items <= 0 || s->n_items > INT32_MAX) comm_fail("model: %lld items", (long long)s->n_items);
    if (s->max_chunks <= 0) comm_fail("model: max_chunks %d must be positive", s->max_chunks);
    for (int l = 0; l < L; l++)
        if (s->codebook[l] <= 0) comm_fail("model: codebook size %d of level %d", s->codebook[l], l + 1);
    if (L > 0 && !codes) comm_fail("model: %d SID levels but no codes", L);
    for (int64_t i = 0; i < (L ? s->n_items : 0); i++)
        for (int l = 0; l < L; l++)
            if (codes[i * L + l] < 0 || codes[i * L + l] >= s->codebook[l])
                comm_fail("model: SID code %d of item %lld at level %d outside [0, %d)", (int)codes[i * L + l],
                          (long long)i, l + 1, s->codebook[l]);
    m->codes = codes;
    m->C = L + 1;
    m->max_pos = s->max_chunks * m->C;

    ParamArena *a = &m->params;
    char name[48];
    for (int l = 0; l < L; l++) {
        snprintf(name, sizeof name, "sid_emb.%d", l);
        m->sid_emb[l] = arena_add(a, name, s->codebook[l], d, PARAM_EMBEDDING);
    }
    m->pos_emb = arena_add(a, "pos_emb", m->max_pos, d, PARAM_EMBEDDING);
    m->level_emb = s->level_embedding ? arena_add(a, "level_emb", m->C, d, PARAM_EMBEDDING) : -1;
    m->layer = xcalloc((size_t)s->n_layers, sizeof *m->layer);
    for (int i = 0; i < s->n_layers; i++) {
        LayerParams *p = &m->layer[i];
        p->ln1_w = add_layer_tensor(m, i, "ln1.w", 1, d, PARAM_NORM);
        p->ln1_b = add_layer_tensor(m, i, "ln1.b", 1, d, PARAM_NORM);
        p->qkv_w = add_layer_tensor(m, i, "attn.qkv.w", 3 * d, d, PARAM_MATRIX);
        p->qkv_b = add_layer_tensor(m, i, "attn.qkv.b", 1, 3 * d, PARAM_BIAS);
        p->proj_w = add_layer_tensor(m, i, "attn.proj.w", d, d, PARAM_MATRIX);
        p->proj_b = add_layer_tensor(m, i, "attn.proj.b", 1, d, PARAM_BIAS);
        p->ln2_w = add_layer_tensor(m, i, "ln2.w", 1, d, PARAM_NORM);
        p->ln2_b = add_layer_tensor(m, i, "ln2.b", 1, d, PARAM_NORM);
        p->fc_w = add_layer_tensor(m, i, "mlp.fc.w", 4 * d, d, PARAM_MATRIX);
        p->fc_b = add_layer_tensor(m, i, "mlp.fc.b", 1, 4 * d, PARAM_BIAS);
        p->fcproj_w = add_layer_tensor(m, i, "mlp.proj.w", d, 4 * d, PARAM_MATRIX);
        p->fcproj_b = add_layer_tensor(m, i, "mlp.proj.b", 1, d, PARAM_BIAS);
    }
    m->lnf_w = arena_add(a, "lnf.w", 1, d, PARAM_NORM);
    m->lnf_b = arena_add(a, "lnf.b", 1, d, PARAM_NORM);
    for (int l = 0; l < L; l++) {
        snprintf(name, sizeof name, "think_head.%d", l);
        m->think_head[l] = arena_add(a, name, s->codebook[l], d, PARAM_MATRIX);
    }
    arena_alloc(a);

    /* GPT-2 initialisation; the projections into the residual stream scaled by 1/sqrt(2 n_layers) */
    double resid_std = 0.02 / sqrt(2.0 * s->n_layers);
    for (int i = 0; i < a->n; i++) {
        int kind = a->t[i].kind;
        if (kind == PARAM_BIAS) continue;
        if (kind == PARAM_NORM) {
            if (strstr(a->t[i].name, ".w"))
                for (size_t k = 0; k < a->t[i].size; k++) arena_param(a, i)[k] = 1.0f;
            continue;
        }
        int resid = strstr(a->t[i].name, "attn.proj.w") || strstr(a->t[i].name, "mlp.proj.w");
        arena_init_normal(a, i, resid ? resid_std : 0.02, s->seed);
    }
    uid_init(&m->uid, s->n_items, d, s->tie_uid, s->seed, !s->local_items);
    m->uid.bf16 = s->uid_bf16;
}

void model_free(Model *m) {
    arena_free(&m->params);
    uid_free(&m->uid);
    free(m->layer);
    free(m->off);
    free(m->pos);
    free(m->level);
    free(m->tok);
    free(m->row_key);
    free(m->by_level);
    free(m->by_level_tok);
    free(m->tgt_rows);
    free(m->tgt);
    free(m->acts);
    free(m->la);
    free(m->grad_acts);
    free(m->head_work);
    memset(m, 0, sizeof *m);
}

LayerTensors model_layer_tensors(const Model *m, int l, int grads) {
    const LayerParams *p = &m->layer[l];
    const ParamArena *a = &m->params;
    LayerTensors t;
#define LAYER_FILL_(name) t.name = grads ? arena_grad(a, p->name) : arena_param(a, p->name);
    LAYER_TENSORS(LAYER_FILL_)
#undef LAYER_FILL_
    return t;
}

int64_t model_num_params(const Model *m) {
    return (int64_t)m->params.total + (m->spec.tie_uid ? 1 : 2) * m->spec.n_items * m->spec.d_model;
}

void model_zero_grad(Model *m) {
    arena_zero_grad(&m->params);
    uid_zero_grad(&m->uid);
}

/* ---------------------------------------------------------------- batches */

/* target_mode of prepare: TARGETS_ALL every training target of the mode, TARGETS_LAST only the
 * last item's tokens */
enum { TARGETS_NONE = 0, TARGETS_ALL = 1, TARGETS_LAST = 2 };

int64_t model_input_tokens(int mode, int C, int64_t n) {
    if (mode == MODE_CAR) return n > 1 ? (n - 1) * C : 0;
    return n > 0 ? n * C - 1 : 0;
}

/* input tokens of a sequence of n items */
static int seq_tokens(const Model *m, int n, int target_mode) {
    return target_mode ? (int)model_input_tokens(m->spec.mode, m->C, n) : n * m->C;
}

int64_t model_count_targets(const Model *m, const ModelBatch *b) {
    int64_t n = 0;
    for (int i = 0; i < b->B; i++)
        n += m->spec.mode == MODE_CAR ? (b->len[i] > 1 ? b->len[i] - 1 : 0) : seq_tokens(m, b->len[i], 1);
    return n;
}

/* token of chunk position k of item */
static int32_t chunk_token(const Model *m, int32_t item, int k) {
    int L = m->spec.levels;
    return k < L ? m->codes[(int64_t)item * L + k] : item;
}

/* Lays out batch b: token rows, levels, positions, dropout keys, rows grouped by level and,
 * with target_mode, the rows and targets of each head. */
static void prepare(Model *m, const ModelBatch *b, int target_mode) {
    int L = m->spec.levels, C = m->C;
    int N = 0;
    for (int i = 0; i < b->B; i++) {
        if (b->len[i] < 0) comm_fatal("model: sequence %d has %d items", i, b->len[i]);
        int T = seq_tokens(m, b->len[i], target_mode);
        if (T > m->max_pos)
            comm_fatal("model: sequence %d of %d items needs %d positions, the model has %d (max_chunks %d)", i,
                       b->len[i], T, m->max_pos, m->spec.max_chunks);
        N += T;
    }
    if (b->B + 1 > m->cap_B) {
        m->cap_B = b->B + 1;
        m->off = xrealloc(m->off, (size_t)m->cap_B * sizeof *m->off);
    }
    if (N > m->cap_N || !m->pos) {
        m->cap_N = N;
        size_t n = (size_t)(N ? N : 1);
        m->pos = xrealloc(m->pos, n * sizeof *m->pos);
        m->level = xrealloc(m->level, n * sizeof *m->level);
        m->tok = xrealloc(m->tok, n * sizeof *m->tok);
        m->row_key = xrealloc(m->row_key, n * sizeof *m->row_key);
        m->by_level = xrealloc(m->by_level, n * sizeof *m->by_level);
        m->by_level_tok = xrealloc(m->by_level_tok, n * sizeof *m->by_level_tok);
        m->tgt_rows = xrealloc(m->tgt_rows, n * (size_t)(L + 1) * sizeof *m->tgt_rows);
        m->tgt = xrealloc(m->tgt, n * (size_t)(L + 1) * sizeof *m->tgt);
    }
    m->B = b->B;
    m->N = N;
    m->target_mode = target_mode;
    int counts[SID_MAX_LEVELS + 1] = {0};
    for (int k = 0; k <= L; k++) m->n_tgt[k] = 0;
    const int32_t *items = b->items;
    int r = 0;
    for (int i = 0; i < b->B; i++) {
        int n = b->len[i], T = seq_tokens(m, n, target_mode);
        uint64_t sample = b->sample ? (uint64_t)b->sample[i] : (uint64_t)i;
        for (int j = 0; j < n; j++)
            if (items[j] < 0 || items[j] >= m->spec.n_items)
                comm_fatal("model: item %d of sequence %d is %d, outside [0, %lld)", j, i, (int)items[j],
                           (long long)m->spec.n_items);
        m->off[i] = r;
        for (int t = 0; t < T; t++, r++) {
            int k = t % C;
            m->pos[r] = t;
            m->level[r] = (int8_t)k;
            m->tok[r] = chunk_token(m, items[t / C], k);
            m->row_key[r] = sample * (uint64_t)m->max_pos + (uint64_t)t;
            counts[k]++;
            if (!target_mode) continue;
            /* TARGETS_LAST: only tokens of the last item are predicted (held-out loss) */
            int predicted_item = m->spec.mode == MODE_CAR ? t / C + 1 : (t + 1) / C;
            if (target_mode == TARGETS_LAST && predicted_item != n - 1) continue;
            if (m->spec.mode == MODE_CAR) {
                if (k != L) continue;
                for (int h = 0; h <= L; h++) { /* every token of the next chunk */
                    int c = m->n_tgt[h]++;
                    m->tgt_rows[(size_t)h * N + c] = r;
                    m->tgt[(size_t)h * N + c] = chunk_token(m, items[t / C + 1], h);
                }
            } else {
                int h = (t + 1) % C, c = m->n_tgt[h]++;
                m->tgt_rows[(size_t)h * N + c] = r;
                m->tgt[(size_t)h * N + c] = chunk_token(m, items[(t + 1) / C], h);
            }
        }
        items += n;
    }
    m->off[b->B] = N;
    m->level_start[0] = 0;
    for (int k = 0; k <= L; k++) m->level_start[k + 1] = m->level_start[k] + counts[k];
    int fill[SID_MAX_LEVELS + 1];
    for (int k = 0; k <= L; k++) fill[k] = m->level_start[k];
    for (int q = 0; q < N; q++) {
        int at = fill[m->level[q]]++;
        m->by_level[at] = q;
        m->by_level_tok[at] = m->tok[q];
    }
}

/* Points the activation tensors into one buffer sized for the current batch. */
static void layout_acts(Model *m) {
    size_t N = (size_t)m->N, d = (size_t)m->spec.d_model, A = attention_size(m->off, m->B, m->spec.n_heads);
    int nl = m->spec.n_layers;
    size_t per_layer = 18 * N * d + 4 * N + A;
    size_t need = 4 * N * d + 2 * N + (size_t)nl * per_layer;
    xgrow(&m->acts, &m->acts_cap, need, sizeof(float)); /* never NULL: a rank may hold no rows */
    if (!m->la) m->la = xcalloc((size_t)nl, sizeof *m->la);
    float *p = m->acts;
#define TAKE(ptr, n) (ptr = p, p += (n))
    TAKE(m->emb, N * d);
    TAKE(m->x0, N * d);
    for (int l = 0; l < nl; l++) {
        LayerActs *a = &m->la[l];
        TAKE(a->ln1, N * d);
        TAKE(a->ln1_mean, N);
        TAKE(a->ln1_rstd, N);
        TAKE(a->qkv, 3 * N * d);
        TAKE(a->att, A);
        TAKE(a->atty, N * d);
        TAKE(a->attproj, N * d);
        TAKE(a->res2, N * d);
        TAKE(a->ln2, N * d);
        TAKE(a->ln2_mean, N);
        TAKE(a->ln2_rstd, N);
        TAKE(a->fch, 4 * N * d);
        TAKE(a->fch_gelu, 4 * N * d);
        TAKE(a->fcproj, N * d);
        TAKE(a->res3, N * d);
    }
    TAKE(m->lnf, N * d);
    TAKE(m->lnf_mean, N);
    TAKE(m->lnf_rstd, N);
    TAKE(m->dlnf, N * d);
}

static void layout_grad_acts(Model *m) {
    size_t N = (size_t)m->N, d = (size_t)m->spec.d_model, Tmax = 0;
    for (int b = 0; b < m->B; b++) {
        size_t T = (size_t)(m->off[b + 1] - m->off[b]);
        Tmax = T > Tmax ? T : Tmax;
    }
    size_t need = 16 * N * d + Tmax * Tmax;
    xgrow(&m->grad_acts, &m->grad_cap, need, sizeof(float));
    float *p = m->grad_acts;
    TAKE(m->dres, N * d);
    TAKE(m->dbranch, N * d);
    TAKE(m->dln, N * d);
    TAKE(m->dqkv, 3 * N * d);
    TAKE(m->datty, N * d);
    TAKE(m->dfch, 4 * N * d);
    TAKE(m->dfch_gelu, 4 * N * d);
    TAKE(m->demb, N * d);
    TAKE(m->att_scratch, Tmax * Tmax);
#undef TAKE
}

/* ---------------------------------------------------------------- profile */

const char *const model_part_names[PART_N] = {"embeddings + fusion", "layernorm", "attention matmuls",
                                              "attention core", "mlp matmuls", "gelu", "dropout + residual",
                                              "think heads", "uid head", "optimizer", "gradient sync wait"};

/* call, timed into part of direction dir (0 forward, 1 backward) when m->prof is set */
#define TIMED(m, dir, part, call)                                                    \
    do {                                                                             \
        double t0_ = (m)->prof ? comm_wtime() : 0;                                   \
        call;                                                                        \
        if ((m)->prof) (m)->prof->seconds[dir][part] += comm_wtime() - t0_;          \
    } while (0)

/* ---------------------------------------------------------------- forward */

static int dropout_on(const Model *m) { return m->training && m->spec.dropout > 0; }

/* the forward under way has a gradient to give: model_backward may follow it */
static int wants_backward(const Model *m) { return m->target_mode && m->dloss != 0; }

/* out = res + dropout(x) (res NULL: no add) at a dropout site: 0 the embeddings, 1 + 2l the
 * attention output of layer l, 2 + 2l its MLP output. Keyed by (seed, step, site, row, unit). */
static void dropout_site(Model *m, float *out, const float *x, const float *res, int site) {
    if (!dropout_on(m)) {
        if (res) residual_forward(out, res, x, (size_t)m->N * m->spec.d_model);
        else if (out != x) memcpy(out, x, (size_t)m->N * m->spec.d_model * sizeof(float));
        return;
    }
    uint64_t seed = rng_mix(m->spec.seed ^ 0x64726f706f7574ULL); /* "dropout": apart from the init streams */
    dropout_forward(out, x, res, m->N, m->spec.d_model, m->spec.dropout, seed,
                    (uint64_t)m->step * 1024 + (uint64_t)site, m->row_key);
}

/* x0 (N,d) = fusion of the raw token embeddings (SID rows by level, UID rows through uidhead,
 * staged in x0) + positions (+ levels) */
static void embed_forward(Model *m) {
    const ModelSpec *s = &m->spec;
    int N = m->N, d = s->d_model, L = s->levels;
    ParamArena *a = &m->params;
    for (int k = 0; k < L; k++)
        embedding_forward(m->emb, m->by_level + m->level_start[k], m->by_level_tok + m->level_start[k],
                          m->level_start[k + 1] - m->level_start[k], arena_param(a, m->sid_emb[k]), d);
    int u0 = m->level_start[L], nu = m->level_start[L + 1] - u0;
    uid_embed_forward(&m->uid, m->by_level_tok + u0, nu, m->x0);
    for (int i = 0; i < nu; i++)
        memcpy(m->emb + (size_t)m->by_level[u0 + i] * d, m->x0 + (size_t)i * d, (size_t)d * sizeof(float));
    fusion_forward(m->x0, m->emb, m->level, N, d, s->fusion);
    const float *pos = arena_param(a, m->pos_emb), *lev = m->level_emb >= 0 ? arena_param(a, m->level_emb) : NULL;
    for (int r = 0; r < N; r++) {
        float *x = m->x0 + (size_t)r * d;
        const float *pe = pos + (size_t)m->pos[r] * d;
        for (int c = 0; c < d; c++) x[c] += pe[c];
        if (lev)
            for (int c = 0; c < d; c++) x[c] += lev[(size_t)m->level[r] * d + c];
    }
}

/* Layer l's first half on every row: ln1 and qkv (N,3d), from its input res (N,d). */
static void block_qkv_forward(Model *m, int l, const float *res) {
    int N = m->N, d = m->spec.d_model;
    LayerTensors w = model_layer_tensors(m, l, 0);
    LayerActs *t = &m->la[l];
    TIMED(m, 0, PART_LAYERNORM, layernorm_forward(t->ln1, t->ln1_mean, t->ln1_rstd, res, w.ln1_w, w.ln1_b, N, d));
    TIMED(m, 0, PART_ATTN_MM, matmul_forward(t->qkv, t->ln1, w.qkv_w, w.qkv_b, N, d, 3 * d));
}

/* Layer l from the attention output t->atty on R rows (R = N, or one row per sequence when only
 * the last rows are wanted, res then their inputs): res3 = res2 + MLP(ln2(res2)), res2 = res +
 * proj(atty), with dropout in training. */
static void block_rest_forward(Model *m, int l, const float *res, int R) {
    int d = m->spec.d_model;
    LayerTensors w = model_layer_tensors(m, l, 0);
    LayerActs *t = &m->la[l];
    TIMED(m, 0, PART_ATTN_MM, matmul_forward(t->attproj, t->atty, w.proj_w, w.proj_b, R, d, d));
    TIMED(m, 0, PART_DROPOUT, dropout_site(m, t->res2, t->attproj, res, 1 + 2 * l)); /* res2 = res + dropout(attproj) */
    TIMED(m, 0, PART_LAYERNORM, layernorm_forward(t->ln2, t->ln2_mean, t->ln2_rstd, t->res2, w.ln2_w, w.ln2_b, R, d));
    TIMED(m, 0, PART_MLP_MM, matmul_forward(t->fch, t->ln2, w.fc_w, w.fc_b, R, d, 4 * d));
    if (wants_backward(m)) /* fch becomes GELU'(fch): the backward's factor, with no tanh to take again */
        TIMED(m, 0, PART_GELU, gelu_forward_keep_local(t->fch_gelu, t->fch, (size_t)R * 4 * d));
    else
        TIMED(m, 0, PART_GELU, gelu_forward(t->fch_gelu, t->fch, (size_t)R * 4 * d));
    TIMED(m, 0, PART_MLP_MM, matmul_forward(t->fcproj, t->fch_gelu, w.fcproj_w, w.fcproj_b, R, 4 * d, d));
    TIMED(m, 0, PART_DROPOUT, dropout_site(m, t->res3, t->fcproj, t->res2, 2 + 2 * l)); /* res3 = res2 + dropout(fcproj) */
}

static void final_layernorm(Model *m, const float *res, int R) {
    ParamArena *a = &m->params;
    TIMED(m, 0, PART_LAYERNORM,
          layernorm_forward(m->lnf, m->lnf_mean, m->lnf_rstd, res, arena_param(a, m->lnf_w), arena_param(a, m->lnf_b),
                            R, m->spec.d_model));
}

/* Token rows -> the embeddings and the first n_full layers on every row; returns their output. */
static const float *backbone_first_layers(Model *m, int n_full) {
    layout_acts(m);
    TIMED(m, 0, PART_EMBED, embed_forward(m));
    if (dropout_on(m)) TIMED(m, 0, PART_DROPOUT, dropout_site(m, m->x0, m->x0, NULL, 0));
    const float *res = m->x0;
    for (int l = 0; l < n_full; l++) {
        LayerActs *t = &m->la[l];
        block_qkv_forward(m, l, res);
        TIMED(m, 0, PART_ATTENTION, attention_forward(t->atty, t->att, t->qkv, m->off, m->B, m->spec.d_model,
                                                      m->spec.n_heads));
        block_rest_forward(m, l, res, m->N);
        res = t->res3;
    }
    return res;
}

/* Token rows -> final hidden states m->lnf (N,d). */
static void backbone_forward(Model *m) { final_layernorm(m, backbone_first_layers(m, m->spec.n_layers), m->N); }
/* The heads on the rows that have targets: loss sums per head; with dloss != 0 the heads'
 * parameter gradients and dlnf (N,d), the gradient at the final hidden states. */
static void heads_forward_backward(Model *m, double *sums) {
    const ModelSpec *s = &m->spec;
    int L = s->levels, d = s->d_model, N = m->N, nmax = 0, kmax = 1;
    for (int k = 0; k <= L; k++) nmax = m->n_tgt[k] > nmax ? m->n_tgt[k] : nmax;
    for (int k = 0; k < L; k++) kmax = s->codebook[k] > kmax ? s->codebook[k] : kmax;
    size_t need = (size_t)nmax * (2 * d + kmax + 2);
    xgrow(&m->head_work, &m->head_cap, need, sizeof(float));
    float *H = m->head_work, *dH = H + (size_t)nmax * d, *lg = dH + (size_t)nmax * d, *mx = lg + (size_t)nmax * kmax,
          *sum = mx + nmax;
    if (m->dloss != 0) memset(m->dlnf, 0, (size_t)N * d * sizeof(float));
    for (int k = 0; k <= L; k++) {
        int n = m->n_tgt[k];
        const int *rows = m->tgt_rows + (size_t)k * N;
        const int32_t *tgt = m->tgt + (size_t)k * N;
        sums[k] = 0;
        if (n == 0 && k < L) continue; /* the UID head is collective: every rank calls it */
        for (int i = 0; i < n; i++) memcpy(H + (size_t)i * d, m->lnf + (size_t)rows[i] * d, (size_t)d * sizeof(float));
        float w = s->mode == MODE_CAR && k < L ? s->alpha / (float)L : 1.0f;
        float ds = m->dloss * w;
        if (ds != 0) memset(dH, 0, (size_t)n * d * sizeof(float));
        if (k < L) {
            int K = s->codebook[k];
            const float *W = arena_param(&m->params, m->think_head[k]);
            double t0 = m->prof ? comm_wtime() : 0;
            matmul_forward(lg, H, W, NULL, n, d, K);
            sums[k] = crossentropy_forward_backward(lg, n, K, tgt, ds, mx, sum);
            if (ds != 0) matmul_backward(dH, arena_grad(&m->params, m->think_head[k]), NULL, lg, H, W, n, d, K, 1);
            if (m->prof) m->prof->seconds[0][PART_THINK] += comm_wtime() - t0;
        } else {
            float eps = m->training ? s->label_smoothing : 0.0f; /* evaluation reports the plain cross-entropy */
            TIMED(m, 0, PART_UID, sums[k] = uid_head_forward_backward(&m->uid, H, tgt, n, eps, ds, dH));
        }
        if (ds == 0) continue;
        for (int i = 0; i < n; i++) {
            float *dst = m->dlnf + (size_t)rows[i] * d;
            const float *src = dH + (size_t)i * d;
            for (int c = 0; c < d; c++) dst[c] += src[c];
        }
    }
}

static ModelLoss forward_targets(Model *m, const ModelBatch *b, int target_mode, int training, int64_t step,
                                 float dloss);

ModelLoss model_forward(Model *m, const ModelBatch *b, int training, int64_t step, float dloss) {
    return forward_targets(m, b, TARGETS_ALL, training, step, dloss);
}

ModelLoss model_forward_last(Model *m, const ModelBatch *b) { return forward_targets(m, b, TARGETS_LAST, 0, 0, 0.0f); }

static ModelLoss forward_targets(Model *m, const ModelBatch *b, int target_mode, int training, int64_t step,
                                 float dloss) {
    prepare(m, b, target_mode);
    m->training = training;
    m->step = step;
    m->dloss = dloss;
    backbone_forward(m);
    double sums[SID_MAX_LEVELS + 1];
    heads_forward_backward(m, sums);
    const ModelSpec *s = &m->spec;
    int L = s->levels;
    ModelLoss r = {0};
    double think = 0;
    for (int k = 0; k < L; k++) {
        think += sums[k];
        r.n_think += m->n_tgt[k];
    }
    r.act_sum = sums[L];
    r.n_act = m->n_tgt[L];
    if (s->mode == MODE_CAR) {
        r.think_sum = L ? think / L : 0;
        r.n_think = L ? r.n_act : 0;
        r.loss_sum = r.act_sum + s->alpha * r.think_sum;
        r.n_loss = r.n_act;
    } else {
        r.think_sum = think;
        r.loss_sum = r.act_sum + think;
        r.n_loss = r.n_act + r.n_think;
    }
    return r;
}

/* Only each sequence's last row leaves the encoder, so the last layer runs its attention, MLP and
 * the final LayerNorm on those R rows alone (its keys and values still on every row: a decoder's
 * cache reads them): a third less work at Beauty's sizes. m->lnf then holds R rows. */
void model_encode(Model *m, const ModelBatch *b, float *h_last) {
    prepare(m, b, 0);
    m->training = 0;
    m->dloss = 0;
    int d = m->spec.d_model, last = m->spec.n_layers - 1, R = 0;
    const float *res = backbone_first_layers(m, last);
    LayerActs *t = &m->la[last];
    block_qkv_forward(m, last, res);
    TIMED(m, 0, PART_ATTENTION, attention_forward_last(t->atty, t->att, t->qkv, m->off, m->B, d, m->spec.n_heads));
    for (int i = 0; i < b->B; i++) /* the last rows' inputs, gathered into fcproj (free until the MLP) */
        if (m->off[i + 1] > m->off[i])
            memcpy(t->fcproj + (size_t)R++ * d, res + (size_t)(m->off[i + 1] - 1) * d, (size_t)d * sizeof(float));
    block_rest_forward(m, last, t->fcproj, R);
    final_layernorm(m, t->res3, R);
    for (int i = 0, r = 0; i < b->B; i++) {
        float *h = h_last + (size_t)i * d;
        if (m->off[i + 1] > m->off[i])
            memcpy(h, m->lnf + (size_t)r++ * d, (size_t)d * sizeof(float));
        else
            memset(h, 0, (size_t)d * sizeof(float));
    }
}

void model_think_logits(const Model *m, const float *H, int N, int level, float *out) {
    matmul_forward(out, H, arena_param(&m->params, m->think_head[level]), NULL, N, m->spec.d_model,
                   m->spec.codebook[level]);
}

void model_score_items(const Model *m, const float *H, int N, float think_weight, int think_levels, float *scores) {
    const UidHead *u = &m->uid;
    int64_t nv = u->hi - u->lo;
    uid_head_scores(u, H, N, scores);
    if (think_weight <= 0 || think_levels <= 0 || N == 0) return;
    int L = think_levels < m->spec.levels ? think_levels : m->spec.levels;
    for (int l = 0; l < L; l++) {
        int K = m->spec.codebook[l];
        float *lp = xmalloc((size_t)N * K * sizeof(float)); /* log p_l (N,K) */
        model_think_logits(m, H, N, l, lp);
        for (int n = 0; n < N; n++) {
            float *row = lp + (size_t)n * K, mx = vmax(row, (size_t)K), sum = 0;
            for (int k = 0; k < K; k++) sum += expf(row[k] - mx);
            float lse = mx + logf(sum);
            for (int k = 0; k < K; k++) row[k] -= lse;
        }
        for (int n = 0; n < N; n++) {
            float *sc = scores + (size_t)n * nv;
            const float *row = lp + (size_t)n * K;
            for (int64_t i = 0; i < nv; i++) sc[i] += think_weight * row[m->codes[(u->lo + i) * m->spec.levels + l]];
        }
        free(lp);
    }
}

/* ---------------------------------------------------------------- backward */

/* the gradient of a residual branch's output: dres through the branch's dropout */
static float *branch_grad(Model *m, int site) {
    if (!dropout_on(m)) return m->dres;
    dropout_site(m, m->dbranch, m->dres, NULL, site);
    return m->dbranch;
}

static void grads_ready(Model *m, int first_tensor) {
    if (m->grads_ready) m->grads_ready(m->grads_ready_ctx, m->params.t[first_tensor].offset);
}

/* The embeddings' backward from dres (N,d): positions, levels, fusion, SID tables, UID rows. */
static void embed_backward(Model *m) {
    const ModelSpec *s = &m->spec;
    int N = m->N, d = s->d_model, L = s->levels;
    size_t Nd = (size_t)N * d;
    ParamArena *a = &m->params;
    float *dpos = arena_grad(a, m->pos_emb), *dlev = m->level_emb >= 0 ? arena_grad(a, m->level_emb) : NULL;
    for (int r = 0; r < N; r++) {
        const float *g = m->dres + (size_t)r * d;
        float *dp = dpos + (size_t)m->pos[r] * d;
        for (int c = 0; c < d; c++) dp[c] += g[c];
        if (dlev)
            for (int c = 0; c < d; c++) dlev[(size_t)m->level[r] * d + c] += g[c];
    }
    memset(m->demb, 0, Nd * sizeof(float));
    fusion_backward(m->demb, m->dres, m->level, N, d, s->fusion);
    for (int k = 0; k < L; k++)
        embedding_backward(arena_grad(a, m->sid_emb[k]), m->by_level + m->level_start[k],
                           m->by_level_tok + m->level_start[k], m->level_start[k + 1] - m->level_start[k], m->demb, d);
    int u0 = m->level_start[L], nu = m->level_start[L + 1] - u0;
    for (int i = 0; i < nu; i++) /* UID rows staged contiguously for uidhead */
        memcpy(m->dbranch + (size_t)i * d, m->demb + (size_t)m->by_level[u0 + i] * d, (size_t)d * sizeof(float));
    uid_embed_backward(&m->uid, m->by_level_tok + u0, nu, m->dbranch);
}

void model_backward(Model *m) {
    if (!wants_backward(m)) comm_fatal("model_backward: the last model_forward had no gradient (dloss 0)");
    const ModelSpec *s = &m->spec;
    int N = m->N, d = s->d_model;
    size_t Nd = (size_t)N * d;
    ParamArena *a = &m->params;
    layout_grad_acts(m);
    memset(m->dres, 0, Nd * sizeof(float));
    const float *res_last = s->n_layers ? m->la[s->n_layers - 1].res3 : m->x0;
    TIMED(m, 1, PART_LAYERNORM,
          layernorm_backward(m->dres, arena_grad(a, m->lnf_w), arena_grad(a, m->lnf_b), m->dlnf, res_last,
                             arena_param(a, m->lnf_w), m->lnf_mean, m->lnf_rstd, N, d));
    grads_ready(m, m->lnf_w); /* the final LayerNorm and the think heads (done in the forward) */
    for (int l = s->n_layers - 1; l >= 0; l--) {
        LayerTensors w = model_layer_tensors(m, l, 0), g = model_layer_tensors(m, l, 1);
        const LayerActs *t = &m->la[l];
        const float *res_in = l ? m->la[l - 1].res3 : m->x0;
        /* MLP branch: res3 = res2 + dropout(fcproj(gelu(fc(ln2(res2))))). The activation gradients
         * are written, not accumulated (accumulate 0): each buffer is fresh; dres accumulates. */
        const float *db;
        TIMED(m, 1, PART_DROPOUT, db = branch_grad(m, 2 + 2 * l));
        TIMED(m, 1, PART_MLP_MM,
              matmul_backward(m->dfch_gelu, g.fcproj_w, g.fcproj_b, db, t->fch_gelu, w.fcproj_w, N, 4 * d, d, 0));
        TIMED(m, 1, PART_GELU, gelu_backward_local(m->dfch, t->fch, m->dfch_gelu, 4 * Nd));
        TIMED(m, 1, PART_MLP_MM, matmul_backward(m->dln, g.fc_w, g.fc_b, m->dfch, t->ln2, w.fc_w, N, d, 4 * d, 0));
        TIMED(m, 1, PART_LAYERNORM,
              layernorm_backward(m->dres, g.ln2_w, g.ln2_b, m->dln, t->res2, w.ln2_w, t->ln2_mean, t->ln2_rstd, N, d));
        /* attention branch: res2 = res_in + dropout(proj(attention(qkv(ln1(res_in))))) */
        TIMED(m, 1, PART_DROPOUT, db = branch_grad(m, 1 + 2 * l));
        TIMED(m, 1, PART_ATTN_MM, matmul_backward(m->datty, g.proj_w, g.proj_b, db, t->atty, w.proj_w, N, d, d, 0));
        TIMED(m, 1, PART_ATTENTION,
              attention_backward(m->dqkv, m->datty, t->qkv, t->att, m->off, m->B, d, s->n_heads, m->att_scratch, 0));
        TIMED(m, 1, PART_ATTN_MM, matmul_backward(m->dln, g.qkv_w, g.qkv_b, m->dqkv, t->ln1, w.qkv_w, N, d, 3 * d, 0));
        TIMED(m, 1, PART_LAYERNORM,
              layernorm_backward(m->dres, g.ln1_w, g.ln1_b, m->dln, res_in, w.ln1_w, t->ln1_mean, t->ln1_rstd, N, d));
        grads_ready(m, m->layer[l].ln1_w); /* block l's tensors lie from its ln1_w on */
    }
    /* embeddings: x0 = dropout(fusion(emb) + pos + level) */
    if (dropout_on(m)) TIMED(m, 1, PART_DROPOUT, dropout_site(m, m->dres, m->dres, NULL, 0));
    TIMED(m, 1, PART_EMBED, embed_backward(m));
}

double model_optimizer_step(Model *m, const OptimConfig *c, int64_t step) {
    double sq = arena_grad_sqnorm(&m->params) + uid_grad_sqnorm(&m->uid); /* params: reduced already */
    float clip = optim_clip_scale(sq, c->grad_clip);
    float lr = (float)optim_lr(c, step);
    adamw_step(&m->params, 0, m->params.total, c, lr, clip, step + 1);
    adamw_step(&m->uid.arena, 0, m->uid.arena.total, c, lr, clip, step + 1);
    return sqrt(sq);
}

double model_train_flops(const Model *m) {
    const ModelSpec *s = &m->spec;
    double d = s->d_model, fwd = 0;
    fwd += 2.0 * m->N * 12 * d * d * s->n_layers; /* qkv 3d^2, proj d^2, fc and its projection 8d^2 */
    for (int b = 0; b < m->B; b++) {
        double T = m->off[b + 1] - m->off[b];
        fwd += 2.0 * 2 * T * T * d * s->n_layers; /* q k^T and P v, whole squares as sgemm does them */
    }
    for (int k = 0; k <= s->levels; k++) {
        double K = k < s->levels ? s->codebook[k] : (double)s->n_items;
        fwd += 2.0 * m->n_tgt[k] * K * d;
    }
    return 3 * fwd;
}
